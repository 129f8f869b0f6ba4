"""`imgclf evaluate`: recompute a run's numbers from its saved model, or an ensemble's.

One run writes into RUN_DIR/eval/<name>/ (name: the split, plus the data folder's name
with --data and "-tta-flip" with --tta flip): predictions.csv, a flat metrics.json and the
same plots and report.html as training. An ensemble (--ensemble) averages its members'
probabilities on the same items and is written as a run directory of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgclf.data import Split, load_data
from imgclf.data.pipeline import make_dataset
from imgclf.data.scan import find_images, printable, skipped_note, unreadable_images, visible_subdirs
from imgclf.data.sources import PATH_HOLDS
from imgclf.data.splits import older_split_note
from imgclf.data.tables import TABLES, read_table
from imgclf.errors import ConfigError, DataError
from imgclf.gradcam import case_maps
from imgclf.inference import check_tta, load_model, predict_probs, write_prediction_rows
from imgclf.reports.build import Context, build_reports, write_reports
from imgclf.reports.metrics import absent_note
from imgclf.runs import Manifest, ensure_writable, new_run_dir, write_bad_files, write_json
from imgclf.saved import SavedRun, open_run

# the keys that decide which items land in which split
SPLIT_KEYS = ("source", "path", "val_split", "test_split", "holdout_last_n")


def folder_split(root: Path, class_names: list[str]) -> tuple[Split, list[tuple[str, str]]]:
    """Every readable image under ``root``'s class folders, labelled by the run's classes."""
    dirs, empty = [], []
    for d in visible_subdirs(root):
        found = find_images(d)
        if found or d.name in class_names:
            dirs.append((d, found))
        else:
            empty.append((d.name + "/", "left out: an empty folder the model has no class for"))
    unknown = sorted(d.name for d, _ in dirs if d.name not in class_names)
    if unknown:
        raise DataError(f"--data {root}: class folders the model does not know: {', '.join(unknown)} "
                        f"(its classes: {', '.join(class_names)})")
    files, labels = [], []
    for d, found in dirs:
        files += found
        labels += [class_names.index(d.name)] * len(found)
    if not files:
        raise DataError(f"--data {root}: no images in class folders (expected {root}/<class>/...)")
    bad = unreadable_images(files)
    bad_set = {p for p, _ in bad}
    keep = [i for i, p in enumerate(files) if p not in bad_set]
    split = Split(
        y=np.array([labels[i] for i in keep], dtype=np.int64),
        ids=[files[i].relative_to(root).as_posix() for i in keep],
        files=[str(files[i]) for i in keep],
    )
    return split, [(printable(p.relative_to(root).as_posix()), r) for p, r in bad] + empty


def csv_split(path: Path, run: SavedRun, split: str | None) -> tuple[str, Split, list]:
    """(split name, its items, bad files) of a CSV of paths and labels (the csv source's layout,
    with the run's column names where it was a csv run): with a split column, ``split``'s rows
    (a file without the run's split column is all one split)."""
    d = run.cfg.data
    table = read_table(path, d.path_column, d.label_column, d.split_column, split_required=False)
    unknown = sorted(set(table.labels) - set(run.class_names))
    if unknown:
        raise DataError(f"--data {path}: labels the model does not know: {', '.join(unknown)} "
                        f"(its classes: {', '.join(run.class_names)})")
    named = set(table.splits) - {""}
    name = split or ("test" if "test" in named else "val" if "val" in named else "test")
    rows = [i for i, s in enumerate(table.splits) if not named or s == name]
    if not rows:
        raise DataError(f"--data {path}: no rows of the {name} split")
    bad_set = dict(unreadable_images([table.files[i] for i in rows]))
    keep = [i for i in rows if table.files[i] not in bad_set]
    items = Split(y=np.array([run.class_names.index(table.labels[i]) for i in keep], dtype=np.int64),
                  ids=[table.ids[i] for i in keep], files=[str(table.files[i]) for i in keep])
    bad = table.bad + [(table.ids[i], bad_set[table.files[i]]) for i in rows if table.files[i] in bad_set]
    return name, items, bad


class EvalData:
    """The items to evaluate: one split of the run's own data, or a --data folder."""

    def __init__(self, run: SavedRun, data: str | None, split: str | None):
        cfg = run.cfg.model_copy(deep=True)
        self.image_root: str | None = None
        self.bad_files: list = []
        holds = PATH_HOLDS[cfg.data.source]
        # a source of image files takes --data as a folder of class folders; so does one that
        # reads no path at all (digits)
        if data is not None and holds != "arrays" and Path(data).suffix.lower() in TABLES:
            self.split_name, self.split, self.bad_files = csv_split(Path(data).expanduser(), run, split)
            self.image_root = str(Path(data).expanduser().resolve().parent)
            self.id_column = "file"
        elif data is not None and holds != "arrays":
            root = Path(data).expanduser()
            if not root.is_dir():
                takes = f" (a {cfg.data.source} run takes a folder of class folders)"
                why = "" if holds == "files" else takes
                raise DataError(f"--data: folder not found: {root}{why}")
            lower = {d.name.lower(): d for d in visible_subdirs(root)}
            self.split_name = split or ("test" if "test" in lower else "val" if "val" in lower else "test")
            layout = sorted(n for n in lower if n in ("train", "val", "test") and n not in run.class_names)
            if self.split_name in layout:
                root = lower[self.split_name]  # a train/ val/ test/ layout: take the split's folder
            elif layout:
                has = ", ".join(f"{n}/" for n in layout)
                raise DataError(f"--data {root} has no {self.split_name}/ folder (it has {has})")
            self.split, self.bad_files = folder_split(root, run.class_names)
            self.image_root = str(root.resolve())
            self.id_column = "file"
        else:
            if data is not None:
                cfg.data.path = str(Path(data).expanduser())
            bundle = load_data(cfg.data, cfg.seed)
            if bundle.class_names != run.class_names:
                raise DataError(f"the data's classes ({', '.join(bundle.class_names)}) are not the "
                                f"model's ({', '.join(run.class_names)})")
            self.split_name = split or ("test" if "test" in bundle.splits else "val")
            if self.split_name not in bundle.splits:
                raise DataError(
                    f"the run's data has no {self.split_name} split (it has "
                    f"{', '.join(bundle.splits)}); use --split val or --data PATH"
                )
            self.split = bundle.splits[self.split_name]
            self.id_column = bundle.id_column
            self.bad_files = bundle.bad_files
        self.cfg = cfg  # the run's config, data.path pointing at what was evaluated

    def probs(self, run: SavedRun, model, tta: str | None) -> np.ndarray:
        d = run.cfg.data
        ds = make_dataset(
            self.split, image_size=tuple(d.image_size), channels=d.channels,
            num_classes=len(run.class_names), batch_size=d.batch_size, training=False,
            seed=run.cfg.seed, cache=False,
        )
        return predict_probs(model, ds, tta)


def _warn_absent(items: EvalData, data: str | None, class_names: list[str], echo) -> None:
    """One warning naming the model's classes the items hold none of (macro averages skip them)."""
    note = absent_note(items.split.y, class_names)
    if note:
        echo(f"warning: {f'--data {data}' if data else f'the {items.split_name} split'} holds {note}")


def check_split(split: str | None) -> None:
    if split is not None and split not in ("val", "test"):
        raise ConfigError(f"Unknown `--split`. Received: split={split} (known: val, test)")


def _summary(split: str, m: dict) -> str:
    auc = f"{m['roc_auc_ovr']:.4f}" if m.get("roc_auc_ovr") is not None else "n/a"
    return (f"{split}: accuracy {m['accuracy']:.4f}, macro F1 {m['f1_macro']:.4f}, "
            f"loss {m['loss']:.4f}, ROC AUC {auc} (n={m['n']})")


def evaluate_run(run_dir: str | Path, *, data: str | None = None, split: str | None = None,
                 tta: str | None = None, name: str | None = None, unsafe: bool = False,
                 echo=print) -> Path:
    check_split(split)
    check_tta(tta)
    if name and (name in (".", "..") or Path(name).name != name):
        raise ConfigError(f"--name must be one folder name under RUN_DIR/eval/. Received: name={name}")
    run = open_run(run_dir)
    ensure_writable(run.path / "eval")  # eval/NAME/ goes inside the run: a read-only run is one line
    model = load_model(run.path / "model.keras", unsafe=unsafe)  # a refused file stops us before the data
    note = run.unfinished_note()
    if note:
        echo(f"warning: {note}")
    items = EvalData(run, data, split)
    older = older_split_note(run.manifest.get("versions", {}).get("imgclf"), run.cfg.data)
    if older and not data and items.split_name == "val":
        echo(f"warning: {older}")
    for p, why in items.bad_files[:5]:
        echo(f"warning: skipped unreadable {p}: {why}")
    _warn_absent(items, data, run.class_names, echo)
    if not name:
        name = items.split_name + (f"-{Path(data).name}" if data else "") + (f"-tta-{tta}" if tta else "")
    out = run.path / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    write_bad_files(out, items.bad_files)
    probs = items.probs(run, model, tta)
    write_prediction_rows(out / "predictions.csv", run.class_names, items.id_column,
                          {items.split_name: (items.split.ids, items.split.y, probs)})
    write_json(out / "eval.json", {
        "run": run.name, "run_status": run.status, "split": items.split_name,
        "data": str(Path(data).expanduser().resolve()) if data else None, "tta": tta,
        "n": len(items.split), "skipped_unreadable": len(items.bad_files),
    })
    ctx = Context(
        class_names=run.class_names,
        title=f"{run.name}: {name}",
        subtitle=f"evaluate: {run.cfg.model.name} on the {items.split_name} split"
                 + (f" of {data}" if data else "") + (f", test-time augmentation {tta}" if tta else ""),
        config_text=(run.path / "config.yaml").read_text(encoding="utf-8"),
        cfg=items.cfg, image_root=items.image_root, curves_png=run.path / "curves.png",
        notes=[note] if note else [], explain=case_maps(model, items.cfg, items.image_root),
    )
    if items.bad_files:
        ctx.notes.append(skipped_note(items.bad_files))
    metrics = build_reports(out, ctx, flat=True)
    echo(_summary(items.split_name, metrics[items.split_name]))
    return out


def evaluate_ensemble(run_dirs: list, *, data: str | None = None, split: str | None = None,
                      tta: str | None = None, out: str | None = None, unsafe: bool = False,
                      echo=print) -> Path:
    """Average the members' probabilities on the first member's data (or --data); each member
    sees the items at its own input size and channels, with its own train.tta (or --tta). The
    ensemble's directory goes beside the first member (or under ``out``)."""
    check_split(split)
    check_tta(tta)
    if len(run_dirs) < 2:
        raise ConfigError(f"--ensemble needs at least two run directories. Received: {len(run_dirs)}")
    runs = [open_run(d) for d in run_dirs]
    first = runs[0]
    for run in runs[1:]:
        if run.class_names != first.class_names:
            raise DataError(f"ensemble members disagree on the classes: {first.name} has "
                            f"{first.class_names}, {run.name} has {run.class_names}")
        if data is None:  # the same split of the same data, or one member's test set is another's train
            for key in ("seed", *SPLIT_KEYS):
                a = first.cfg.seed if key == "seed" else getattr(first.cfg.data, key)
                b = run.cfg.seed if key == "seed" else getattr(run.cfg.data, key)
                if a != b:
                    raise DataError(
                        f"ensemble members split their data differently: {key} is {a!r} in "
                        f"{first.name} but {b!r} in {run.name}; pass --data to evaluate on one folder"
                    )
    # beside its members (the folder holding the first), where `imgclf compare` finds them all
    parent = out or first.path.resolve().parent
    ensure_writable(parent)  # before the work, not after it
    models = [load_model(run.path / "model.keras", unsafe=unsafe) for run in runs]
    for run in runs:
        note = run.unfinished_note()
        if note:
            echo(f"warning: {note}")
    items = EvalData(first, data, split)
    _warn_absent(items, data, first.class_names, echo)
    # each member as it predicts on its own (its config's train.tta) unless --tta says otherwise
    member_tta = [tta or run.cfg.train.tta for run in runs]
    probs = np.mean([items.probs(run, model, t) for run, model, t in zip(runs, models, member_tta)], axis=0)

    run_dir = new_run_dir(parent, "ensemble")
    with Manifest(run_dir, "evaluate --ensemble").closing() as manifest:
        manifest.update(
            model="ensemble(" + " + ".join(r.manifest.get("model") or r.cfg.model.name for r in runs) + ")",
            params=sum(int(r.manifest.get("params") or 0) for r in runs),
            members=[str(r.path.resolve()) for r in runs],
            member_status={r.name: r.status for r in runs},
            split=items.split_name, tta=tta, member_tta=member_tta,
            sizes={items.split_name: len(items.split)},
            data=items.image_root,
            data_path=str(Path(data).expanduser().resolve()) if data else None,
        )
        write_json(run_dir / "classes.json", first.class_names)
        write_bad_files(run_dir, items.bad_files)
        write_prediction_rows(run_dir / "predictions.csv", first.class_names, items.id_column,
                              {items.split_name: (items.split.ids, items.split.y, probs)})
        metrics = write_reports(run_dir)
        manifest.close("finished")
    echo(_summary(items.split_name, metrics[items.split_name]))
    return run_dir
