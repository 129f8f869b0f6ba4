"""The csv source: a CSV or TSV file of image paths and labels (the layout fastai and Ludwig
read), with an optional split column. Paths are relative to the file's folder, or absolute.
Files are checked with the same cached scan as folders: a missing or unreadable file is
skipped and listed in bad_files.txt; a row that cannot mean anything (an empty label, a
label that is a fraction, a missing path outside the file's folder) is one line naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf.config import DataConfig
from imgclf.data.bundle import DataBundle, Split
from imgclf.data.duplicates import groups_for
from imgclf.data.scan import own_channels, unreadable_images
from imgclf.data.splits import split_indices
from imgclf.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
TABLES = (".csv", ".tsv")  # what a file of image paths and labels ends in
FRACTION = re.compile(r"^[+-]?\d*\.\d+(e[+-]?\d+)?$", re.IGNORECASE)
WHOLE = re.compile(r"^[+-]?\d+$")


@dataclass
class Table:
    """The usable rows of a CSV: file, its id (the path as written), label and split ("" unset)."""

    files: list[Path]
    ids: list[str]
    labels: list[str]
    splits: list[str]
    bad: list[tuple[str, str]]  # (path as written, why it was left out)


def _column(frame: pd.DataFrame, asked: str | None, default: str, position: int, key: str, path) -> str:
    if asked is not None:
        if asked not in frame.columns:
            columns = ", ".join(frame.columns)
            raise DataError(f"{key}: {path} has no column {asked!r} (its columns: {columns})")
        return asked
    if default in frame.columns:
        return default
    if len(frame.columns) <= position:
        raise DataError(f"{path}: expected a path and a label column, found {len(frame.columns)} column(s)")
    return frame.columns[position]


def read_table(path: str | Path, path_column: str | None = None, label_column: str | None = None,
               split_column: str | None = None, labelled: bool = True, split_required: bool = True) -> Table:
    """The rows of a CSV (a .tsv is tab-separated), checked. ``labelled=False`` reads the paths
    alone and keeps missing files among them (a prediction row says each one's error);
    ``split_required=False`` reads a file without ``split_column`` as having no split column."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a CSV or TSV file of paths and labels "
                        "(data.source: folder reads a folder of class folders)")
    if not path.is_file():
        raise DataError(f"data.path: CSV file not found: {path}")
    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                            keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV: {' '.join(str(exc).split())[:200]}") from None
    pcol = _column(frame, path_column, "path", 0, "data.path_column", path)
    lcol = _column(frame, label_column, "label", 1, "data.label_column", path) if labelled else None
    if split_column is not None and split_column not in frame.columns and not split_required:
        split_column = None
    if split_column is not None and split_column not in frame.columns:
        raise DataError(f"data.split_column: {path} has no column {split_column!r} "
                        f"(its columns: {', '.join(frame.columns)})")
    root = path.parent
    table = Table([], [], [], [], [])
    for i, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip(frame.columns, row))
        line = f"{path.name} line {i + 2}"  # the header is line 1
        written = values[pcol].strip()
        if not written:
            raise DataError(f"{line}: empty path")
        label = values[lcol].strip() if lcol else ""
        if lcol and not label:
            raise DataError(f"{line}: empty label (column {lcol})")
        if lcol and FRACTION.match(label):
            raise DataError(f"{line}: label {label} is a fraction: is {lcol} a column of numbers, "
                            "not of class labels? (data.label_column)")
        split = values[split_column].strip().lower() if split_column else ""
        if split and split not in SPLITS:
            raise DataError(f"{line}: split {split!r} is not train, val or test (column {split_column})")
        file = (root / written).resolve()
        if not file.exists() and labelled:
            if not file.is_relative_to(root.resolve()):
                raise DataError(f"{line}: {written} does not exist (outside the CSV's folder {root})")
            table.bad.append((written, "file not found"))
            continue
        table.files.append(file)
        table.ids.append(written)
        table.labels.append(label)
        table.splits.append(split)
    if not table.files and not table.bad:
        raise DataError(f"{path}: no rows")
    return table


def class_order(labels) -> list[str]:
    """The classes of ``labels``, sorted: as numbers when every label is a whole number (so
    label 10 comes after 9), else as text."""
    found = set(labels)
    if all(WHOLE.match(lab) for lab in found):
        return sorted(found, key=int)
    return sorted(found)


def load_csv_source(cfg: DataConfig, seed: int) -> DataBundle:
    if not cfg.path:
        raise ConfigError("data.source=csv needs data.path (a CSV or TSV file of paths and labels)")
    table = read_table(cfg.path, cfg.path_column, cfg.label_column, cfg.split_column)
    unreadable = dict(unreadable_images(table.files))
    keep = [i for i, f in enumerate(table.files) if f not in unreadable]
    bad = table.bad + [(table.ids[i], unreadable[f]) for i, f in enumerate(table.files) if f in unreadable]
    classes = list(cfg.class_names) if cfg.class_names else class_order(table.labels[i] for i in keep)
    unknown = sorted({table.labels[i] for i in keep} - set(classes))
    if unknown:
        raise DataError(f"data.path: labels {', '.join(unknown)} are not among data.class_names")
    if len(classes) < 2:
        raise DataError(f"data.path {cfg.path}: found {len(classes)} class(es); need at least 2")
    every = Split(y=np.array([classes.index(table.labels[i]) for i in keep], dtype=np.int64),
                  ids=[table.ids[i] for i in keep], files=[str(table.files[i]) for i in keep])
    return DataBundle(class_names=classes, splits=_splits(cfg, seed, every, [table.splits[i] for i in keep]),
                      channels=own_channels(every.files), image_size=None, kind="files", id_column="file",
                      bad_files=bad)


def _splits(cfg: DataConfig, seed: int, every: Split, named: list[str]) -> dict[str, Split]:
    """The split column's val and test rows where it has them; the other rows (train, or no
    value) are split by val_split / test_split as a folder's train/ is, for what it lacks."""
    named = np.array(named)
    fixed = {s: np.flatnonzero(named == s) for s in ("val", "test") if (named == s).any()}
    pool = np.flatnonzero((named != "val") & (named != "test"))
    if not len(pool):
        raise DataError(f"data.path {cfg.path}: no rows left to train on (every row is val or test)")
    pieces = split_indices(every.y[pool], val_split=cfg.val_split, test_split=cfg.test_split,
                           holdout_last_n=cfg.holdout_last_n, seed=seed,
                           has_val="val" in fixed, has_test="test" in fixed,
                           groups=groups_for(every.take(pool), cfg.dedupe_split))
    splits = {**{s: every.take(idx) for s, idx in fixed.items()},
              **{s: every.take(pool[idx]) for s, idx in pieces.items()}}
    return {s: splits[s] for s in SPLITS if s in splits}
