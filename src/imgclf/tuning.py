"""`imgclf tune`: a KerasTuner search over config keys; every trial is a normal training run.

The config's ``tune.space`` maps config keys to choices or ranges. A KerasTuner HyperModel
declares one hyperparameter per key (named by the key); our Tuner's ``run_trial`` sets the
trial's values on the config and calls the trainer, as ``imgclf train`` would, into
``TUNE_DIR/trials/``, and returns the objective read from the run's history.csv at the
epoch whose weights the run kept (train.early_stopping.monitor picks it), so a trial's score
is that of its model.keras. A trial that fails (a diverged loss, any
error) is recorded as failed with its reason and the search goes on.

    TUNE_DIR/config.yaml        the resolved config, tune section included
    TUNE_DIR/tune.json          manifest: status, mode (local or chief), algorithm, objective, best trial
    TUNE_DIR/keras_tuner/       KerasTuner's oracle and trial state (what --resume reloads)
    TUNE_DIR/trials/            one run directory per trial execution, and trial_<id>.json
    TUNE_DIR/trials.csv         one row per ended trial
    TUNE_DIR/best_config.yaml   the best trial's config, tune section dropped
    TUNE_DIR/tune.png           the objective per trial and per tuned key

Distributed: KerasTuner's chief/worker mode. The chief holds the oracle behind a gRPC server
and runs no trials; workers ask it for trials and run them into the shared TUNE_DIR. Unlike
KerasTuner's own chief, ours stops its server and returns once every trial has ended and
every worker it has seen has been told the search is over.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pandas as pd

from imgclf.config import Config, TuneConfig, dump_yaml, load_config, to_dict, with_values
from imgclf.errors import ConfigError, ImgclfError, TrainingError, first_line
from imgclf.runs import (
    MANIFEST,
    Manifest,
    holding,
    new_run_dir,
    read_json,
    read_manifest,
    running_elsewhere,
    write_json,
    write_text,
)

TUNE_MANIFEST = "tune.json"
KT_PROJECT = "keras_tuner"
TRIALS = "trials"
HYPERBAND_EPOCHS = "tuner/epochs"
# KerasTuner stops a search after this many failed trials in a row (its default is 3); ours
# records each failure and goes on, so a run of bad values cannot end a sweep early
NEVER = 10**9
ROLE_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
# a worker's tuner state is keras_tuner/<name>.json: these are the oracle's file and the tuner
# file of a search run in one process
TAKEN_NAMES = ("oracle", "tuner0")
MODES = {"local": "in one process (no --chief)", "chief": "with a chief (--chief)"}


# ------------------------------------------------------------------ checks and names
def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); one line naming the option when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--chief expects HOST:PORT, e.g. 127.0.0.1:8000. Received: --chief {text}")
    return host.strip("[]"), int(port)


def check_worker_name(name: str) -> str:
    # KerasTuner takes any id containing "chief" for the chief
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or "chief" in name:
        raise ConfigError(f"--worker needs a name of letters, digits, _ . - without 'chief'. "
                          f"Received: --worker {name}")
    if name in TAKEN_NAMES:
        raise ConfigError(f"--worker: {name} is taken (a worker writes keras_tuner/NAME.json, and "
                          f"{' and '.join(n + '.json' for n in TAKEN_NAMES)} are KerasTuner's own files); "
                          f"pick another name. Received: --worker {name}")
    return name


def _address(host: str, port: int) -> str:
    """HOST:PORT, an IPv6 host in brackets ([::1]:8000), as gRPC takes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_address(host: str, port: int) -> str:
    """The address workers dial: this machine's name when the chief listens on every address."""
    import socket

    return _address(socket.getfqdn() if host in ("0.0.0.0", "::", "") else host, port)


