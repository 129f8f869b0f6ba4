"""The KerasTuner side of a search: the oracle of tune.algorithm, a hypermodel that declares
the space, and a tuner whose ``run_trial`` runs a trial through the trainer (tuning/trials.py).

KerasTuner reads its distributed role (local, chief or worker) from the environment when a
tuner is built (``set_role``). While it rewrites its oracle's state, a signal is held
(imgclf.interrupts): a state file cut in half would leave a search that cannot resume.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import keras_tuner
from keras_tuner.src import config as kt_config  # KerasTuner internal: its DEBUG switch has no public setter

from imgclf import interrupts
from imgclf.config import Config
from imgclf.tuning.space import declare, shown, trial_values
from imgclf.tuning.trials import TRIALS, ended_record, run_trial

KT_PROJECT = "keras_tuner"
# KerasTuner stops a search after this many failed trials in a row (its default is 3); ours
# records each failure and goes on, so a run of bad values cannot end a sweep early
NEVER = 10**9
ROLE_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
LOCAL, CHIEF = "local", "chief"


def set_role(tuner_id: str | None, host: str | None = None, port: int | None = None) -> None:
    """KerasTuner reads its distributed role from the environment when a tuner is built."""
    for key in ROLE_ENV:
        os.environ.pop(key, None)
    if tuner_id is not None:
        ip = f"[{host}]" if ":" in host else host  # the worker's client dials f"{ip}:{port}"
        os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=ip,
                          KERASTUNER_ORACLE_PORT=str(port))


def make_oracle(cfg: Config):
    t = cfg.tune
    objective = keras_tuner.Objective(t.objective, direction=t.resolved_direction())
    common = dict(objective=objective, seed=cfg.seed, max_consecutive_failed_trials=NEVER)
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


class SearchSpace(keras_tuner.HyperModel):
    """Declares the space; the model is built by the trainer, from the config."""

    def __init__(self, space: dict):
        super().__init__()
        self.space = space

    def build(self, hp):
        declare(hp, self.space)


class ConfigTuner(keras_tuner.Tuner):
    """A trial is a training run of the config with the trial's values set."""

    def __init__(self, cfg: Config, tune_dir: Path, echo, worker: str):
        self.cfg, self.trials_dir, self.echo, self.worker_name = cfg, tune_dir / TRIALS, echo, worker
        super().__init__(oracle=make_oracle(cfg), hypermodel=SearchSpace(cfg.tune.space),
                         directory=str(tune_dir), project_name=KT_PROJECT, overwrite=False)

    def run_trial(self, trial, *args, **kwargs):
        interrupts.stop_if_pending()
        tid, objective = trial.trial_id, self.cfg.tune.objective
        values = trial_values(self.cfg.tune, trial.hyperparameters.values)
        record = ended_record(self.trials_dir, tid, values)
        if record is not None:
            self.echo(f"trial {tid}: ended before the interruption, {record['status']}; not run again")
        else:
            self.echo(f"trial {tid}: {shown(values)}")
            record = run_trial(self.cfg, self.trials_dir, tid, values, self.worker_name, self.echo)
            interrupts.stop_if_pending()  # recorded first: a resumed search keeps this trial
        if record["status"] != "completed":
            raise keras_tuner.errors.FailedTrialError(record["reason"])
        return {objective: record["objective"]}


def _uninterrupted(method):
    """A call that writes KerasTuner's state whole: a signal during it waits for its end."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        interrupts.stop_if_pending()
        with interrupts.held():
            result = method(*args, **kwargs)
        interrupts.stop_if_pending()
        return result

    return call


def make_tuner(cfg: Config, tune_dir: Path, echo, tuner_id: str = LOCAL) -> ConfigTuner:
    """The tuner of this process's role (``set_role`` first): ``local``, ``chief`` or a worker's name."""
    kt_config.DEBUG = False  # else every failed trial prints a traceback; ours prints its reason
    (tune_dir / TRIALS).mkdir(exist_ok=True)
    tuner = ConfigTuner(cfg, tune_dir, echo, tuner_id)
    if tuner_id not in (LOCAL, CHIEF):
        # a worker's oracle is a gRPC client whose calls wait for the chief: Ctrl-C must cut
        # them short, so only the worker's own state file is written whole
        tuner.save = _uninterrupted(tuner.save)
        return tuner
    tuner.oracle.verbose = 0  # our own line per trial instead of KerasTuner's tables
    for name in ("create_trial", "update_trial"):
        setattr(tuner.oracle, name, _uninterrupted(getattr(tuner.oracle, name)))
    tuner.on_trial_end = _uninterrupted(tuner.on_trial_end)  # the oracle's end_trial, then saves
    return tuner
