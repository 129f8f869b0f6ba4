"""The epoch loop: callbacks, the two phases, batch growth, and what a resume restores.

`fit_all` runs every epoch of a run that `trainer` has set up and hands back what finishing
needs. What passes between the steps travels in one `Run` (made by train or resume) and one
`EpochLoop` (the loop's own position: epoch, phase, batch size, datasets, callbacks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from imgclf.config import SCHEDULE_PARAMS, Config, TrainConfig
from imgclf.data.duplicates import duplicates_line
from imgclf.data.scan import LAST_SCAN, skipped_summary
from imgclf.errors import TrainingError
from imgclf.runs import Manifest, write_bad_files, write_json
from imgclf.training.callbacks import (
    CHECKPOINT_DIR,
    BatchGrowth,
    BestModel,
    Checkpoint,
    EarlyStop,
    Heartbeat,
    HistoryCSV,
    Plateau,
    RaisePendingInterrupt,
    with_average,
)
from imgclf.training.distribute import Distribution
from imgclf.training.phases import is_phased, phase_after
from imgclf.training.setup import Prepared, class_weight_map, datasets, enter_phase, verbosity


@dataclass
class Run:
    """One training run: made by `trainer.train` or `trainer.resume`, driven by `fit_all`,
    closed by `trainer.finish`."""

    dir: Path  # the run directory (a scratch directory on a multi_worker worker other than the chief)
    prep: Prepared
    model: object
    manifest: Manifest
    dist: Distribution
    echo: Callable = print
    state: dict | None = None  # the checkpoint a resume starts from
    entered: str = ""  # enter_phase's line for the phase the model was compiled for


@dataclass
class Fitted:
    """What the loop hands to finishing."""

    best: BestModel
    data: dict
    epochs: int
    train_time: float


def checkpoint_phase(t: TrainConfig, state: dict | None) -> int:
    """The phase a run (re)starts in: the checkpoint's, or the first epoch's."""
    if state is None:
        return phase_after(t, 0)
    return state.get("phase", phase_after(t, state["epoch"]))


def make_callbacks(run_dir: Path, cfg: Config, history_rows: list[dict], extra_state=None):
    """The callback list, history.csv's writer, and the callbacks whose state a checkpoint
    keeps, by name."""
    t = cfg.train
    es = t.early_stopping
    history = HistoryCSV(run_dir / "history.csv", rows=history_rows)
    best = BestModel(run_dir / "model.keras", es.monitor, es.mode, es.min_delta,
                     checkpoint_dir=run_dir / CHECKPOINT_DIR)
    stateful: dict = {"best": best}
    callbacks = [history, keras.callbacks.TerminateOnNaN(), best, RaisePendingInterrupt()]
    if verbosity(t.verbose) == 2:  # a line per epoch: and one a minute within a long one
        callbacks.append(Heartbeat())
    if es.enabled:
        stateful["early_stopping"] = EarlyStop(es.monitor, es.mode, es.patience, es.min_delta)
    if t.schedule.name == "plateau":
        p = {**SCHEDULE_PARAMS["plateau"], **t.schedule.params()}
        stateful["plateau"] = Plateau(monitor=p["monitor"], factor=p["factor"], patience=p["patience"],
                                      min_lr=p["min_lr"], verbose=0)
    if t.batch_size_schedule:
        stateful["batch_size"] = BatchGrowth(t.batch_size_schedule, cfg.data.batch_size)
    callbacks += [cb for name, cb in stateful.items() if name != "best"]
    if t.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    if t.optimizer.use_ema:
        callbacks = with_average(callbacks)
    callbacks.append(Checkpoint(run_dir, stateful, extra_state))
    return callbacks, history, stateful


def announce(run: Run) -> None:
    """classes.json, the skipped files, and the data and model lines of the log and manifest."""
    prep, echo = run.prep, run.echo
    bundle = prep.bundle
    write_json(run.dir / "classes.json", bundle.class_names)
    if bundle.bad_files:
        listing = write_bad_files(run.dir, bundle.bad_files)
        echo(f"skipped {skipped_summary(bundle.bad_files)}, listed in {listing}:")
        for p, r in bundle.bad_files[:5]:
            echo(f"  {p}: {r}")
    echo(f"data: {prep.cfg.data.source} {bundle.summary()}; images {prep.image_size[0]}x"
         f"{prep.image_size[1]}x{prep.channels}")
    if bundle.kind == "files" and LAST_SCAN:
        s = LAST_SCAN
        rate = s["files"] / max(s["seconds"], 1e-9)
        echo(f"scan: {s['files']:,} files checked in {s['seconds']:.1f}s ({s['decoded']:,} decoded, "
             f"{s['files'] - s['decoded']:,} from the cache: {rate:,.0f} files/s)")
    found = duplicates_line(bundle, prep.cfg.data.path)
    if found:
        echo(found)
    params = int(run.model.count_params())
    echo(f"model: {prep.cfg.model.name}, {params:,} parameters")
    run.manifest.update(model=prep.cfg.model.name, params=params, classes=bundle.num_classes,
                        sizes={k: len(v) for k, v in bundle.splits.items()})


class EpochLoop:
    """The loop's position in a run (epoch, phase, batch size, the last fit's losses), and the
    callbacks and data it fits with."""

    def __init__(self, run: Run):
        self.run, self.t = run, run.prep.cfg.train
        self.losses: list = []
        self.epoch = run.state["epoch"] if run.state else 0
        self.phase = checkpoint_phase(self.t, run.state)  # the phase train()/resume() compiled the model for
        self.rows = HistoryCSV.read(run.dir / "history.csv", self.epoch)  # drops rows past the checkpoint
        self.callbacks, self.history, self.stateful = make_callbacks(
            run.dir, run.prep.cfg, self.rows, lambda: {"phase": self.phase})
        self._restore(run.state)
        self.grower = self.stateful.get("batch_size")
        self.stopper = self.stateful.get("early_stopping")
        self.batch_size = self.grower.batch_size if self.grower else run.prep.cfg.data.batch_size
        self.sources: dict = {}  # each split's decoded cache, batched again when the batch grows
        self.data = datasets(run.prep, self.batch_size, echo=run.echo, sources=self.sources)
        self.class_weight = class_weight_map(run.prep)
        self.fit = run.dist.fit_function(run.model)

    def _restore(self, state: dict | None) -> None:
        """The deciding callbacks' counters (and a plateau's rate) as the checkpoint left them."""
        for name, cb_state in (state or {}).get("callbacks", {}).items():
            if name in self.stateful:
                self.stateful[name].load_state(cb_state)
        if state and "plateau" in self.stateful:
            self.run.model.optimizer.learning_rate = state["lr"]

    @property
    def diverged(self) -> bool:
        return bool(self.losses) and not np.isfinite(self.losses[-1])

    def _fit(self, epochs: int, callbacks: list) -> None:
        fitted = self.fit(
            self.data["train"], validation_data=self.data.get("val"), initial_epoch=self.epoch,
            epochs=epochs, callbacks=callbacks, verbose=verbosity(self.t.verbose),
            class_weight=self.class_weight, shuffle=False,  # the pipeline shuffles, with the seed
        )
        self.losses = fitted.history.get("loss", [])
        self.epoch += len(self.losses)

    def phase_one(self) -> None:
        """The head alone, at phases.head_lr, without the deciding callbacks (no early stop)."""
        if not (is_phased(self.t) and self.epoch < self.t.phases.head_epochs):
            return
        self.run.echo(self.run.entered)
        self.history.extra = {"phase": 1, "batch_size": self.batch_size}
        deciding = {id(cb) for name, cb in self.stateful.items() if name != "best"}
        self._fit(self.t.phases.head_epochs, [cb for cb in self.callbacks if id(cb) not in deciding])

    def to_phase_two(self) -> None:
        if self.phase == 1 and self.epoch >= self.t.phases.head_epochs and not self.diverged:
            self.phase = 2
            line = enter_phase(self.run.model, self.run.prep, 2, self.batch_size)
            self.run.echo(line + f", from epoch {self.epoch + 1}")

    def phase_two(self) -> None:
        """The rest of the epochs, refitting at a new batch size whenever batch growth says."""
        phased = is_phased(self.t)
        while self.epoch < self.t.epochs and not (self.stopper and self.stopper.stopped_epoch) \
                and not self.diverged:
            self.history.extra = {"batch_size": self.batch_size, **({"phase": 2} if phased else {})}
            self._fit(self.t.epochs, self.callbacks)
            if self.diverged or self.grower is None or self.grower.pending is None:
                break
            self.run.echo(f"epoch {self.epoch}: batch size {self.batch_size} -> {self.grower.pending}")
            self.batch_size = self.grower.batch_size = self.grower.pending
            self.grower.pending = None
            self.data["train"] = datasets(self.run.prep, self.batch_size, names=("train",),
                                          sources=self.sources)["train"]

    def check_divergence(self) -> None:
        """A loss that went to NaN: fatal before any epoch was kept, else a warning."""
        if not self.diverged:  # every worker sees the same reduced loss
            return
        best = self.stateful["best"]
        if best.best_epoch is None:
            # the rate of the phase it diverged in: phase 1 runs at phases.head_lr
            key, rate = (("train.phases.head_lr", self.t.phases.head_lr) if self.phase == 1
                         else ("train.optimizer.lr", self.t.optimizer.lr))
            raise TrainingError(
                f"training diverged (loss {self.losses[-1]} in epoch {self.epoch}) before any epoch "
                f"finished with a finite {self.t.early_stopping.monitor}: lower {key} (now {rate:g})"
            )
        self.run.echo(f"warning: training diverged in epoch {self.epoch} (loss {self.losses[-1]}); "
                      f"keeping epoch {best.best_epoch}, the best before it")


def fit_all(run: Run) -> Fitted:
    """Every epoch of the run (phases, batch growth); returns what finishing needs."""
    announce(run)
    loop = EpochLoop(run)
    t0 = time.perf_counter()
    loop.phase_one()
    loop.to_phase_two()
    loop.phase_two()
    # this session's time, plus the epochs that finished before a resume
    train_time = time.perf_counter() - t0 + sum(float(r.get("time_s", 0.0)) for r in loop.rows)
    loop.check_divergence()
    return Fitted(loop.stateful["best"], loop.data, loop.epoch, train_time)