def _probe_port(host: str, port: int) -> None:
    """A port that cannot be listened on (another process holds it) is found before the tune
    directory is filled; gRPC would only say so once the chief starts serving."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"--chief {_address(host, port)}: cannot listen there: {reason}") from None


def _check(cfg: Config):
    """What is wrong with a sweep is said before any directory is made; returns the prepared
    data of the base config (which also checks the data, model and recipe)."""
    from imgclf.training.trainer import MONITORS, prepare

    t = cfg.tune
    if not t.space:
        raise ConfigError("tune.space is empty: give at least one key to tune, e.g. "
                          "tune.space: {train.optimizer.lr: {float: [1e-4, 1e-2], log: true}}")
    if t.objective not in MONITORS:
        import difflib

        near = difflib.get_close_matches(t.objective, MONITORS, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"tune.objective: unknown metric {t.objective!r}{hint} (known: "
                          f"{', '.join(MONITORS)})")
    strategy = t.space.get("train.strategy")
    if cfg.train.strategy == "multi_worker" or (strategy and "multi_worker" in (strategy.choice or [])):
        raise ConfigError("train.strategy: multi_worker cannot run as a trial (a trial is one process; "
                          "spread trials over machines with --chief and --worker). Received: "
                          "train.strategy=multi_worker")
    import keras_tuner

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


def _set_role(tuner_id: str | None, host: str | None = None, port: int | None = None) -> None:
    """KerasTuner reads its distributed role from the environment when a tuner is built."""
    for key in ROLE_ENV:
        os.environ.pop(key, None)
    if tuner_id is not None:
        ip = f"[{host}]" if ":" in host else host  # the worker's client dials f"{ip}:{port}"
        os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=ip,
                          KERASTUNER_ORACLE_PORT=str(port))


# ------------------------------------------------------------------ space <-> values
def _choice_values(values: list) -> tuple[list, bool]:
    """KerasTuner's Choice takes values of one scalar type; lists, nulls and mixed types
    (``model.filters: {choice: [[16], [16, 32]]}``) travel as JSON text. Returns the values
    and whether they are encoded."""
    if all(isinstance(v, bool) for v in values) or all(isinstance(v, str) for v in values):
        return list(values), False
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        whole = all(isinstance(v, int) for v in values)
        return (list(values) if whole else [float(v) for v in values]), False
    return [json.dumps(v) for v in values], True


def declare(hp, space: dict) -> None:
    """One KerasTuner hyperparameter per tuned key, named by the key."""
    for key, spec in space.items():
        if spec.kind == "choice":
            hp.Choice(key, _choice_values(spec.choice)[0])
        elif spec.kind == "int":
            step = int(spec.step) if spec.step is not None else None
            hp.Int(key, spec.int_[0], spec.int_[1], step=step, sampling="log" if spec.log else "linear")
        else:
            low, high = spec.float_
            if spec.step is not None and not spec.log:
                # KerasTuner counts (high - low) // step + 1 values, and 0.5 // 0.1 is 4.0: a hair
                # above high keeps high among them (log steps have their own tolerance)
                high += spec.step * 1e-9
            hp.Float(key, low, high, step=spec.step, sampling="log" if spec.log else "linear")


def _decimals(number) -> int:
    """Digits after the point of a number as written: 0.1 -> 1, 0.25 -> 2, 1e-05 -> 5, 50 -> 0."""
    return max(0, -Decimal(repr(float(number))).normalize().as_tuple().exponent)


def _on_step(spec, value: float) -> float:
    """A stepped float as the step writes it: KerasTuner's low + 3 * 0.1 is 0.30000000000000004."""
    if spec.log:  # low * step ** i: rounded to 12 significant digits
        return float(f"{value:.12g}")
    return round(value, max(_decimals(spec.step), _decimals(spec.float_[0])))


