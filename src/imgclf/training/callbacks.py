"""Callbacks of our own. Each one that decides something (best epoch, early stop, batch
growth, plateau) keeps its state across several `fit` calls and can hand it to the
checkpoint, so a resumed run decides exactly as the uninterrupted one would have."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from imgclf import interrupts
from imgclf.inference import copy_weights, save_inference_model
from imgclf.monitors import direction
from imgclf.runs import atomic_path, write_json

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "batch_size",
                   "time_s"]
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_WEIGHTS = "last.weights.h5"
CHECKPOINT_STATE = "state.json"


def current_lr(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class _Tracker:
    """The best value of a monitored metric so far, with min_delta and a mode."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        self.monitor, self.mode, self.min_delta = monitor, direction(monitor, mode), min_delta
        self.best: float | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class HistoryCSV(keras.callbacks.Callback):
    """Rewrites history.csv atomically after every epoch: one row per finished epoch.

    ``extra`` holds columns the trainer sets (phase, batch size); ``rows`` lets a resumed
    run continue the rows of the epochs that finished before the interruption."""

    def __init__(self, path: Path, rows: list[dict] | None = None):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = list(rows or [])
        self.extra: dict = {}

    @staticmethod
    def read(path: Path, upto_epoch: int) -> list[dict]:
        """The rows of epochs 1..upto_epoch from an existing history.csv (a resumed run)."""
        if upto_epoch <= 0 or not Path(path).exists():
            return []
        df = pd.read_csv(path)
        df = df[df["epoch"] <= upto_epoch].drop_duplicates("epoch", keep="last")
        return [{k: v for k, v in row.items() if pd.notna(v)} for row in df.to_dict("records")]

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._lr = current_lr(self.model.optimizer)  # the rate the epoch's first step uses

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, **self.extra}
        row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
        row["lr"] = self._lr
        row["time_s"] = round(time.perf_counter() - self._t0, 3)
        self.rows = [r for r in self.rows if r["epoch"] < epoch + 1] + [row]
        self.write()

    def write(self) -> None:
        df = pd.DataFrame(self.rows)
        ordered = [c for c in HISTORY_COLUMNS if c in df] + [c for c in df if c not in HISTORY_COLUMNS]
        with atomic_path(self.path) as tmp:
            df[ordered].to_csv(tmp, index=False, float_format="%.8g")


class BestModel(keras.callbacks.Callback):
    """Saves model.keras atomically whenever ``monitor`` improves; `restore` puts the best
    epoch's weights back into the model once all training is over.

    Its checkpoint state names a weights file of the best epoch, written with that state: a
    run killed between saving model.keras and its checkpoint resumes with the best epoch the
    checkpoint knows, and restores exactly that epoch's weights."""

    def __init__(self, path: Path, monitor: str, mode: str, min_delta: float = 0.0,
                 checkpoint_dir: Path | None = None):
        super().__init__()
        self.path = Path(path)
        self.tracker = _Tracker(monitor, mode, min_delta)
        self.monitor, self.mode = monitor, self.tracker.mode
        self.best_epoch: int | None = None
        self._weights = None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self._saved: str | None = None  # the best-epoch weights file in checkpoint_dir
        self._served = None  # the inference model saved as model.keras, made at the first save

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self.tracker.improved(float(value)):
            self.tracker.best, self.best_epoch = float(value), epoch + 1
            self._weights = self.model.get_weights()
            self._served = save_inference_model(self.model, self.path, self._served)

    def restore(self, model) -> None:
        if self._weights is not None:
            model.set_weights(self._weights)
            return
        if self.best_epoch is None:
            return
        saved = self.checkpoint_dir / self._saved if self.checkpoint_dir and self._saved else None
        if saved is not None and saved.exists():  # the best epoch came before a resume
            with np.load(saved) as arrays:
                model.set_weights([arrays[f"arr_{i}"] for i in range(len(arrays.files))])
        elif self.path.exists():
            copy_weights(keras.models.load_model(self.path, compile=False), model)

    def state(self) -> dict:
        if self.checkpoint_dir and self._weights is not None and self._saved != self._name():
            with atomic_path(self.checkpoint_dir / self._name(), suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, *self._weights)
            self._saved = self._name()
        return {"best": self.tracker.best, "best_epoch": self.best_epoch, "weights": self._saved}

    def _name(self) -> str:
        return f"best-epoch{self.best_epoch}.npz"

    def load_state(self, state: dict) -> None:
        self.tracker.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self._saved = state.get("weights")


class EarlyStop(keras.callbacks.Callback):
    """Stops when ``monitor`` has not improved for ``patience`` epochs; its count survives
    several fit calls (phases, batch growth) and a resume."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0):
        super().__init__()
        self.tracker = _Tracker(monitor, mode, min_delta)
        self.monitor, self.patience = monitor, patience
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self.tracker.improved(float(value)):
            self.tracker.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True

    def state(self) -> dict:
        return {"best": self.tracker.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state(self, state: dict) -> None:
        self.tracker.best, self.wait = state.get("best"), int(state.get("wait", 0))
        self.stopped_epoch = state.get("stopped_epoch")


class Plateau(keras.callbacks.ReduceLROnPlateau):
    """Keras' ReduceLROnPlateau, with its counters kept across fit calls and resumes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._started = False

    def on_train_begin(self, logs=None):
        if not self._started:
            super().on_train_begin(logs)
            self._started = True

    def state(self) -> dict:
        best = float(self.best)
        return {"best": best if np.isfinite(best) else None, "wait": self.wait,
                "cooldown_counter": self.cooldown_counter}

    def load_state(self, state: dict) -> None:
        self._started = True
        self._reset()
        if state["best"] is not None:
            self.best = state["best"]
        self.wait = state["wait"]
        self.cooldown_counter = state["cooldown_counter"]


