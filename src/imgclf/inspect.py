"""`imgclf inspect`: what is in a data set before training on it.

Class counts per split and the imbalance ratio, image sizes and modes, the files that do not
decode, exact and near duplicate images (duplicates.csv: the groups, and which cross classes
or splits), and a PNG grid of sample images per class; with --augment, the same images again
after the config's training augmentation. Its files go into one folder, printed last.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from imgclf.config import Config, load_config
from imgclf.data import load_data
from imgclf.data.augment import MIXERS, augmentation_layers, split_steps
from imgclf.data.duplicates import NEAR_DISTANCE, bundle_hashes, crossing, duplicate_rows, grouped
from imgclf.data.scan import open_quietly, skipped_summary, visible_subdirs
from imgclf.data.tables import TABLES
from imgclf.errors import ConfigError, DataError
from imgclf.reports.images import _thumb
from imgclf.reports.plots import plot_image_grid
from imgclf.runs import ensure_writable, new_run_dir

SAMPLES_PER_CLASS = 6
MAX_CLASSES_SHOWN = 12
DISPLAY_SIZE = (128, 128)  # folders with no data.image_size: augment at this size
GROUPS_SHOWN = 10  # duplicate groups printed; duplicates.csv lists them all
DUPLICATE_COLUMNS = ["group", "kind", "scope", "split", "class", "file", "distance"]


def config_for(target: str | Path, overrides: list[str] | None = None) -> Config:
    """A config file as it is; a folder of class folders, an .npz file or a CSV of paths and
    labels (its default columns) with defaults; ``overrides`` (--set style) on top."""
    path = Path(target).expanduser()
    extra = list(overrides or [])
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_config(path, extra)
    if path.is_dir():
        return load_config(None, ["data.source=folder", f"data.path={path}", *extra])
    if path.suffix.lower() == ".npz":
        return load_config(None, ["data.source=npz", f"data.path={path}", *extra])
    if path.suffix.lower() in TABLES:
        return load_config(None, ["data.source=csv", f"data.path={path}", *extra])
    if not path.exists():
        raise DataError(f"not found: {path} (expected a data folder, an .npz or .csv file or a config .yaml)")
    raise ConfigError(f"expected a data folder, an .npz or .csv file or a config .yaml. Received: {path}")


def _image_stats(files: list[str]) -> tuple[Counter, Counter, np.ndarray]:
    """(modes, formats, sizes as (N, 2) width/height) from the files' headers (no decoding)."""
    modes, formats, sizes = Counter(), Counter(), []
    for f in files:
        try:
            with open_quietly(f) as im:
                modes[im.mode] += 1
                formats[im.format or "?"] += 1
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            modes["(PIL cannot open)"] += 1
    return modes, formats, np.array(sizes, dtype=np.int64).reshape(-1, 2)


def _samples(bundle, seed: int, per_class: int) -> tuple[list, list[str]]:
    """Up to ``per_class`` seeded picks of each class from the training split."""
    train = bundle.splits["train"]
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for c, name in enumerate(bundle.class_names[:MAX_CLASSES_SHOWN]):
        idx = np.flatnonzero(train.y == c)
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        for i in pick:
            images.append(train.x[i] if train.files is None else _thumb(Path(train.files[i])))
            titles.append(name)
    return images, titles


def _augmented(images: list[np.ndarray], cfg: Config, size) -> list[np.ndarray]:
    keras.utils.set_random_seed(cfg.seed)
    channels = images[0].shape[-1] if images[0].ndim == 3 else 1
    # the per-image steps, wherever they run; MixUp/CutMix mix pairs of images and are not shown
    per_image, _ = split_steps(cfg.augment, "model", (*size, channels))
    layers = augmentation_layers(per_image, seed=cfg.seed)
    batch = tf.stack([tf.image.resize(tf.cast(im, tf.float32), size, antialias=True) for im in images])
    for layer in layers:
        batch = layer(batch, training=True)
    return list(np.clip(np.rint(np.asarray(batch)), 0, 255).astype(np.uint8))