def trial_values(t: TuneConfig, hp_values: dict) -> dict:
    """A trial's KerasTuner values as config ``key: value`` (hyperband's epochs included)."""
    out = {}
    for key, spec in t.space.items():
        value = hp_values[key]
        if spec.kind == "choice" and _choice_values(spec.choice)[1]:
            value = json.loads(value)
        elif spec.kind == "float" and spec.step is not None:
            value = _on_step(spec, value)
        out[key] = value
    if HYPERBAND_EPOCHS in hp_values:
        out["train.epochs"] = int(hp_values[HYPERBAND_EPOCHS])
    return out


def trial_config(cfg: Config, values: dict, name: str, seed_offset: int = 0) -> Config:
    """The config a trial trains with: the tuned values set, its own run name, and a neutral
    tune section (a trial's config.yaml is a plain training config)."""
    base = cfg.model_copy(deep=True)
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


# ------------------------------------------------------------------ the KerasTuner side
def _objective(t: TuneConfig):
    import keras_tuner

    return keras_tuner.Objective(t.objective, direction=t.resolved_direction())


def _oracle(cfg: Config):
    import keras_tuner

    t = cfg.tune
    common = dict(objective=_objective(t), seed=cfg.seed, max_consecutive_failed_trials=NEVER)
    if t.algorithm == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=t.max_trials, **common)
    if t.algorithm == "bayesian":
        # KerasTuner draws 3 random points per tuned key before the Gaussian process guides
        # anything; a small sweep would never get there, so at most half the trials are random
        initial = min(3 * len(t.space), max(2, t.max_trials // 2))
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=t.max_trials, num_initial_points=initial, **common)
    oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=cfg.train.epochs, factor=t.hyperband_factor,
                                                 **common)
    oracle.max_trials = t.max_trials  # the base oracle stops at max_trials; hyperband sets none
    return oracle


def _echo_filter(echo):
    """The trainer's own hint to resume a lone run would mislead inside a sweep."""
    def out(text: str = "") -> None:
        if not str(text).startswith("resume with: imgclf train"):
            echo(text)
    return out


