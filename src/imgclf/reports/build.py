"""Everything a run directory's reports are made of, computed from its saved files:
classes.json, predictions.csv, history.csv, config.yaml and run.json in; metrics.json,
per_class.csv, confusion_matrix.csv/.png, roc.png, misclassified.png, curves.png and
report.html out. `imgclf train`, `imgclf evaluate` and ensembles all come through here.
Given a model (``Context.explain``), gradcam.png too: where it looked in chosen images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf.config import load_config
from imgclf.data.scan import skipped_note
from imgclf.data.sources import PATH_HOLDS
from imgclf.errors import ImgclfError
from imgclf.reports.cams import SHOWN, overlay, plot_cases, select_cases
from imgclf.reports.diagnose import Finding, diagnose
from imgclf.reports.html import render
from imgclf.reports.images import load_images
from imgclf.reports.metrics import (
    absent_note,
    confusion,
    label_indices,
    per_class_table,
    reliability,
    roc_points,
    split_metrics,
)
from imgclf.reports.plots import plot_confusion, plot_curves, plot_image_grid, plot_reliability, plot_roc
from imgclf.runs import MANIFEST, atomic_path, prob_columns, read_bad_files, read_json, write_json, write_text

MISCLASSIFIED_SHOWN = 18


@dataclass
class Context:
    """What a report says about where its predictions came from."""

    class_names: list[str]
    title: str
    subtitle: str = ""
    config_text: str | None = None
    cfg: object | None = None  # the Config whose data the predictions are on (for images)
    image_root: str | None = None  # folder the `file` column is relative to (None: the config's)
    curves_png: Path | None = None
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    # heat maps of chosen rows from the model (imgclf.gradcam.CaseMaps); None: none drawn
    explain: object | None = None


def read_predictions(folder: Path) -> pd.DataFrame:
    # labels are class names: keep them strings even when they look like numbers
    return pd.read_csv(
        Path(folder) / "predictions.csv", dtype={"true_label": str, "pred_label": str, "file": str},
        keep_default_na=False,
    )


def _write_csv(df: pd.DataFrame, path: Path, **kw) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kw)


def read_config(path: Path):
    """(text, Config or None) of a saved config.yaml; (None, None) when there is none."""
    if not path.is_file():
        return None, None
    text = path.read_text(encoding="utf-8")
    try:
        return text, load_config(path)
    except ImgclfError:  # an older or hand-edited config: show it, skip what needs it
        return text, None


def _cv_note(cv: dict) -> str:
    std = cv["std"]
    spread = "; ".join(f"{split} accuracy {m['accuracy']:.4f} +- {std[split]['accuracy']:.4f}, macro F1 "
                       f"{m['f1_macro']:.4f} +- {std[split]['f1_macro']:.4f}"
                       for split, m in cv["mean"].items() if split in ("val", "test"))
    return (f"k-fold cross-validation over {cv['folds']} folds: the val numbers here are the out-of-fold "
            "predictions (each image predicted by the fold model that did not train on it), the test "
            f"numbers the mean of the fold models' probabilities. Over the folds (mean +- std): {spread}; "
            "each fold's run and numbers are in folds.csv.")


def run_context(run_dir: Path) -> Context:
    """A training run's (or an ensemble's) directory describes itself."""
    manifest = read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).exists() else {}
    config_text, cfg = read_config(run_dir / "config.yaml")
    members = manifest.get("members") or []
    if cfg is None and members:  # an ensemble: the data is its first member's
        _, cfg = read_config(Path(members[0]) / "config.yaml")
        if cfg is not None and manifest.get("data_path") and PATH_HOLDS[cfg.data.source] != "files":
            # evaluated on other data (--data): files are found under the image root, arrays here
            cfg.data.path = manifest["data_path"]
    ctx = Context(class_names=read_json(run_dir / "classes.json"), title=run_dir.name,
                  config_text=config_text, cfg=cfg, image_root=manifest.get("data"))
    ctx.curves_png = run_dir / "curves.png"
    bad = read_bad_files(run_dir)
    if bad:
        ctx.notes.append(skipped_note(bad))
    status = manifest.get("status")
    if status in ("failed", "interrupted"):
        ctx.notes.append(f"This run is {status}: the numbers are those of the model it saved last "
                         f"(epoch {manifest.get('best_epoch') or '?'}).")
    ctx.subtitle = run_subtitle(manifest, cfg)
    ctx.notes += [f"Diagnosis: {f.line()}." for f in diagnose_run(run_dir, manifest)]
    if (run_dir / "cv.json").exists():  # a k-fold run's summary (training/folds.py)
        ctx.notes.append(_cv_note(read_json(run_dir / "cv.json")))
    if cfg is not None:
        d = cfg.data
        ctx.facts["data"] = f"{d.source}" + (f" {d.path}" if d.path else "")
        if d.image_size:
            ctx.facts["input"] = f"{d.image_size[0]}x{d.image_size[1]}x{d.channels}"
    if members:
        ctx.facts["members"] = ", ".join(Path(m).name for m in members)
    if manifest.get("sizes"):
        ctx.facts["split sizes"] = ", ".join(f"{k} {v}" for k, v in manifest["sizes"].items())
    if manifest.get("versions"):
        ctx.facts["versions"] = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())
    return ctx


def diagnose_run(run_dir: Path, manifest: dict | None = None) -> list[Finding]:
    """The diagnosis (diagnose.py) of a training run from history.csv and the val rows of
    predictions.csv; none for a directory without them (a k-fold parent, an ensemble)."""
    run_dir = Path(run_dir)
    if manifest is None:
        manifest = read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).exists() else {}
    if not (run_dir / "history.csv").exists() or not (run_dir / "predictions.csv").exists():
        return []
    history = pd.read_csv(run_dir / "history.csv")
    class_names = read_json(run_dir / "classes.json")
    val = read_predictions(run_dir)
    val = val[val["split"] == "val"]
    return diagnose(history, label_indices(val["true_label"], class_names),
                    label_indices(val["pred_label"], class_names), class_names, manifest.get("best_epoch"))


def run_subtitle(manifest: dict, cfg, *first) -> str:
    """``first`` (e.g. the status), the model, its parameters, epochs and training time, as
    one line: a report's subtitle and a notebook's summary."""
    bits = [*first, manifest.get("model") or (cfg.model.name if cfg else None)]
    if manifest.get("params"):
        bits.append(f"{manifest['params']:,} parameters")
    if manifest.get("epochs"):
        bits.append(f"{manifest['epochs']} epochs (best {manifest.get('best_epoch')})")
    if manifest.get("train_time_s") is not None:
        bits.append(f"trained in {manifest['train_time_s']:.1f} s")
    return " · ".join(str(b) for b in bits if b)


def write_reports(run_dir: str | Path, explain=None) -> dict:
    """Reports of a training run (or an ensemble) from its directory, with heat maps where
    ``explain`` (Context.explain) is given; returns metrics.json."""
    run_dir = Path(run_dir)
    history_path = run_dir / "history.csv"
    if history_path.exists():
        history = pd.read_csv(history_path)
        manifest = run_dir / MANIFEST
        best = read_json(manifest).get("best_epoch") if manifest.exists() else None
        if len(history):
            plot_curves(history, run_dir / "curves.png", title=run_dir.name, best_epoch=best)
    ctx = run_context(run_dir)
    ctx.explain = explain
    return build_reports(run_dir, ctx)


def build_reports(out_dir: Path, ctx: Context, flat: bool = False) -> dict:
    """Everything from ``out_dir/predictions.csv``; ``flat`` writes one split's metrics at the
    top of metrics.json (evaluate's folders) instead of one object per split."""
    class_names = ctx.class_names
    preds = read_predictions(out_dir)
    cols = prob_columns(class_names)

    metrics: dict = {}
    tables = []
    by_split = {}
    for split, rows in preds.groupby("split", sort=False):
        y_true = label_indices(rows["true_label"], class_names)
        probs = rows[cols].to_numpy(dtype="float64")
        metrics[split] = split_metrics(y_true, probs)
        tables.append(per_class_table(y_true, probs.argmax(axis=1), class_names).assign(split=split))
        by_split[split] = (y_true, probs, rows)
    primary = "test" if "test" in by_split else next(iter(by_split))
    write_json(out_dir / "metrics.json", metrics[primary] if flat else metrics)
    for split, (y_split, _, _) in by_split.items():
        absent = absent_note(y_split, class_names)
        if absent:
            ctx.notes.append(f"The {split} split holds {absent}.")

    per_class = pd.concat(tables, ignore_index=True)
    per_class = per_class[["split", "class", "precision", "recall", "f1", "support", "accuracy"]]
    _write_csv(per_class, out_dir / "per_class.csv", index=False, float_format="%.6f")

    y_true, probs, rows = by_split[primary]
    y_pred = probs.argmax(axis=1)
    cm = confusion(y_true, y_pred, len(class_names))
    cm_df = pd.DataFrame(cm, index=class_names, columns=class_names)
    cm_df.index.name = "true\\pred"
    _write_csv(cm_df, out_dir / "confusion_matrix.csv")
    norm = cm_df.div(cm_df.sum(axis=1).replace(0, 1), axis=0)
    _write_csv(norm, out_dir / "confusion_matrix_normalized.csv", float_format="%.6f")
    m = metrics[primary]
    plot_confusion(cm, class_names, out_dir / "confusion_matrix.png",
                   f"{primary} split: accuracy {m['accuracy']:.4f} (n={len(y_true)})")
    auc = m["roc_auc_ovr"]
    plot_roc(roc_points(y_true, probs), class_names, out_dir / "roc.png",
             f"{primary} split: one-vs-rest ROC, macro AUC " + (f"{auc:.4f}" if auc is not None else "n/a"))
    _misclassified(out_dir, ctx, primary, rows, y_true, probs)
    _where_looked(out_dir, ctx, primary, rows, y_true, probs)
    calibration = {split: (reliability(yt, p), metrics[split]["ece"])
                   for split, (yt, p, _) in by_split.items()}
    plot_reliability(calibration, out_dir / "reliability.png")

    figures = _figures(out_dir, ctx)
    page = render(
        title=ctx.title, subtitle=ctx.subtitle, metrics=metrics, primary=primary,
        per_class=per_class[per_class["split"] == primary].drop(columns="split"),
        figures=figures, config_text=ctx.config_text, notes=ctx.notes, facts=ctx.facts,
    )
    write_text(out_dir / "report.html", page)
    return metrics


def _figures(out_dir: Path, ctx: Context) -> dict[str, list[tuple[Path, str]]]:
    """report.html's figures by section (those whose file is missing are left out)."""
    return {
        "Learning curves": [(ctx.curves_png, "loss and accuracy per epoch")] if ctx.curves_png else [],
        "Confusion matrix and ROC": [
            (out_dir / "confusion_matrix.png", "counts; shading is the share of each true class"),
            (out_dir / "roc.png", "one-vs-rest ROC per class"),
        ],
        "Calibration": [
            (out_dir / "reliability.png",
             "accuracy per bin of top-1 confidence; ECE: its gap to the confidence, weighted by items"),
        ],
        "Most confidently wrong": [
            (out_dir / "misclassified.png", "true class, predicted class and its probability"),
        ],
        "Where the model looked (Grad-CAM)": [
            (out_dir / "gradcam.png", "each row one true class: its most confident right predictions "
             "(green), then its most confidently wrong ones (red), the heat map of the predicted class "
             "over each; red and yellow: the regions that raised that class's score most"),
        ],
    }


def _misclassified(out_dir: Path, ctx: Context, split: str, rows: pd.DataFrame,
                   y_true: np.ndarray, probs: np.ndarray) -> None:
    """misclassified.png: the wrong predictions with the highest predicted probability."""
    y_pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:MISCLASSIFIED_SHOWN]
    id_col = "file" if "file" in rows else "index"
    if ctx.cfg is None or id_col not in rows:
        ctx.notes.append("misclassified.png is not drawn: the run's config.yaml is missing or unreadable")
        return
    try:
        ids = rows[id_col].to_numpy()[wrong].tolist()
        images = load_images(ctx.cfg, split, id_col, ids, ctx.image_root) if len(wrong) else []
    except (ImgclfError, OSError, KeyError) as exc:
        ctx.notes.append(f"misclassified.png is not drawn: cannot load the images ({exc})")
        return
    names = ctx.class_names
    label = (lambda v: f"#{v}") if id_col == "index" else (lambda v: Path(str(v)).name)
    titles = [f"{label(rows[id_col].iloc[i])}\ntrue {names[y_true[i]]}\n"
              f"pred {names[y_pred[i]]} ({conf[i]:.2f})" for i in wrong]
    total = int(np.sum(y_pred != y_true))
    head = (f"{split} split: the {len(wrong)} most confidently wrong of {total} misclassified"
            if total else f"{split} split: no misclassified images")
    plot_image_grid(images, titles, out_dir / "misclassified.png", title=head)


