"""The numbers: per-split metrics and per-class tables from true labels and probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

PROB_PREFIX = "prob_"


def prob_columns(class_names: list[str]) -> list[str]:
    return [f"{PROB_PREFIX}{c}" for c in class_names]


def label_indices(labels, class_names: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def split_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """accuracy, loss (cross-entropy of the probabilities) and macro/weighted P/R/F1."""
    n = probs.shape[1]
    labels = list(range(n))
    y_pred = probs.argmax(axis=1)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "loss": float(skm.log_loss(y_true, probs, labels=labels)),
    }
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0
        )
        out[f"precision_{avg}"] = float(p)
        out[f"recall_{avg}"] = float(r)
        out[f"f1_{avg}"] = float(f)
    return out


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
