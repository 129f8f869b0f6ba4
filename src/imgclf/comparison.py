"""`imgclf compare`: runs side by side, from their run.json, metrics.json and history.csv.

A run that is not finished (running, interrupted, failed) has no final metrics: its status
column says so, its metric cells stay empty and a warning names it, so a half-trained run is
never read as a result.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pandas as pd
import yaml

from imgclf.errors import ConfigError, DataError, did_you_mean
from imgclf.reports.plots import plot_val_curves
from imgclf.runs import MANIFEST, ensure_writable, live_status, read_json, read_manifest

COLUMNS = ["run", "status", "model", "params", "epochs", "best_epoch", "train_time_s",
           "val_accuracy", "val_loss", "val_f1_macro", "test_accuracy", "test_loss", "test_f1_macro"]
# k-fold runs (cv.json): their metric cells are the mean over the folds, and these say the spread;
# the columns appear when a k-fold run is in the table
KFOLD_COLUMNS = ["folds", "val_accuracy_std", "val_f1_macro_std", "test_accuracy_std", "test_f1_macro_std"]
ASCENDING = ("run", "status", "model", "params", "epochs", "best_epoch", "train_time_s",
             "val_loss", "test_loss")
FORMATS = ("table", "csv", "markdown")


def expand(paths: list) -> list[Path]:
    """Run directories; a folder that holds runs (e.g. outputs/) stands for all of them."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise DataError(f"run directory not found: {p}")
        if (p / MANIFEST).exists():
            out.append(p)
            continue
        inner = sorted(d for d in p.iterdir() if (d / MANIFEST).exists())
        if not inner:
            raise DataError(f"{p} is not a run directory (no {MANIFEST}) and holds none")
        out += inner
    return out


def _history(run: Path) -> pd.DataFrame | None:
    path = run / "history.csv"
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def collect(runs: list[Path]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[str]]:
    """(one row per run, {run: history}, warnings about runs that are not finished)."""
    rows, histories, warnings = [], {}, []
    for run in runs:
        try:
            manifest = read_manifest(run / MANIFEST)
            status = live_status(manifest)
        except DataError as exc:  # damaged, or not a JSON object
            warnings.append(f"warning: {run.name}: {exc}")
            manifest, status = {}, "unreadable"
        history = _history(run)
        if history is not None and len(history):
            histories[run.name] = history
        metrics = {}
        if status == "finished" and (run / "metrics.json").exists():
            try:
                metrics = read_json(run / "metrics.json")
            except DataError as exc:
                warnings.append(f"warning: {run.name}: {exc}")
        elif status != "unreadable":  # that one was warned about already
            done = f"{len(history)} epoch(s) in history.csv" if history is not None else "no history"
            warnings.append(f"warning: {run.name} is {status}, not finished ({done}): no final metrics")
        model = manifest.get("model")
        if model is None and (run / "config.yaml").exists():
            try:
                model = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("model", {}).get("name")
            except (yaml.YAMLError, AttributeError, OSError, UnicodeDecodeError):
                model = None  # a damaged config.yaml: the model column stays empty
        row = {
            "run": run.name, "status": status, "model": model, "params": manifest.get("params"),
            "epochs": manifest.get("epochs") or (len(history) if history is not None else None),
            "best_epoch": manifest.get("best_epoch"), "train_time_s": manifest.get("train_time_s"),
        }
        cv = _cv(run) if status == "finished" else None
        for split in ("val", "test"):
            for key in ("accuracy", "loss", "f1_macro"):
                row[f"{split}_{key}"] = (cv["mean"] if cv else metrics).get(split, {}).get(key)
        if cv:
            row["folds"] = cv.get("folds")
            for column in KFOLD_COLUMNS[1:]:  # e.g. val_accuracy_std: std["val"]["accuracy"]
                split, _, metric = column.removesuffix("_std").partition("_")
                row[column] = cv["std"].get(split, {}).get(metric)
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS + KFOLD_COLUMNS)
    if table["folds"].isna().all():
        table = table[COLUMNS]
    return table, histories, warnings


def _cv(run: Path) -> dict | None:
    """A k-fold run's cv.json (mean and std over its folds), else None."""
    try:
        return read_json(run / "cv.json") if (run / "cv.json").exists() else None
    except DataError:
        return None


def sort_rows(table: pd.DataFrame, key: str | None) -> pd.DataFrame:
    if key is None:
        return table
    if key not in table.columns:
        more = did_you_mean(key, list(table.columns)) or f" (known: {', '.join(table.columns)})"
        raise ConfigError(f"Unknown `--sort` column. Received: sort={key}{more}")
    return table.sort_values(key, ascending=key in ASCENDING, na_position="last", kind="stable")


def _cell(col: str, value, plain: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "" if plain else "-"
    if col == "params":
        return str(int(value)) if plain else f"{int(value):,}"
    if col in ("epochs", "best_epoch", "folds"):
        return str(int(value))
    if col == "train_time_s":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown `--format`. Received: format={fmt} (known: {', '.join(FORMATS)})")


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    _check_format(fmt)
    plain = fmt == "csv"
    columns = list(table.columns)
    cells = [[_cell(c, row[c], plain) for c in columns]
             for row in table.astype(object).where(table.notna(), None).to_dict("records")]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buf.getvalue()
    left = {"run", "status", "model"}
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |",
                 "|" + "|".join(" --- " if c in left else " ---: " for c in columns) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(lines) + "\n"
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for c, v, w in zip(columns, values, widths))

    return "\n".join([line(columns), *(line(r).rstrip() for r in cells)]) + "\n"


def compare(paths: list, *, sort: str | None = None, fmt: str = "table", plot: str | None = None,
            warn=print) -> str:
    """The table as text in ``fmt``; with ``plot``, a PNG of the validation curves."""
    _check_format(fmt)
    return render(table_of(paths, sort=sort, plot=plot, warn=warn), fmt)


def table_of(paths: list, *, sort: str | None = None, plot: str | None = None, warn=print) -> pd.DataFrame:
    """One row per run (sorted by ``sort``), each unfinished run warned about; with ``plot``,
    a PNG of the validation curves."""
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ConfigError(f"--plot must end in .png. Received: plot={plot}")
    if plot is not None and not Path(plot).parent.is_dir():
        raise DataError(f"--plot: folder not found: {Path(plot).parent}")
    if plot is not None:
        ensure_writable(Path(plot).parent)
    table, histories, warnings = collect(expand(paths))
    table = sort_rows(table, sort)
    for w in warnings:
        warn(w)
    if plot is not None:
        plot_val_curves({r: histories[r] for r in table["run"] if r in histories}, Path(plot))
    return table