def _check_args(cfg: Config, augment: bool, grid: Path | None, per_class: int) -> None:
    if augment and not cfg.augment:
        raise ConfigError("--augment: the config has no augment steps (pass a config .yaml with an "
                          "`augment:` list)")
    if augment and all(s.name in MIXERS for s in cfg.augment):
        steps = ", ".join(s.name for s in cfg.augment)
        raise ConfigError(f"--augment: the config's augment steps ({steps}) mix pairs of images in a "
                          "batch and change no single image; there is nothing to draw")
    if grid is not None and grid.suffix.lower() != ".png":
        raise ConfigError(f"--grid must end in .png. Received: grid={grid}")
    if grid is not None and not grid.parent.is_dir():
        raise DataError(f"--grid: folder not found: {grid.parent}")
    if grid is not None:
        ensure_writable(grid.parent)
    if per_class < 1:
        raise ConfigError(f"--per-class must be at least 1. Received: per_class={per_class}")


def _classes_like_data_sets(cfg: Config, classes: list[str]) -> list[str]:
    """The class folders that hold train/, val/ or test/ folders of their own: most likely a
    parent of several data sets was given, each of them taken for a class."""
    if cfg.data.source != "folder" or not cfg.data.path:
        return []
    root = Path(cfg.data.path).expanduser()
    top = next((d for d in visible_subdirs(root) if d.name.lower() == "train"), root)
    return [c for c in classes if (top / c).is_dir()
            and any(d.name.lower() in ("train", "val", "test") for d in visible_subdirs(top / c))]


def _say_counts(bundle, echo) -> None:
    """Class counts per split, and the imbalance over all splits."""
    names = bundle.class_names
    counts = {s: np.bincount(part.y, minlength=len(names)) for s, part in bundle.splits.items()}
    total = sum(counts.values())
    width = max(len("class"), *(len(n) for n in names))
    echo(f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in counts) + f"  {'total':>6}")
    for i, n in enumerate(names):
        echo(f"{n:<{width}}  " + "  ".join(f"{counts[s][i]:>6}" for s in counts) + f"  {total[i]:>6}")
    ratio = total.max() / max(total.min(), 1)
    if total.max() == total.min():
        echo(f"imbalance: 1.00 (every class has {total.max()})")
    else:
        echo(f"imbalance: {ratio:.2f} (largest class {names[int(total.argmax())]} {total.max()}, "
             f"smallest {names[int(total.argmin())]} {total.min()})")


def _say_images(bundle, echo) -> None:
    """Modes, formats and sizes of the images, and what was skipped."""
    if bundle.kind == "files":
        files = [f for part in bundle.splits.values() for f in part.files]
        modes, formats, sizes = _image_stats(files)
        echo("modes: " + ", ".join(f"{m} {k}" for m, k in modes.most_common()))
        echo("formats: " + ", ".join(f"{m} {k}" for m, k in formats.most_common()))
        if len(sizes):
            w, h = sizes[:, 0], sizes[:, 1]
            common = Counter(map(tuple, sizes.tolist())).most_common(3)
            echo(f"width  min {w.min()}, median {int(np.median(w))}, max {w.max()}; "
                 f"height min {h.min()}, median {int(np.median(h))}, max {h.max()}")
            echo("most common sizes (WxH): " + ", ".join(f"{a}x{b} ({k})" for (a, b), k in common))
    else:
        mode = "L (grayscale)" if bundle.channels == 1 else "RGB"
        h, w = bundle.image_size
        echo(f"images: all {w}x{h} (WxH), mode {mode}, uint8")
    if bundle.bad_files:
        echo(f"skipped: {skipped_summary(bundle.bad_files)}:")
        for p, why in bundle.bad_files[:20]:
            echo(f"  {p}: {why}")
        if len(bundle.bad_files) > 20:
            echo(f"  ... and {len(bundle.bad_files) - 20} more")
    else:
        echo("unreadable: none")


