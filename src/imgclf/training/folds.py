"""k-fold cross-validation's summary run, from its folds' run directories alone.

A k-fold run (`imgclf train --folds K`, data.folds) is a parent directory holding one
ordinary run per fold (its config.yaml says which: data.fold) and the summary: the
out-of-fold predictions.csv (each training image predicted by the fold model that did not
train on it, as split val; with a test set, the test images predicted by the mean of the K
fold models' probabilities), the usual reports built from it, folds.csv (one row per fold)
and cv.json (the mean and standard deviation over the folds of every metric).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from imgclf.errors import DataError
from imgclf.inference import write_prediction_rows
from imgclf.reports import write_reports
from imgclf.runs import MANIFEST, atomic_path, live_status, prob_columns, read_json, read_manifest, write_json

KIND = "kfold"
CV = "cv.json"
FOLD_TABLE = "folds.csv"


def is_kfold(run_dir: Path) -> bool:
    path = Path(run_dir) / MANIFEST
    return path.is_file() and read_manifest(path).get("kind") == KIND


def fold_dirs(parent: Path) -> dict[int, Path]:
    """{fold number: its run directory} of the folds started so far (the last one of a number)."""
    found: dict[int, Path] = {}
    for child in sorted(p for p in Path(parent).iterdir() if (p / "config.yaml").is_file()):
        data = (yaml.safe_load((child / "config.yaml").read_text(encoding="utf-8")) or {}).get("data", {})
        if isinstance(data.get("fold"), int):
            found[data["fold"]] = child
    return found


def fold_status(run_dir: Path) -> str:
    return live_status(read_manifest(run_dir / MANIFEST)) if (run_dir / MANIFEST).is_file() else "unknown"


def write_summary(parent: Path, folds: dict[int, Path], class_names: list[str], id_column: str) -> dict:
    """predictions.csv, the reports, folds.csv and cv.json of a finished k-fold run; returns cv.json."""
    labels = {"true_label": str, "pred_label": str}  # class names "0".."9" stay names
    preds = {i: pd.read_csv(d / "predictions.csv", dtype=labels) for i, d in sorted(folds.items())}
    cols = prob_columns(class_names)
    index = {name: i for i, name in enumerate(class_names)}
    oof = pd.concat([p[p.split == "val"] for p in preds.values()], ignore_index=True)
    splits = {"val": (oof[id_column].tolist(), oof.true_label.map(index).to_numpy(), oof[cols].to_numpy())}
    tests = [p[p.split == "test"].reset_index(drop=True) for p in preds.values()]
    if len(tests[0]):
        if any(not t[id_column].equals(tests[0][id_column]) for t in tests):
            raise DataError(f"{parent}: the folds' test sets differ; cannot average their predictions")
        probs = np.mean([t[cols].to_numpy() for t in tests], axis=0)
        splits["test"] = (tests[0][id_column].tolist(), tests[0].true_label.map(index).to_numpy(), probs)
    table = fold_table(folds)
    with atomic_path(parent / FOLD_TABLE) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    numeric = table.drop(columns=["fold", "run"]).select_dtypes("number")
    cv = {"folds": len(folds), "mean": _nested(numeric.mean()), "std": _nested(numeric.std(ddof=1))}
    write_json(parent / CV, cv)  # before the reports: report.html states the spread
    write_json(parent / "classes.json", class_names)
    write_prediction_rows(parent / "predictions.csv", class_names, id_column, splits)
    write_reports(parent)
    return cv


def fold_table(folds: dict[int, Path]) -> pd.DataFrame:
    """One row per fold: its run directory, epochs, and every val/test metric (val_accuracy, ...)."""
    rows = []
    for i, run in sorted(folds.items()):
        metrics, manifest = read_json(run / "metrics.json"), read_manifest(run / MANIFEST)
        row = {"fold": i, "run": run.name, "best_epoch": manifest.get("best_epoch"),
               "train_time_s": manifest.get("train_time_s")}
        for split in ("val", "test"):
            for key, value in metrics.get(split, {}).items():
                if isinstance(value, (int, float)) and key not in ("top_k",):
                    row[f"{split}_{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _nested(series: pd.Series) -> dict:
    """{"val_accuracy": x, ...} -> {"val": {"accuracy": x}, ...} (and the columns that are no split's)."""
    out: dict = {}
    for key, value in series.items():
        split, _, metric = key.partition("_")
        value = None if pd.isna(value) else float(value)
        if split in ("val", "test"):
            out.setdefault(split, {})[metric] = value
        else:
            out[key] = value
    return out