def _make_tuner(cfg: Config, tune_dir: Path, echo, tuner_id: str = "local"):
    import keras_tuner
    from keras_tuner.src import config as kt_config

    kt_config.DEBUG = False  # else every failed trial prints a traceback; ours prints its reason

    t = cfg.tune
    trials_dir = tune_dir / TRIALS
    trials_dir.mkdir(exist_ok=True)

    class SearchSpace(keras_tuner.HyperModel):
        """Declares the space; the model is built by the trainer, from the config."""

        def build(self, hp):
            declare(hp, t.space)

    class ConfigTuner(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            import keras

            from imgclf.training.trainer import train

            _stop_if_signalled()
            tid = trial.trial_id
            values = trial_values(t, trial.hyperparameters.values)
            ended = trials_dir / f"trial_{tid}.json"
            if ended.is_file() and read_json(ended)["values"] == values:
                # it ended, but the process stopped before the oracle heard: keep its result
                kept = read_json(ended)
                echo(f"trial {tid}: ended before the interruption, {kept['status']}; not run again")
                if kept["status"] != "completed":
                    raise keras_tuner.errors.FailedTrialError(kept["reason"])
                return {t.objective: kept["objective"]}
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            echo(f"trial {tid}: {shown}")
            t0 = time.perf_counter()
            runs: list[Path] = []
            scores: list[float] = []
            record = {"trial": tid, "values": values, "worker": tuner_id}
            try:
                for k in range(t.executions_per_trial):
                    name = f"trial_{tid}" + (f"-run{k + 1}" if t.executions_per_trial > 1 else "")
                    before = set(trials_dir.iterdir())
                    keras.backend.clear_session()
                    try:
                        run_dir = train(trial_config(cfg, values, name, k), out=str(trials_dir),
                                        echo=_echo_filter(echo))
                    finally:  # a failed run's directory too, for its run.json and history
                        mine = re.compile(rf"-{re.escape(name)}(-\d+)?$")  # new_run_dir's names
                        runs += sorted(p for p in set(trials_dir.iterdir()) - before
                                       if p.is_dir() and mine.search(p.name))
                    scores.append(trial_score(run_dir, t.objective))
            except Exception as exc:
                reason = (str(exc) if isinstance(exc, ImgclfError)
                          else f"{type(exc).__name__}: {first_line(exc)}")
                _write_record(trials_dir, {**record, "status": "failed", "objective": None, "reason": reason,
                                           "duration_s": round(time.perf_counter() - t0, 3),
                                           "run_dirs": [p.name for p in runs]})
                echo(f"trial {tid} failed: {reason}")
                raise keras_tuner.errors.FailedTrialError(reason) from None
            score = sum(scores) / len(scores)
            _write_record(trials_dir, {**record, "status": "completed", "objective": score, "reason": None,
                                       "duration_s": round(time.perf_counter() - t0, 3),
                                       "run_dirs": [p.name for p in runs]})
            echo(f"trial {tid}: {t.objective} {score:.4f}")
            _stop_if_signalled()  # recorded first: a resumed search keeps this trial
            return {t.objective: score}

    tuner = ConfigTuner(oracle=_oracle(cfg), hypermodel=SearchSpace(), directory=str(tune_dir),
                        project_name=KT_PROJECT, overwrite=False)
    if tuner._is_worker():
        # a worker's oracle is a gRPC client whose calls wait for the chief: Ctrl-C must cut
        # them short, so only the worker's own state file is written whole
        tuner.save = _uninterrupted(tuner.save)
        return tuner
    tuner.oracle.verbose = 0  # our own line per trial instead of KerasTuner's tables
    for name in ("create_trial", "update_trial"):
        setattr(tuner.oracle, name, _uninterrupted(getattr(tuner.oracle, name)))
    tuner.on_trial_end = _uninterrupted(tuner.on_trial_end)  # the oracle's end_trial, then saves
    return tuner


# Ctrl-C and SIGTERM during a search. Python drops a KeyboardInterrupt raised inside a garbage
# collector's callback ("Exception ignored in ..."), and Keras makes plenty of garbage, so a
# signal is also remembered and acted on at the next trial boundary. While KerasTuner rewrites
# oracle.json and trial.json the signal waits: a write cut in half would leave a search that
# cannot resume.
_signalled: list[int] = []
_holding = [0]


def _on_signal(signum, frame):
    from imgclf.interrupts import in_finalizer, remember, stopping

    _signalled.append(signum)
    remember(signum)  # a trial's training raises it at its next batch if this raise is lost
    if not _holding[0] and not in_finalizer(frame):  # raised in a finalizer, it would be lost
        raise stopping(signum)


def _stop_if_signalled() -> None:
    import threading

    # the chief's oracle also answers workers on the server's threads: they finish their call
    if _signalled and not _holding[0] and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt(f"signal {_signalled[0]}")


@contextmanager
def _signals():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _signalled.clear()
    before = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _uninterrupted(method):
    """An oracle call whose state writes a signal does not cut short (see _on_signal)."""
    import functools

    @functools.wraps(method)
    def call(*args, **kwargs):
        _stop_if_signalled()
        _holding[0] += 1
        try:
            result = method(*args, **kwargs)
        finally:
            _holding[0] -= 1
        _stop_if_signalled()
        return result

    return call


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write_record(trials_dir: Path, record: dict) -> None:
    write_json(trials_dir / f"trial_{record['trial']}.json", record)


# ------------------------------------------------------------------ outputs
def records(tune_dir: Path) -> list[dict]:
    """The ended trials' records, in trial order."""
    found = [read_json(p) for p in (Path(tune_dir) / TRIALS).glob("trial_*.json")]
    return sorted(found, key=lambda r: int(r["trial"]))


def summarize(tune_dir: str | Path) -> dict | None:
    """trials.csv, tune.png and (with a completed trial) best_config.yaml from the trial
    records; returns the best record, or None."""
    from imgclf.reports.plots import plot_trials

    tune_dir = Path(tune_dir)
    cfg = load_config(tune_dir / "config.yaml")
    t = cfg.tune
    rows = records(tune_dir)
    if not rows:
        return None
    keys = list(t.space) + (["train.epochs"] if t.algorithm == "hyperband" else [])
    table = pd.DataFrame([
        {"trial": r["trial"],
         **{k: json.dumps(r["values"].get(k)) if isinstance(r["values"].get(k), list | dict)
            else r["values"].get(k) for k in keys},
         t.objective: r["objective"], "status": r["status"], "duration_s": r["duration_s"],
         "run_dir": ";".join(str(tune_dir / TRIALS / d) for d in r["run_dirs"]),
         "reason": r["reason"] or ""}
        for r in rows
    ])
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
    values = {k: v for k, v in best["values"].items() if k != "train.epochs" or k in t.space}
    best_cfg = with_values(cfg, values)
    raw = to_dict(best_cfg)
    raw.pop("tune")
    header = (f"# the best trial of {tune_dir}: trial {best['trial']}, {t.objective} "
              f"{best['objective']:.6g}\n# train it: imgclf train --config best_config.yaml\n")
    if t.algorithm == "hyperband":
        header += (f"# (hyperband ran it for {best['values'].get('train.epochs')} epochs; "
                   f"train.epochs here is the full budget)\n")
    import yaml

    write_text(tune_dir / "best_config.yaml",
               header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None))
    return best