class BatchGrowth(keras.callbacks.Callback):
    """Grows the batch when a metric crosses a threshold (e.g. 32 -> 64 at val_accuracy
    0.8): it ends the current fit call and leaves the new size in ``pending``."""

    def __init__(self, steps: list, batch_size: int):
        super().__init__()
        self.steps = sorted(steps, key=lambda s: s.batch_size)
        self.batch_size = batch_size
        self.pending: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for step in self.steps:
            value = logs.get(step.monitor)
            if step.batch_size > self.batch_size and value is not None and value >= step.above:
                self.pending = step.batch_size  # the largest step whose threshold is crossed
        if self.pending is not None:
            self.model.stop_training = True

    def state(self) -> dict:
        # a growth decided in this epoch belongs to the next one, resumed or not
        return {"batch_size": self.pending or self.batch_size}

    def load_state(self, state: dict) -> None:
        self.batch_size = int(state["batch_size"])


class Checkpoint(keras.callbacks.Callback):
    """After every finished epoch: the model's and optimizer's variables and the state of the
    deciding callbacks, so `imgclf train --resume` continues from the last finished epoch.

    Put it last in the callback list, so the state it saves has seen the whole epoch."""

    def __init__(self, run_dir: Path, stateful: dict, extra_state=None):
        super().__init__()
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.stateful = stateful
        self.extra_state = extra_state or (lambda: {})

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            return  # never checkpoint a diverged epoch
        with interrupts.held():  # weights and state.json are one checkpoint: never one without the other
            self._save(epoch)

    def _save(self, epoch: int) -> None:
        self.dir.mkdir(exist_ok=True)
        with atomic_path(self.dir / CHECKPOINT_WEIGHTS, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        state = {
            "epoch": epoch + 1,
            "lr": current_lr(self.model.optimizer),
            "callbacks": {name: cb.state() for name, cb in self.stateful.items()},
            **self.extra_state(),
        }
        write_json(self.dir / CHECKPOINT_STATE, state)
        keep = state["callbacks"].get("best", {}).get("weights")
        for old in self.dir.glob("best-epoch*.npz"):  # only once the state no longer names them
            if old.name != keep:
                old.unlink(missing_ok=True)


class AverageIn(keras.callbacks.SwapEMAWeights):
    """With ``use_ema``: the optimizer's moving average of the weights in the model while it
    is validated (Keras' SwapEMAWeights) and from the start of each epoch's end, so the best
    epoch is chosen and saved by its average. Goes first in the callback list; `AverageOut`
    puts the trained weights back before the checkpoint and the next epoch."""

    # Keras' own swaps cover evaluation or whole epochs, not "the best model's save but not the checkpoint"
    def on_epoch_end(self, epoch, logs=None):
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True


class AverageOut(keras.callbacks.Callback):
    """The trained weights back in the model after ``swap``'s epoch-end swap: goes just before
    Checkpoint, so a resumed run continues from them with the average kept beside them."""

    def __init__(self, swap: AverageIn):
        super().__init__()
        self.swap = swap

    def on_epoch_end(self, epoch, logs=None):
        if self.swap._ema_weights_in_model:
            self.swap._swap_variables()
            self.swap._ema_weights_in_model = False


def with_average(callbacks: list) -> list:
    """``callbacks`` between an AverageIn and its AverageOut (Checkpoint goes after them)."""
    average = AverageIn()
    return [average, *callbacks, AverageOut(average)]


def read_checkpoint(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_STATE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


class RaisePendingInterrupt(keras.callbacks.Callback):
    """Raise a SIGINT/SIGTERM whose first KeyboardInterrupt was lost in a finalizer
    (imgclf.interrupts) at the end of the batch in progress. Async-safe: Keras runs it on its
    callback thread and re-raises what it raises in the training loop, so batches stay async."""

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        interrupts.raise_if_pending()

    def on_test_batch_end(self, batch, logs=None):
        interrupts.raise_if_pending()


class Heartbeat(keras.callbacks.Callback):
    """With a line per epoch (train.verbose 2, auto off a terminal), a line every ``every``
    seconds within a long epoch too: the step, the loss so far and the time left, so a log of a
    5-minute epoch does not stay silent."""

    def __init__(self, every: float = 60.0, echo=print, clock=time.monotonic):
        super().__init__()
        self.every, self.echo, self.clock = every, echo, clock
        self.epoch, self.start, self.last = 0, 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch + 1, self.clock()
        self.last = self.start

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        steps = self.params.get("steps") if self.params else None
        done, spent = batch + 1, now - self.start
        where = f"step {done}/{steps}" if steps else f"step {done}"
        left = f", ~{spent * (steps - done) / done:.0f}s left" if steps else ""
        loss = (logs or {}).get("loss")
        said = f", loss {float(loss):.4f}" if loss is not None else ""
        self.echo(f"epoch {self.epoch}: {where}{said}, {spent:.0f}s in{left}")
