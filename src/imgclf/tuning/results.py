"""A search's results, rebuilt from the trial records on disk: trials.csv, tune.png,
best_config.yaml, and the finish line (tune.json closed, three lines said)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from imgclf.config import Config, load_config, to_dict, with_values
from imgclf.errors import TrainingError
from imgclf.reports.plots import plot_trials
from imgclf.runs import Manifest, write_text
from imgclf.tuning.space import shown
from imgclf.tuning.trials import TRIALS, records


def summarize(tune_dir: str | Path) -> dict | None:
    """trials.csv, tune.png and (with a completed trial) best_config.yaml from the trial
    records; returns the best record, or None."""
    tune_dir = Path(tune_dir)
    cfg = load_config(tune_dir / "config.yaml")
    t = cfg.tune
    rows = records(tune_dir)
    if not rows:
        return None
    keys = list(t.space) + (["train.epochs"] if t.algorithm == "hyperband" else [])
    table = _table(tune_dir, rows, keys, t.objective)
    write_text(tune_dir / "trials.csv", table.to_csv(index=False, float_format="%.8g"))
    direction = t.resolved_direction()
    log_keys = [k for k, s in t.space.items() if s.log]
    plot_trials(table, keys, t.objective, direction, tune_dir / "tune.png", log_keys=log_keys,
                title=f"{t.algorithm} search, {len(rows)} trials")
    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        return None
    pick = max if direction == "max" else min
    best = pick(done, key=lambda r: r["objective"])  # the first of equals
    _write_best_config(tune_dir, cfg, best)
    return best


def _table(tune_dir: Path, rows: list[dict], keys: list[str], objective: str) -> pd.DataFrame:
    """One row per ended trial: its values (lists and dicts as JSON), score, status, runs."""
    def cell(value):
        return json.dumps(value) if isinstance(value, list | dict) else value

    return pd.DataFrame([
        {"trial": r["trial"], **{k: cell(r["values"].get(k)) for k in keys},
         objective: r["objective"], "status": r["status"], "duration_s": r["duration_s"],
         "run_dir": ";".join(str(tune_dir / TRIALS / d) for d in r["run_dirs"]),
         "reason": r["reason"] or ""}
        for r in rows
    ])


def _write_best_config(tune_dir: Path, cfg: Config, best: dict) -> None:
    """The search's config with the best trial's values set and the tune section dropped."""
    t = cfg.tune
    values = {k: v for k, v in best["values"].items() if k != "train.epochs" or k in t.space}
    raw = to_dict(with_values(cfg, values))
    raw.pop("tune")
    header = (f"# the best trial of {tune_dir}: trial {best['trial']}, {t.objective} "
              f"{best['objective']:.6g}\n# train it: imgclf train --config best_config.yaml\n")
    if t.algorithm == "hyperband":
        header += (f"# (hyperband ran it for {best['values'].get('train.epochs')} epochs; "
                   f"train.epochs here is the full budget)\n")
    write_text(tune_dir / "best_config.yaml",
               header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None))


def finish(tune_dir: Path, manifest: Manifest, echo) -> Path:
    """Summarize, close tune.json (finished, or failed when no trial completed) and say so."""
    best = summarize(tune_dir)
    rows = records(tune_dir)
    failed = [r for r in rows if r["status"] != "completed"]
    counts = dict(trials=len(rows), failed=len(failed))
    if best is None:
        reason = failed[0]["reason"] if failed else "no trial ran"
        first = failed[0]["trial"] if failed else "-"
        manifest.close("failed", error=f"every trial failed; trial {first}: {reason}", **counts)
        raise TrainingError(f"all {len(rows)} trials failed (trial {first}: {reason}); "
                            f"see {tune_dir / 'trials.csv'}")
    objective = manifest.data.get("objective")
    manifest.close("finished", best_trial=best["trial"], best_value=best["objective"], **counts)
    echo(f"{len(rows)} trials ({len(failed)} failed); best: trial {best['trial']}, {objective} "
         f"{best['objective']:.4f}: {shown(best['values'])}")
    echo(f"trials: {tune_dir / 'trials.csv'}, plot: {tune_dir / 'tune.png'}")
    echo(f"train the best: imgclf train --config {tune_dir / 'best_config.yaml'}")
    return tune_dir


def on_interrupt(tune_dir: Path, echo, resume: str):
    """What an interrupted search does once tune.json says so: summarize what ended and say
    how to go on (``resume``, the command)."""
    def said() -> None:
        summarize(tune_dir)
        echo(f"interrupted; the ended trials are in {tune_dir / 'trials.csv'}")
        echo(f"resume with: {resume}")

    return said