def _finish(tune_dir: Path, manifest: Manifest, echo) -> Path:
    best = summarize(tune_dir)
    rows = records(tune_dir)
    failed = [r for r in rows if r["status"] != "completed"]
    counts = dict(trials=len(rows), failed=len(failed))
    if best is None:
        reason = failed[0]["reason"] if failed else "no trial ran"
        manifest.close("failed", error=f"every trial failed; trial {failed[0]['trial'] if failed else '-'}: "
                       f"{reason}", **counts)
        raise TrainingError(f"all {len(rows)} trials failed (trial {failed[0]['trial'] if failed else '-'}: "
                            f"{reason}); see {tune_dir / 'trials.csv'}")
    objective = manifest.data.get("objective")
    manifest.close("finished", best_trial=best["trial"], best_value=best["objective"], **counts)
    shown = " ".join(f"{k}={_fmt(v)}" for k, v in best["values"].items())
    echo(f"{len(rows)} trials ({len(failed)} failed); best: trial {best['trial']}, {objective} "
         f"{best['objective']:.4f}: {shown}")
    echo(f"trials: {tune_dir / 'trials.csv'}, plot: {tune_dir / 'tune.png'}")
    echo(f"train the best: imgclf train --config {tune_dir / 'best_config.yaml'}")
    return tune_dir


# ------------------------------------------------------------------ directories
def _start_dir(cfg: Config, out: str | None, directory: str | None,
               mode: str = "local") -> tuple[Path, Manifest]:
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
        name = cfg.output.name or f"{cfg.model.name}-{cfg.data.source}"
        tune_dir = new_run_dir(out or cfg.output.dir, f"tune-{name}")
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
    return "chief" if (kt / "chief.json").is_file() else "local" if (kt / "tuner0.json").is_file() else None


