"""Data sources: each returns a DataBundle of train / val / test splits with class names.

Array sources (digits, idx, npz) hold uint8 images in memory and never import TensorFlow;
the folder source holds file paths, checked once with TensorFlow's decoder (data/scan.py)
and decoded again by the tf.data pipeline.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from imgclf.config import DataConfig
from imgclf.data.bundle import DataBundle, Split
from imgclf.data.duplicates import groups_for
from imgclf.data.known import FASHION, cached, locate, read_arrays
from imgclf.data.scan import (
    find_images,
    loose_images,
    own_channels,
    printable,
    unreadable_images,
    visible_subdirs,
)
from imgclf.data.splits import fold_of, split_indices
from imgclf.data.tables import load_csv_source
from imgclf.errors import ConfigError, DataError

DEFAULT_IDX_PATH = "/usr/share/datasets/fashion-mnist"
SPLIT_NAMES = ("train", "val", "test")


# ------------------------------------------------------------------------ helpers
def _as_nhwc(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.size == 0:
        raise DataError(f"{what}: holds no images (shape {x.shape})")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{what}: expected images shaped (N, H, W) or (N, H, W, 1|3), got {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float64)
        if np.nanmax(x) <= 1.0:  # floats in [0, 1]
            x = x * 255.0
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    )
    if not whole or (y.size and y.min() < 0):
        raise DataError(f"{what}: labels must be non-negative whole numbers (dtype {y.dtype})")
    return y.astype(np.int64)


def _class_names(cfg: DataConfig, num: int, found: list[str] | None = None) -> list[str]:
    names = cfg.class_names or found or [str(i) for i in range(num)]
    if len(names) != num:
        raise ConfigError(f"data.class_names has {len(names)} names but the labels have {num} classes")
    return list(names)


def _array_bundle(cfg: DataConfig, seed: int, x, y, x_test=None, y_test=None, names=None, what=""):
    x, y = _as_nhwc(x, what), _labels(y, what)
    if len(x) != len(y):
        raise DataError(f"{what}: {len(x)} images but {len(y)} labels")
    has_test = x_test is not None
    if has_test:
        x_test, y_test = _as_nhwc(x_test, what), _labels(y_test, what)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{what}: test images are {x_test.shape[1:]}, train {x.shape[1:]}")
    num = int(max(y.max(), y_test.max() if has_test else 0)) + 1
    _need_two_classes(num, what)
    full = Split(y=y, ids=list(range(len(y))), x=x)
    splits = {
        k: full.take(v)
        for k, v in split_indices(
            y, val_split=cfg.val_split, test_split=cfg.test_split,
            holdout_last_n=cfg.holdout_last_n, seed=seed, has_val=False, has_test=has_test,
            groups=groups_for(full, cfg.dedupe_split),
        ).items()
    }
    if has_test:
        splits["test"] = Split(y=y_test, ids=list(range(len(y_test))), x=x_test)
    return DataBundle(
        class_names=_class_names(cfg, num, names),
        splits=_ordered(splits),
        channels=int(x.shape[-1]),
        image_size=(int(x.shape[1]), int(x.shape[2])),
        kind="arrays",
        id_column="index",
    )


def _ordered(splits: dict) -> dict:
    return {k: splits[k] for k in SPLIT_NAMES if k in splits}


def _need_two_classes(num: int, what: str) -> None:
    if num < 2:
        raise DataError(f"{what}: found {num} class{'es' if num != 1 else ''}; a classifier needs at least 2")


# ------------------------------------------------------------------------ sources
def load_digits_source(cfg: DataConfig, seed: int) -> DataBundle:
    digits = load_digits()
    x = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return _array_bundle(cfg, seed, x, digits.target, what="digits")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes of data")
    return data.reshape(dims)


def _idx_file(root: Path, prefix: str) -> Path:
    hits = sorted(p for p in root.iterdir() if p.is_file() and p.name.startswith(prefix))
    if not hits:
        raise DataError(f"no {prefix}* IDX file in {root}")
    return hits[0]


def load_idx_source(cfg: DataConfig, seed: int) -> DataBundle:
    root = Path(cfg.path or DEFAULT_IDX_PATH)
    if not root.is_dir():
        hint = " (apt-get install dataset-fashion-mnist puts it there)" if cfg.path is None else ""
        raise DataError(f"IDX folder not found: {root}{hint}")
    x = _read_idx(_idx_file(root, "train-images"))
    y = _read_idx(_idx_file(root, "train-labels"))
    xt = _read_idx(_idx_file(root, "t10k-images"))
    yt = _read_idx(_idx_file(root, "t10k-labels"))
    return _array_bundle(cfg, seed, x, y, xt, yt, what=str(root))


def load_npz_source(cfg: DataConfig, seed: int) -> DataBundle:
    if not cfg.path:
        raise ConfigError("data.source=npz needs data.path (a .npz file)")
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = dict(arrays)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    missing = {"x_train", "y_train"} - set(found)
    if missing:
        raise DataError(f"{path} lacks {', '.join(sorted(missing))} (has {', '.join(sorted(found))})")
    if ("x_test" in found) != ("y_test" in found):
        raise DataError(f"{path}: x_test and y_test come together")
    names = [str(n) for n in found["class_names"]] if "class_names" in found else None
    return _array_bundle(
        cfg, seed, found["x_train"], found["y_train"], found.get("x_test"), found.get("y_test"),
        names=names, what=str(path),
    )


def _class_files(root: Path, classes: list[str] | None = None) -> dict[str, list[Path]]:
    """{class name: sorted image files} for the class folders directly under ``root``."""
    dirs = visible_subdirs(root)
    found = {d.name: find_images(d) for d in dirs}
    if classes is not None:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(f"{root} has class folders not in train/: {', '.join(extra)}")
    return found


def _readable_classes(per_split: dict, classes: list[str], root: Path, train_top: Path):
    """Check every file once (data/scan.py caches the verdicts); the unreadable ones are skipped
    and listed, and a training class folder left with no usable image is left out, with the
    reason. Returns (classes kept, classes left out, unreadable files, the listing)."""
    everything = [p for files in per_split.values() for fl in files.values() for p in fl]
    bad = unreadable_images(everything)
    bad_set = {p for p, _ in bad}
    listed = [(printable(p.relative_to(root).as_posix()), r) for p, r in bad]
    empty = [c for c in classes if not any(p not in bad_set for p in per_split["train"][c])]
    for cname in empty:
        folder = (train_top / cname).relative_to(root).as_posix() + "/"
        had = len(per_split["train"][cname])
        listed.append((folder, f"class left out: its folder has no {'readable ' if had else ''}images"))
    classes = [c for c in classes if c not in empty]
    _need_two_classes(len(classes), f"{train_top} (after leaving out {len(empty)} empty class "
                      f"folder{'s' if len(empty) != 1 else ''})" if empty else str(train_top))
    return classes, empty, bad_set, listed


def _file_splits(per_split: dict, classes: list[str], empty: list[str], bad_set: set, root: Path,
                 tops: dict, listed: list) -> dict[str, Split]:
    """One Split per split folder of readable files, labelled by ``classes``; a val/test class
    folder whose class was left out is listed."""
    splits: dict[str, Split] = {}
    for name, by_class in per_split.items():
        files, labels = [], []
        for ci, cname in enumerate(classes):
            good = [p for p in by_class.get(cname, []) if p not in bad_set]
            files += good
            labels += [ci] * len(good)
        for cname in empty:
            if name != "train" and by_class.get(cname):
                folder = (tops[name] / cname).relative_to(root).as_posix() + "/"
                listed.append((folder, f"left out: class {cname} has no training images"))
        splits[name] = Split(
            y=np.array(labels, dtype=np.int64),
            ids=[p.relative_to(root).as_posix() for p in files],
            files=[str(p) for p in files],
        )
    return splits


def load_folder_source(cfg: DataConfig, seed: int) -> DataBundle:
    if not cfg.path:
        raise ConfigError("data.source=folder needs data.path (a folder of class folders)")
    if cfg.class_names:
        raise ConfigError("data.class_names is for array sources; folders are named by their sub-folders")
    root = Path(cfg.path).expanduser()
    if root.is_file():
        raise DataError(f"data.path {root} is a file; data.source=folder expects a folder of class "
                        f"folders (one per class, its images inside), or one with train/ val/ test/")
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    subdirs = {d.name.lower(): d for d in visible_subdirs(root)}
    layout_split = "train" in subdirs
    tops = {k: subdirs[k] for k in SPLIT_NAMES if k in subdirs} if layout_split else {"train": root}

    per_split = {"train": _class_files(tops["train"])}
    classes = sorted(per_split["train"])
    loose = len(loose_images(tops["train"]))
    if not classes and loose:
        raise DataError(f"{tops['train']}: this folder holds {loose} image{'s' if loose != 1 else ''} "
                        f"directly: point data.path at the folder of class folders (one folder per "
                        f"class, its images inside)")
    _need_two_classes(len(classes), str(tops["train"]))
    for name in ("val", "test"):
        if name in tops:
            found = _class_files(tops[name], classes)
            if any(found.values()):  # an empty val/ or test/ counts as absent
                per_split[name] = found

    classes, empty, bad_set, listed = _readable_classes(per_split, classes, root, tops["train"])
    splits = _file_splits(per_split, classes, empty, bad_set, root, tops, listed)

    pieces = split_indices(
        splits["train"].y, val_split=cfg.val_split, test_split=cfg.test_split,
        holdout_last_n=cfg.holdout_last_n, seed=seed,
        has_val="val" in splits, has_test="test" in splits,
        groups=groups_for(splits["train"], cfg.dedupe_split),
    )
    full = splits["train"]
    for name, idx in pieces.items():
        splits[name] = full.take(idx)
    return DataBundle(
        class_names=classes,
        splits=_ordered(splits),
        channels=own_channels(p for s in splits.values() for p in s.files),
        image_size=None,
        kind="files",
        id_column="file",
        bad_files=listed,
    )


def load_keras_source(cfg: DataConfig, seed: int) -> DataBundle:
    """A standard set by data.name, from Keras' cache (data/known.py); its own test split."""
    if cfg.name != "flowers" and (cfg.test_split or cfg.holdout_last_n):
        raise ConfigError(f"data.name={cfg.name} has its official test set: data.test_split and "
                          "data.holdout_last_n must be 0")
    if cfg.name == "flowers" and cfg.class_names:
        raise ConfigError("data.class_names is not for data.name=flowers: its classes are its folders' names")
    path = locate(cfg.name)
    if cfg.name == "flowers":
        return load_folder_source(cfg.model_copy(update={"path": str(path), "name": None}), seed)
    if cfg.name == "fashion_mnist":
        names = cfg.class_names or FASHION
        return load_idx_source(cfg.model_copy(update={"path": str(path), "class_names": names}), seed)
    x, y, x_test, y_test, names = read_arrays(cfg.name, path, fine=cfg.label_mode == "fine")
    return _array_bundle(cfg, seed, x, y, x_test, y_test, names=names, what=f"data.name={cfg.name}")


