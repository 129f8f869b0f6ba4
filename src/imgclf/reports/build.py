"""Everything a run directory's reports are made of, computed from its saved files:
classes.json, predictions.csv and history.csv in; metrics.json, per_class.csv,
confusion_matrix.csv/.png and curves.png out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imgclf.reports.metrics import (
    confusion,
    label_indices,
    per_class_table,
    prob_columns,
    split_metrics,
)
from imgclf.reports.plots import plot_confusion, plot_curves
from imgclf.runs import MANIFEST, atomic_path, read_json, write_json


def read_predictions(run_dir: Path) -> pd.DataFrame:
    # labels are class names: keep them strings even when they look like numbers
    return pd.read_csv(
        run_dir / "predictions.csv", dtype={"true_label": str, "pred_label": str, "file": str},
        keep_default_na=False,
    )


def _write_csv(df: pd.DataFrame, path: Path, **kw) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kw)


def write_reports(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    class_names = read_json(run_dir / "classes.json")
    preds = read_predictions(run_dir)
    cols = prob_columns(class_names)

    metrics: dict = {}
    tables = []
    by_split = {}
    for split, rows in preds.groupby("split", sort=False):
        y_true = label_indices(rows["true_label"], class_names)
        probs = rows[cols].to_numpy(dtype="float64")
        metrics[split] = split_metrics(y_true, probs)
        y_pred = probs.argmax(axis=1)
        tables.append(per_class_table(y_true, y_pred, class_names).assign(split=split))
        by_split[split] = (y_true, y_pred)
    primary = "test" if "test" in by_split else "val"  # what the confusion matrix shows
    write_json(run_dir / "metrics.json", metrics)

    per_class = pd.concat(tables, ignore_index=True)
    per_class = per_class[["split", "class", "precision", "recall", "f1", "support", "accuracy"]]
    _write_csv(per_class, run_dir / "per_class.csv", index=False, float_format="%.6f")

    y_true, y_pred = by_split[primary]
    cm = confusion(y_true, y_pred, len(class_names))
    cm_df = pd.DataFrame(cm, index=class_names, columns=class_names)
    cm_df.index.name = "true\\pred"
    _write_csv(cm_df, run_dir / "confusion_matrix.csv")
    norm = cm_df.div(cm_df.sum(axis=1).replace(0, 1), axis=0)
    _write_csv(norm, run_dir / "confusion_matrix_normalized.csv", float_format="%.6f")
    acc = metrics[primary]["accuracy"]
    plot_confusion(cm, class_names, run_dir / "confusion_matrix.png",
                   f"{primary} split: accuracy {acc:.4f} (n={len(y_true)})")

    history_path = run_dir / "history.csv"
    if history_path.exists():
        history = pd.read_csv(history_path)
        manifest = run_dir / MANIFEST
        best = read_json(manifest).get("best_epoch") if manifest.exists() else None
        if len(history):
            plot_curves(history, run_dir / "curves.png", title=run_dir.name, best_epoch=best)
    return metrics
