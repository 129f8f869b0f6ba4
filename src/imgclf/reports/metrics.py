"""The numbers: per-split metrics and per-class tables from true labels and probabilities."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn import metrics as skm

METRIC_KEYS = (
    "accuracy", "loss", "top_k_accuracy", "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted", "roc_auc_ovr", "cohen_kappa",
)


ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width bin of top-1 confidence ((lo, hi], the first from 0): its item count,
    mean confidence and accuracy (NaN where empty): the reliability diagram's numbers."""
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"lo": edges[b], "hi": edges[b + 1], "n": n,
                     "confidence": float(conf[inside].mean()) if n else math.nan,
                     "accuracy": float(right[inside].mean()) if n else math.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """The items' share-weighted mean over confidence bins of |accuracy - confidence|."""
    table = reliability(y_true, probs, bins)
    full = table[table.n > 0]
    return float((full.n * (full.accuracy - full.confidence).abs()).sum() / max(len(y_true), 1))


def label_indices(labels, class_names: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def top_k(num_classes: int) -> int:
    """The k of top_k_accuracy: 5, or fewer with few classes, so it never counts every
    class (two classes: k=1, the plain accuracy)."""
    return max(1, min(5, num_classes - 1))


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """The share of items whose true class is among the k most probable (a class tied with
    the true one does not push it out)."""
    true_p = probs[np.arange(len(y_true)), y_true]
    higher = (probs > true_p[:, None]).sum(axis=1)
    return float(np.mean(higher < k)) if len(y_true) else math.nan


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro mean of the one-vs-rest ROC AUC over the classes present in ``y_true`` (a class
    absent from the split has no AUC); NaN when fewer than two classes are present. With
    every class present this is scikit-learn's roc_auc_score(multi_class="ovr")."""
    aucs = [auc for _, _, auc in roc_points(y_true, probs).values()]
    return float(np.mean(aucs)) if aucs else math.nan


def _finite_or_none(value: float):
    return float(value) if np.isfinite(value) else None


def split_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Every number of METRIC_KEYS for one split, plus ``n`` (items), ``top_k`` (the k of
    top_k_accuracy) and ``ece`` (expected calibration error, 15 bins). Precision, recall and
    F1 average over the classes present in the split as true labels (a class with no items,
    e.g. one missing from an --data folder, is not averaged in as 0; absent_note says so).
    A number that is undefined for the
    split (an AUC with one class present, kappa when both sides name one class) is null."""
    n = probs.shape[1]
    labels = list(range(n))
    y_pred = probs.argmax(axis=1)
    k = top_k(n)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "loss": float(skm.log_loss(y_true, probs, labels=labels)),
        "top_k": k,
        "top_k_accuracy": top_k_accuracy(y_true, probs, k),
    }
    # averaged over the classes present as true labels: a class with no items, e.g. one missing
    # from an --data folder, has no recall to score, and would only pull the average down
    present = sorted(np.unique(y_true).tolist())
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=avg, zero_division=0
        )
        out[f"precision_{avg}"] = float(p)
        out[f"recall_{avg}"] = float(r)
        out[f"f1_{avg}"] = float(f)
    out["roc_auc_ovr"] = _finite_or_none(roc_auc_ovr(y_true, probs))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = skm.cohen_kappa_score(y_true, y_pred, labels=labels)
    out["cohen_kappa"] = _finite_or_none(kappa)
    out["ece"] = expected_calibration_error(y_true, probs)
    return out


def roc_points(y_true: np.ndarray, probs: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """{class: (false positive rates, true positive rates, AUC)} one-vs-rest, for the
    classes with both positives and negatives in ``y_true``."""
    out = {}
    for c in range(probs.shape[1]):
        positives = y_true == c
        if 0 < positives.sum() < len(y_true):
            fpr, tpr, _ = skm.roc_curve(positives, probs[:, c])
            out[c] = (fpr, tpr, float(skm.auc(fpr, tpr)))
    return out


def absent_classes(y_true: np.ndarray, class_names: list[str]) -> list[str]:
    """The classes with no item among ``y_true``."""
    present = set(np.unique(y_true).tolist())
    return [c for i, c in enumerate(class_names) if i not in present]


def absent_note(y_true: np.ndarray, class_names: list[str]) -> str | None:
    """What the macro averages leave out, when a class has no items; None when none is absent."""
    absent = absent_classes(y_true, class_names)
    if not absent:
        return None
    k = len(class_names) - len(absent)
    return (f"no images of {', '.join(absent)}: macro precision, recall and F1 average over the "
            f"{k} class{'es' if k != 1 else ''} present")


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """precision, recall, F1, support and per-class accuracy (the share of that class's
    items predicted correctly) for every class."""
    labels = list(range(len(class_names)))
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    correct = np.array([np.sum((y_true == c) & (y_pred == c)) for c in labels])
    acc = np.divide(correct, s, out=np.zeros(len(labels)), where=s > 0)
    return pd.DataFrame(
        {"class": class_names, "precision": p, "recall": r, "f1": f, "support": s, "accuracy": acc}
    )


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(n)))
