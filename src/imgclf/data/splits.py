"""Deterministic, stratified, leak-free splits of a labelled set."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from imgclf.data.bundle import DataBundle, Split
from imgclf.errors import ConfigError, DataError


def _stratified(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str,
                of: int | None = None):
    """Hold out ``fraction`` of ``of`` items (default: of ``idx``), stratified, from ``idx``."""
    size = fraction if of is None else math.ceil(fraction * of)  # rounded up, as scikit-learn does
    try:
        keep, held = train_test_split(
            idx, test_size=size, random_state=seed, stratify=y[idx], shuffle=True
        )
    except ValueError as exc:
        counts = np.bincount(y[idx])
        raise DataError(
            f"cannot hold out {fraction:g} of {of or len(idx)} items ({len(idx)} left) per class as {what} "
            f"(smallest class has {counts[counts > 0].min()}): {exc}"
        ) from None
    return np.sort(keep), np.sort(held)


def split_indices(
    y: np.ndarray,
    *,
    val_split: float,
    test_split: float,
    holdout_last_n: int,
    seed: int,
    has_val: bool,
    has_test: bool,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Indices into ``y`` for train and, where asked, val and test.

    ``val_split`` and ``test_split`` are both fractions of the whole ``y`` (0.15 and 0.15 give
    70/15/15), and so is ``val_split`` after a ``holdout_last_n`` test set. ``y`` must be in the
    source's sorted order (sorted file paths, array order): the holdout takes the last
    ``holdout_last_n`` items of each class in that order. ``groups`` (a label per item,
    data.dedupe_split) keeps the items sharing a label in one split.
    """
    y = np.asarray(y)
    if holdout_last_n and test_split:
        raise ConfigError("data.holdout_last_n and data.test_split both ask for a test set: set one")
    if has_test and (holdout_last_n or test_split):
        raise ConfigError(
            "the data has its own test set: data.holdout_last_n and data.test_split must be 0"
        )
    if not has_val and not has_test and val_split + test_split >= 1:
        raise ConfigError(f"data.val_split + data.test_split must be below 1 (both are fractions of the "
                          f"whole data set), got {val_split:g} + {test_split:g}")
    idx = np.arange(len(y))
    out: dict[str, np.ndarray] = {}
    if holdout_last_n:
        test = []
        for c in np.unique(y):
            members = idx[y == c]
            if len(members) <= holdout_last_n:
                raise DataError(
                    f"data.holdout_last_n={holdout_last_n} would leave class #{c} "
                    f"({len(members)} items) nothing to train on"
                )
            test.extend(members[-holdout_last_n:])
        test = np.sort(np.array(test))
        out["test"] = test
        idx = np.setdiff1d(idx, test)
    elif test_split:
        idx, out["test"] = _stratified(idx, y, test_split, seed, "test")
    if not has_val and val_split:
        idx, out["val"] = _stratified(idx, y, val_split, seed, "validation", of=len(y))
    out["train"] = idx
    return out if groups is None else keep_together(out, np.asarray(groups))


def keep_together(splits: dict[str, np.ndarray], groups: np.ndarray) -> dict[str, np.ndarray]:
    """``splits`` with every group (items sharing a label of ``groups``) moved whole into the
    split of its first member (lowest index): seeded as the split itself, no group crosses."""
    names = list(splits)
    where = np.empty(len(groups), np.int64)
    for k, name in enumerate(names):
        where[splits[name]] = k
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    where = where[first][inverse]
    return {name: np.flatnonzero(where == k) for k, name in enumerate(names)}


def fold_of(bundle: DataBundle, folds: int, fold: int, seed: int) -> DataBundle:
    """Fold ``fold`` (1..``folds``) of a stratified k-fold over the training data (train and
    val pooled): that fold is the validation split, the other folds the training split, and
    a test split stays as it was. The same ``seed`` gives the same folds for every fold."""
    pool = Split.concat([bundle.splits["train"], bundle.splits["val"]])
    counts = np.bincount(pool.y, minlength=bundle.num_classes)
    if counts.min() < folds:
        smallest = bundle.class_names[int(counts.argmin())]
        raise DataError(f"data.folds={folds}: class {smallest} has only {counts.min()} training items; "
                        "every class needs at least one per fold")
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    parts = kfold.split(np.zeros(len(pool)), pool.y)
    train, val = list(parts)[fold - 1]
    splits = {"train": pool.take(np.sort(train)), "val": pool.take(np.sort(val))}
    if "test" in bundle.splits:
        splits["test"] = bundle.splits["test"]
    return dataclasses.replace(bundle, splits=splits)


SPLIT_RULE_SINCE = (0, 2)  # from imgclf 0.2.0, val_split is a fraction of the whole, not of what test left


def older_split_note(made_by: str | None, cfg) -> str | None:
    """One line where a run made by an imgclf before 0.2.0 had imgclf carve both a test and a
    val split (``cfg`` its data config): its val split is rebuilt differently now."""
    try:
        version = tuple(int(v) for v in str(made_by).split(".")[:2])
    except ValueError:
        return None
    if version >= SPLIT_RULE_SINCE or not (cfg.val_split and cfg.test_split):
        return None
    return (f"this run was made by imgclf {made_by}, which took data.val_split from what data.test_split "
            "left; it is now a fraction of the whole, so where imgclf made both splits the val split "
            "rebuilt here is not the run's own (its test split is): rely on --split test")