def _where_looked(out_dir: Path, ctx: Context, split: str, rows: pd.DataFrame,
                  y_true: np.ndarray, probs: np.ndarray) -> None:
    """gradcam.png: for each class, the Grad-CAM overlays of its most confident right and wrong
    predictions. Without an explainer (a report rebuilt from files alone) a gradcam.png already
    there is kept: it was drawn from the same predictions."""
    if ctx.explain is None:
        return
    per_class = ctx.explain.per_class
    id_col = "file" if "file" in rows else "index"
    shown, cases = select_cases(y_true, probs, per_class)
    flat = [case for group in cases for case in group]
    (out_dir / "gradcam.png").unlink(missing_ok=True)
    if not flat or id_col not in rows or ctx.cfg is None:
        return
    ids = rows[id_col].to_numpy()[[case.row for case in flat]].tolist()
    try:
        maps = iter(ctx.explain(split, id_col, ids, [case.pred for case in flat], SHOWN))
    except (ImgclfError, OSError, KeyError) as exc:
        ctx.notes.append(f"gradcam.png is not drawn: {exc}")
        return
    names = ctx.class_names
    label = (lambda v: f"#{v}") if id_col == "index" else (lambda v: Path(str(v)).name)
    images, titles, right = [], [], []
    for group, ident in zip(cases, _chunks(ids, [len(g) for g in cases])):
        for kind in (True, False):
            picked = [(case, i) for case, i in zip(group, ident) if case.right == kind]
            for case, i in picked:
                images.append(overlay(*next(maps)))
                titles.append(f"{label(i)}\ntrue {names[case.true]}\n"
                              f"pred {names[case.pred]} ({case.prob:.2f})")
                right.append(kind)
            images += [None] * (per_class - len(picked))
            titles += [""] * (per_class - len(picked))
            right += [kind] * (per_class - len(picked))
    more = f" (the {len(shown)} classes of lowest recall)" if len(shown) < len(names) else ""
    plot_cases(images, titles, right, 2 * per_class, out_dir / "gradcam.png",
               f"{split} split{more}: Grad-CAM of the predicted class; per class the most confident "
               "right | wrong")


def _chunks(items: list, sizes: list[int]) -> list[list]:
    out, start = [], 0
    for n in sizes:
        out.append(items[start:start + n])
        start += n
    return out