def _say_duplicates(bundle, cfg: Config, out: Path, echo) -> list[dict]:
    """Exact and near duplicate groups, those crossing classes or splits, and duplicates.csv."""
    members, hashes = bundle_hashes(bundle)
    rows = duplicate_rows(members, hashes)
    path = out / "duplicates.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=DUPLICATE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    groups = grouped(rows)
    kinds = Counter(g[0]["kind"] for g in groups.values())
    cross_class, cross_split = crossing(groups, "cross-class"), crossing(groups, "cross-split")
    unhashed = sum(h is None for h in hashes)
    if not groups:
        echo(f"duplicates: none (no two images with the same pixels or within {NEAR_DISTANCE} phash bits)")
    else:
        echo(f"duplicates: {len(groups)} group(s) of {len(rows)} images: {kinds['exact']} exact (same "
             f"pixels), {kinds['near']} near (phash within {NEAR_DISTANCE} bits); {cross_class} cross-class "
             f"(conflicting labels), {cross_split} cross-split (leakage)")
    if unhashed:
        echo(f"  {unhashed} image(s) PIL cannot decode were not compared")
    for number, g in list(groups.items())[:GROUPS_SHOWN]:
        echo(f"  group {number} ({g[0]['kind']}, {g[0]['scope']}): "
             + ", ".join(f"{r['split']}:{r['file']}" for r in g[:6]) + (" ..." if len(g) > 6 else ""))
    if len(groups) > GROUPS_SHOWN:
        echo(f"  ... and {len(groups) - GROUPS_SHOWN} more groups")
    if cfg.data.dedupe_split:
        echo("data.dedupe_split: each group stays in one of the splits imgclf makes"
             + (f"; {cross_split} group(s) cross the data's own split folders or columns (move or delete "
                "those files)" if cross_split else ""))
    echo(f"duplicate list: {path}")
    return rows


def _out_folder(target, out) -> Path:
    if out is None:
        return new_run_dir("outputs", f"inspect-{Path(target).stem or 'data'}")
    out = ensure_writable(Path(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--out: cannot create {out}: {exc.strerror}") from None
    return out


def inspect(target: str | Path, *, augment: bool = False, grid: str | Path | None = None,
            out: str | Path | None = None, per_class: int = SAMPLES_PER_CLASS, fix_split: bool = False,
            echo=print) -> Path:
    """Print the summary; write the grid(s) and duplicates.csv into ``out`` (default: a new
    folder under outputs/; ``grid`` puts the sample grid elsewhere); return the folder.
    ``fix_split`` inspects the data as data.dedupe_split=true splits it."""
    cfg = config_for(target, ["data.dedupe_split=true"] if fix_split else None)
    grid = None if grid is None else Path(grid)
    _check_args(cfg, augment, grid, per_class)
    bundle = load_data(cfg.data, cfg.seed)
    d = cfg.data
    echo(f"data: {d.source}" + (f" {d.path}" if d.path else "") + f"; {bundle.summary()}")
    nested = _classes_like_data_sets(cfg, bundle.class_names)
    if nested:
        echo(f"warning: {len(nested)} class folder(s) hold train/, val/ or test/ folders of their own "
             f"({', '.join(nested)}): these look like data sets, not classes; point inspect at one of them")
    _say_counts(bundle, echo)
    _say_images(bundle, echo)
    out = _out_folder(target, out)
    _say_duplicates(bundle, cfg, out, echo)
    grid = grid or out / "samples.png"

    names = bundle.class_names
    images, titles = _samples(bundle, cfg.seed, per_class)
    shown = "" if len(names) <= MAX_CLASSES_SHOWN else f" (first {MAX_CLASSES_SHOWN} of {len(names)} classes)"
    cols = max(1, min(per_class, max(1, len(titles))))
    plot_image_grid(images, titles, grid, title=f"training samples per class{shown}", cols=cols)
    echo(f"samples: {grid}")
    if augment:
        size = tuple(d.image_size) if d.image_size else (bundle.image_size or DISPLAY_SIZE)
        aug = grid.with_name(f"{grid.stem}_augmented{grid.suffix}")
        steps = ", ".join(s.name for s in cfg.augment if s.name not in MIXERS)
        if any(s.name in MIXERS for s in cfg.augment):
            steps += "; mixup/cutmix not shown"
        plot_image_grid(_augmented(images, cfg, size), titles, aug,
                        title=f"the same images after augmentation ({steps})", cols=cols)
        echo(f"augmented: {aug}")
    return out
