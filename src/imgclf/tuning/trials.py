"""A trial: the config it trains with, its executions run through the trainer into
``TUNE_DIR/trials/``, its score, and its record (``trials/trial_<id>.json``)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import pandas as pd

from imgclf.config import Config, TuneConfig, with_values
from imgclf.errors import ImgclfError, TrainingError, first_line
from imgclf.runs import MANIFEST, read_json, read_manifest, write_json
from imgclf.training.folds import fold_dirs, is_kfold
from imgclf.training.trainer import train

TRIALS = "trials"


def trial_config(cfg: Config, values: dict, name: str, seed_offset: int = 0) -> Config:
    """The config a trial trains with: the tuned values set, its own run name, and a neutral
    tune section (a trial's config.yaml is a plain training config)."""
    base = cfg.model_copy(deep=True)
    if cfg.tune.folds:  # each trial is a k-fold run, scored by the mean over its folds
        base.data.folds = cfg.tune.folds
    base.tune = TuneConfig()
    seed = values.get("seed", cfg.seed) + seed_offset
    return with_values(base, {**values, "seed": seed, "output.name": name})


def trial_score(run_dir: Path, objective: str) -> float:
    """The objective at the epoch whose weights the run kept (its best epoch by
    train.early_stopping.monitor), so a trial's score is its model.keras's."""
    frame = pd.read_csv(run_dir / "history.csv")
    if objective not in frame:
        logged = ", ".join(c for c in frame.columns if c != "epoch")
        raise TrainingError(f"tune.objective: {objective} is not in {run_dir / 'history.csv'} "
                            f"(logged: {logged})")
    best_epoch = read_manifest(run_dir / MANIFEST).get("best_epoch")
    kept = frame.loc[frame["epoch"] == best_epoch, objective].astype(float)
    if kept.empty or not math.isfinite(kept.iloc[-1]):
        raise TrainingError(f"no finite {objective} at the kept epoch ({best_epoch}) of {run_dir}")
    return float(kept.iloc[-1])


def records(tune_dir: str | Path) -> list[dict]:
    """The ended trials' records, in trial order."""
    found = [read_json(p) for p in (Path(tune_dir) / TRIALS).glob("trial_*.json")]
    return sorted(found, key=lambda r: int(r["trial"]))


def ended_record(trials_dir: Path, trial_id: str, values: dict) -> dict | None:
    """The record of this trial when it ended with these values already (the process stopped
    before the oracle heard), else None."""
    path = trials_dir / f"trial_{trial_id}.json"
    if path.is_file():
        kept = read_json(path)
        if kept["values"] == values:
            return kept
    return None


def run_trial(cfg: Config, trials_dir: Path, trial_id: str, values: dict, worker: str, echo) -> dict:
    """Train the trial's tune.executions_per_trial runs, write its record and return it:
    completed with the mean score, or failed with its reason (any error but an interrupt)."""
    t = cfg.tune
    t0 = time.perf_counter()
    runs: list[Path] = []  # every run directory the trainer made, a failed run's too
    record = {"trial": trial_id, "values": values, "worker": worker}
    try:
        scores = [_execute(cfg, trials_dir, trial_id, values, k, runs, echo)
                  for k in range(t.executions_per_trial)]
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ImgclfError) else f"{type(exc).__name__}: {first_line(exc)}"
        record.update(status="failed", objective=None, reason=reason)
    else:
        record.update(status="completed", objective=sum(scores) / len(scores), reason=None)
    record.update(duration_s=round(time.perf_counter() - t0, 3), run_dirs=[p.name for p in runs])
    write_json(trials_dir / f"trial_{trial_id}.json", record)
    if record["status"] == "completed":
        echo(f"trial {trial_id}: {t.objective} {record['objective']:.4f}")
    else:
        echo(f"trial {trial_id} failed: {record['reason']}")
    return record


def _execute(cfg: Config, trials_dir: Path, trial_id: str, values: dict, k: int, runs: list[Path],
             echo) -> float:
    """The k-th run of a trial, its directory added to ``runs`` as soon as it exists; its score."""
    name = f"trial_{trial_id}" + (f"-run{k + 1}" if cfg.tune.executions_per_trial > 1 else "")
    keras.backend.clear_session()
    run_dir = train(trial_config(cfg, values, name, k), out=str(trials_dir), echo=echo,
                    on_run_dir=runs.append, resume_hint=False)
    if is_kfold(run_dir):
        scores = [trial_score(fold, cfg.tune.objective) for fold in fold_dirs(run_dir).values()]
        return sum(scores) / len(scores)
    return trial_score(run_dir, cfg.tune.objective)
