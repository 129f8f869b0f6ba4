"""Callbacks of our own: history.csv with the learning rate, and best-model checkpointing."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from imgclf.runs import atomic_path

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time_s"]


def current_lr(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def resolve_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor or "auc" in monitor else "min"


class HistoryCSV(keras.callbacks.Callback):
    """Rewrites history.csv atomically after every epoch: one row per finished epoch."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
        row["lr"] = current_lr(self.model.optimizer)
        row["time_s"] = round(time.perf_counter() - self._t0, 3)
        self.rows.append(row)
        df = pd.DataFrame(self.rows)
        ordered = [c for c in HISTORY_COLUMNS if c in df] + [c for c in df if c not in HISTORY_COLUMNS]
        with atomic_path(self.path) as tmp:
            df[ordered].to_csv(tmp, index=False, float_format="%.8g")


class BestModel(keras.callbacks.Callback):
    """Saves model.keras atomically whenever ``monitor`` improves, and puts the best
    epoch's weights back into the model when training ends."""

    def __init__(self, path: Path, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.mode, self.min_delta = mode, min_delta
        self.best = np.inf if mode == "min" else -np.inf
        self.best_epoch: int | None = None
        self._weights = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self.best_epoch is None or self._improved(float(value)):
            self.best, self.best_epoch = float(value), epoch + 1
            self._weights = self.model.get_weights()
            with atomic_path(self.path) as tmp:
                self.model.save(tmp)

    def on_train_end(self, logs=None):
        if self._weights is not None:
            self.model.set_weights(self._weights)
