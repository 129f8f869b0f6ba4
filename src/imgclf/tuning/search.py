"""The search in one process: the checks said before anything is made, the tune directory
started or reopened, and ``tune`` / ``resume``."""

from __future__ import annotations

from pathlib import Path

import keras_tuner

from imgclf import interrupts
from imgclf.config import Config, dump_yaml, load_config
from imgclf.errors import ConfigError, did_you_mean, first_line
from imgclf.monitors import MONITORS
from imgclf.runs import (
    Manifest,
    default_run_name,
    holding,
    new_run_dir,
    read_manifest,
    refuse_if_running,
    write_text,
)
from imgclf.training.setup import prepare
from imgclf.tuning.results import finish, on_interrupt
from imgclf.tuning.space import declare
from imgclf.tuning.trials import records
from imgclf.tuning.tuner import CHIEF, KT_PROJECT, LOCAL, make_tuner, set_role

TUNE_MANIFEST = "tune.json"
MODES = {LOCAL: "in one process (no --chief)", CHIEF: "with a chief (--chief)"}


def check(cfg: Config):
    """What is wrong with a sweep is said before any directory is made; returns the prepared
    data of the base config (which also checks the data, model and recipe)."""
    t = cfg.tune
    if not t.space:
        raise ConfigError("tune.space is empty: give at least one key to tune, e.g. "
                          "tune.space: {train.optimizer.lr: {float: [1e-4, 1e-2], log: true}}")
    if t.objective not in MONITORS:
        hint = did_you_mean(t.objective, MONITORS)
        raise ConfigError(f"tune.objective: unknown metric {t.objective!r}{hint} (known: "
                          f"{', '.join(MONITORS)})")
    strategy = t.space.get("train.strategy")
    if cfg.train.strategy == "multi_worker" or (strategy and "multi_worker" in (strategy.choice or [])):
        raise ConfigError("train.strategy: multi_worker cannot run as a trial (a trial is one process; "
                          "spread trials over machines with --chief and --worker). Received: "
                          "train.strategy=multi_worker")
    try:  # what KerasTuner refuses, said now rather than after the tune directory exists
        declare(keras_tuner.HyperParameters(), t.space)
    except ValueError as exc:
        raise ConfigError(f"tune.space: {first_line(exc)}") from None
    prep = prepare(cfg)
    if t.objective.startswith("val_") and "val" not in prep.bundle.splits:
        raise ConfigError(f"tune.objective: {t.objective} needs a validation split, and this data has "
                          f"none (data.val_split is {cfg.data.val_split}); use a training metric "
                          f"or a val split")
    return prep


def start_dir(cfg: Config, out: str | None, directory: str | None,
              mode: str = LOCAL) -> tuple[Path, Manifest]:
    """A new tune directory (``directory`` exactly, or a new one under ``out``) with its
    config.yaml and tune.json."""
    if directory is not None:
        tune_dir = Path(directory)
        if tune_dir.exists() and (not tune_dir.is_dir() or any(tune_dir.iterdir())):
            raise ConfigError(f"--dir {tune_dir}: already exists and is not empty; continue a search "
                              f"there with --resume {tune_dir}, or name a new directory")
        try:
            tune_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--dir {tune_dir}: cannot create it: {exc.strerror}") from None
    else:
        tune_dir = new_run_dir(out or cfg.output.dir, f"tune-{default_run_name(cfg)}")
    write_text(tune_dir / "config.yaml", dump_yaml(cfg))
    manifest = Manifest(tune_dir, "tune", filename=TUNE_MANIFEST)
    t = cfg.tune
    manifest.update(algorithm=t.algorithm, objective=t.objective, direction=t.resolved_direction(),
                    max_trials=t.max_trials, space=list(t.space), mode=mode)
    return tune_dir, manifest


def _mode_of(tune_dir: Path, state: dict) -> str | None:
    """How a search ran: tune.json says; before it did, KerasTuner's tuner file tells."""
    if state.get("mode") in MODES:
        return state["mode"]
    kt = tune_dir / KT_PROJECT
    return CHIEF if (kt / "chief.json").is_file() else LOCAL if (kt / "tuner0.json").is_file() else None


def exists(tune_dir: str | Path) -> None:
    if not Path(tune_dir).is_dir():
        raise ConfigError(f"--resume {tune_dir}: not an imgclf tune directory (no such folder)")


def reopen(tune_dir: str | Path, max_trials: int | None, mode: str,
           ready=None) -> tuple[Path, Config, Manifest]:
    """A search to resume, checked (its config, its mode, then ``ready()``: the chief's port)
    before tune.json goes back to running and config.yaml takes the new max_trials."""
    tune_dir = Path(tune_dir)
    if not (tune_dir / "config.yaml").is_file() or not (tune_dir / TUNE_MANIFEST).is_file():
        raise ConfigError(f"--resume {tune_dir}: not an imgclf tune directory (no config.yaml / "
                          f"{TUNE_MANIFEST})")
    overrides = [f"tune.max_trials={max_trials}"] if max_trials is not None else []
    cfg = load_config(tune_dir / "config.yaml", overrides)
    state = read_manifest(tune_dir / TUNE_MANIFEST)
    refuse_if_running(state, tune_dir)
    if state.get("status") == "finished" and max_trials is None:
        raise ConfigError(f"--resume {tune_dir}: this search already finished ({state.get('trials')} "
                          f"trials); to run more trials, add --set tune.max_trials=N")
    ran = _mode_of(tune_dir, state)
    if ran is not None and ran != mode:
        # KerasTuner reloads keras_tuner/<tuner id>.json alone: the other mode would start afresh
        again = f"imgclf tune --resume {tune_dir}" + (" --chief HOST:PORT" if ran == CHIEF else "")
        raise ConfigError(f"--resume {tune_dir}: this search ran {MODES[ran]}; resume it the same way: "
                          f"{again}")
    check(cfg)
    if ready is not None:
        ready()
    if max_trials is not None:
        write_text(tune_dir / "config.yaml", dump_yaml(cfg))
    manifest = Manifest.reopen(tune_dir, TUNE_MANIFEST)
    manifest.update(max_trials=cfg.tune.max_trials, mode=mode)
    return tune_dir, cfg, manifest


def tune(cfg: Config, out: str | None = None, directory: str | None = None, echo=print) -> Path:
    """Run a search in this process; returns the new tune directory."""
    check(cfg)
    tune_dir, manifest = start_dir(cfg, out, directory)
    with holding(tune_dir, "search"):
        return _search(tune_dir, cfg, manifest, echo)


def resume(tune_dir: str | Path, max_trials: int | None = None, echo=print) -> Path:
    """Continue an interrupted search: finished trials are kept, an interrupted one reruns."""
    exists(tune_dir)
    with holding(tune_dir, "search"):
        tune_dir, cfg, manifest = reopen(tune_dir, max_trials, LOCAL)
        return _search(tune_dir, cfg, manifest, echo)


def _search(tune_dir: Path, cfg: Config, manifest: Manifest, echo) -> Path:
    set_role(None)
    with manifest.closing(on_interrupt(tune_dir, echo, f"imgclf tune --resume {tune_dir}")):
        tuner = make_tuner(cfg, tune_dir, echo)
        done = len(records(tune_dir))
        if done:
            echo(f"resuming {tune_dir}: {done} trial(s) already ended")
        with interrupts.installed():
            tuner.search()
    return finish(tune_dir, manifest, echo)