def files_root(cfg: DataConfig) -> Path | None:
    """The folder a files source's ids (predictions.csv's ``file``) are relative to: the folder,
    the CSV's folder, or flowers' folder in Keras' cache (None where there is none)."""
    if cfg.source == "keras":
        return cached(cfg.name) if cfg.name == "flowers" else None
    if not cfg.path:
        return None
    path = Path(cfg.path).expanduser()
    return path.parent if path.is_file() else path


SOURCES = {
    "digits": load_digits_source,
    "folder": load_folder_source,
    "idx": load_idx_source,
    "npz": load_npz_source,
    "csv": load_csv_source,
    "keras": load_keras_source,
}
# what each source's data.path holds: image files (rows name a file), arrays (rows name an
# index), or nothing (built in)
PATH_HOLDS = {"digits": None, "folder": "files", "idx": "arrays", "npz": "arrays", "csv": "files",
              "keras": None}


def load_data(cfg: DataConfig, seed: int) -> DataBundle:
    bundle = SOURCES[cfg.source](cfg, seed)
    if "val" not in bundle.splits or len(bundle.splits["val"]) == 0:
        raise ConfigError(
            "no validation data: set data.val_split > 0 (or give the folder a val/ sub-folder)"
        )
    if cfg.folds:  # k-fold cross-validation: one fold of train and val pooled is the validation split
        bundle = fold_of(bundle, cfg.folds, cfg.fold or 1, seed)
    return bundle