def _reopen(tune_dir: str | Path, max_trials: int | None, mode: str,
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
    busy = running_elsewhere(state)
    if busy:
        raise ConfigError(f"--resume {tune_dir}: {busy}; stop it first (Ctrl-C, or kill -INT "
                          f"{state['pid']}), or let it finish")
    if state.get("status") == "finished" and max_trials is None:
        raise ConfigError(f"--resume {tune_dir}: this search already finished ({state.get('trials')} "
                          f"trials); to run more trials, add --set tune.max_trials=N")
    ran = _mode_of(tune_dir, state)
    if ran is not None and ran != mode:
        # KerasTuner reloads keras_tuner/<tuner id>.json alone: the other mode would start afresh
        again = f"imgclf tune --resume {tune_dir}" + (" --chief HOST:PORT" if ran == "chief" else "")
        raise ConfigError(f"--resume {tune_dir}: this search ran {MODES[ran]}; resume it the same way: "
                          f"{again}")
    _check(cfg)
    if ready is not None:
        ready()
    if max_trials is not None:
        write_text(tune_dir / "config.yaml", dump_yaml(cfg))
    manifest = Manifest.reopen(tune_dir, TUNE_MANIFEST)
    manifest.update(max_trials=cfg.tune.max_trials, mode=mode)
    return tune_dir, cfg, manifest


# ------------------------------------------------------------------ entry points
def tune(cfg: Config, out: str | None = None, directory: str | None = None, echo=print) -> Path:
    """Run a search in this process; returns the new tune directory."""
    _check(cfg)
    tune_dir, manifest = _start_dir(cfg, out, directory)
    with holding(tune_dir, "search"):
        return _search(tune_dir, cfg, manifest, echo)


def resume(tune_dir: str | Path, max_trials: int | None = None, echo=print) -> Path:
    """Continue an interrupted search: finished trials are kept, an interrupted one reruns."""
    _exists(tune_dir)
    with holding(tune_dir, "search"):
        tune_dir, cfg, manifest = _reopen(tune_dir, max_trials, "local")
        return _search(tune_dir, cfg, manifest, echo)


def _exists(tune_dir: str | Path) -> None:
    if not Path(tune_dir).is_dir():
        raise ConfigError(f"--resume {tune_dir}: not an imgclf tune directory (no such folder)")


@contextmanager
def _closing_on_stop(tune_dir: Path, manifest: Manifest, echo, resume: str):
    """An interrupted search is marked so, summarized, and says how to resume (``resume``);
    a failed one is marked failed with its reason."""
    try:
        yield
    except KeyboardInterrupt:
        manifest.close("interrupted")
        summarize(tune_dir)
        echo(f"interrupted; the ended trials are in {tune_dir / 'trials.csv'}")
        echo(f"resume with: {resume}")
        raise
    except BaseException as exc:
        manifest.close("failed", error=f"{type(exc).__name__}: {first_line(exc)}")
        raise


def _search(tune_dir: Path, cfg: Config, manifest: Manifest, echo) -> Path:
    _set_role(None)
    with _closing_on_stop(tune_dir, manifest, echo, f"imgclf tune --resume {tune_dir}"):
        tuner = _make_tuner(cfg, tune_dir, echo)
        done = len(records(tune_dir))
        if done:
            echo(f"resuming {tune_dir}: {done} trial(s) already ended")
        with _signals():
            tuner.search()
    return _finish(tune_dir, manifest, echo)


def chief(cfg: Config | None, endpoint: str, directory: str | None = None, resume_dir: str | None = None,
          max_trials: int | None = None, echo=print) -> Path:
    """Serve the oracle to workers until every trial has ended; runs no trial itself."""
    if resume_dir is not None:
        _exists(resume_dir)
        with holding(resume_dir, "search"):
            return _chief(cfg, endpoint, None, resume_dir, max_trials, echo)
    return _chief(cfg, endpoint, directory, None, max_trials, echo)


def _chief(cfg: Config | None, endpoint: str, directory: str | None, resume_dir: str | None,
           max_trials: int | None, echo) -> Path:
    host, port = parse_endpoint(endpoint)
    if resume_dir is not None:
        tune_dir, cfg, manifest = _reopen(resume_dir, max_trials, "chief",
                                          ready=lambda: _probe_port(host, port))
    else:
        _check(cfg)
        _probe_port(host, port)
        tune_dir, manifest = _start_dir(cfg, None, directory, mode="chief")
    _set_role("chief", host, port)
    again = f"imgclf tune --resume {tune_dir} --chief {endpoint}"
    try:
        with _closing_on_stop(tune_dir, manifest, echo, again):
            tuner = _make_tuner(cfg, tune_dir, echo, tuner_id="chief")
            tuner.save()
            with _signals():
                _serve(tuner.oracle, host, port, tune_dir, echo)
    finally:
        _set_role(None)
    return _finish(tune_dir, manifest, echo)


def _serve(oracle, host: str, port: int, tune_dir: Path, echo, poll_s: float = 0.5) -> None:
    """KerasTuner's servicer behind our own loop: it returns (and stops the server) once the
    oracle has no trial to give, none is running, and every worker it has seen has been told
    so; KerasTuner's start_server never stops its server (keras-team/keras-tuner#254)."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(_address(host, port))
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"--chief {_address(host, port)}: cannot listen there (is the port in use?)")
    server.start()
    echo(f"chief: serving the oracle on {_address(host, port)}; start workers with "
         f"imgclf tune --worker NAME --chief {_dial_address(host, port)} --dir {tune_dir}")
    ended = len(oracle.end_order)
    try:
        while True:
            time.sleep(poll_s)
            _stop_if_signalled()
            for trial_id in oracle.end_order[ended:]:
                trial = oracle.trials[trial_id]
                score = f", {oracle.objective.name} {trial.score:.4f}" if trial.score is not None else ""
                echo(f"chief: trial {trial_id} {trial.status.lower()}{score}")
            ended = len(oracle.end_order)
            full = bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials
            if ((servicer.stop_triggered or full) and not oracle._retry_queue and exit_chief(oracle)):
                break
    finally:
        server.stop(grace=2).wait()


def worker(directory: str, name: str, endpoint: str, echo=print, wait_s: float = 1.0) -> Path:
    """Run trials the chief hands out until it says the search is over."""
    import grpc

    host, port = parse_endpoint(endpoint)
    check_worker_name(name)
    tune_dir = Path(directory)
    config = tune_dir / "config.yaml"
    if not config.is_file():
        echo(f"worker {name}: waiting for the chief to write {config}")
        while not config.is_file():
            time.sleep(wait_s)
    state = tune_dir / TUNE_MANIFEST
    if state.is_file() and read_manifest(state).get("status") == "finished":
        raise ConfigError(f"worker {name}: the search in {tune_dir} has finished; nothing to run "
                          f"(more trials: imgclf tune --resume {tune_dir} --chief HOST:PORT "
                          f"--set tune.max_trials=N)")
    cfg = load_config(config)
    _check(cfg)
    _set_role(name, host, port)
    try:
        tuner = _make_tuner(cfg, tune_dir, echo, tuner_id=name)
        _pause_when_idle(tuner.oracle, wait_s)
        echo(f"worker {name}: asking {_address(host, port)} for trials")
        with _signals():
            tuner.search()
    except grpc.RpcError as exc:  # the chief is gone (KerasTuner's client waits up to an hour)
        code = exc.code().name if callable(getattr(exc, "code", None)) else type(exc).__name__
        raise ImgclfError(f"worker {name}: no chief at {_address(host, port)} ({code})") from None
    except KeyboardInterrupt:
        echo(f"worker {name} interrupted; its trial reruns when it rejoins with: imgclf tune --worker "
             f"{name} --chief {endpoint} --dir {tune_dir}")
        raise
    finally:
        _set_role(None)
    echo(f"worker {name}: the search is over")
    return tune_dir


def _pause_when_idle(client, wait_s: float) -> None:
    """An oracle that waits on other workers' trials (hyperband between rounds) answers IDLE,
    and KerasTuner's worker asks again at once: pause between asks instead."""
    ask = client.create_trial

    def create_trial(tuner_id):
        trial = ask(tuner_id)
        if trial.status == "IDLE":
            time.sleep(wait_s)
        return trial

    client.create_trial = create_trial
