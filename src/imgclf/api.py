"""The Python API: the command line's jobs called from Python (a notebook, a script).

    run = imgclf.train("configs/quickstart.yaml", overrides={"train.epochs": 5})
    run.metrics["val"]["accuracy"]; run.history; run.predict("photos/"); run.evaluate()
    imgclf.compare(["outputs/"])

Every function reaches the same job functions as `imgclf` does, through the same checks, so
a run trained here is the run `imgclf train` makes, and an error is the same ImgclfError with
the same one-line message. The package root (``imgclf.train``, ...) loads this module on
first use, with TensorFlow imported quietly first.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf import interrupts
from imgclf.comparison import table_of
from imgclf.config import Config, override_items
from imgclf.data.pipeline import model_input
from imgclf.errors import ConfigError, DataError
from imgclf.evaluate import evaluate_run
from imgclf.export import export_run
from imgclf.inference import batch_probs, check_tta
from imgclf.predict import Predictor, iter_probs, list_inputs, load_predictor
from imgclf.reports.build import run_subtitle
from imgclf.reports.html import summary
from imgclf.runs import MANIFEST, live_status, prob_columns, read_json, read_manifest
from imgclf.saved import open_run
from imgclf.training import trainer
from imgclf.training.folds import CV
from imgclf.training.request import train_config, tune_config
from imgclf.tuning import tune as tune_search


def train(config=None, overrides=None, *, out: str | Path | None = None, echo=print) -> Run | None:
    """Train one model as `imgclf train` does; returns its run. ``config``: a YAML file, a list
    of them (layered, a later one winning), a mapping with the same keys (or a list mixing
    both), or None (the defaults: digits). ``overrides``: ``{"train.epochs": 3}`` or
    ``["train.epochs=3"]``. ``out``: the parent folder of the run (default output.dir). None on
    a multi_worker worker other than the chief, which writes no run."""
    cfg = train_config(config, override_items(overrides), out)
    with interrupts.installed():  # SIGTERM stops a run as Ctrl-C does: saved, resumable
        run_dir = trainer.train(cfg, out=str(out) if out else None, echo=echo)
    return None if run_dir is None else load(run_dir)


def resume(run_dir: str | Path, *, echo=print) -> Run:
    """Continue an interrupted run from its last finished epoch (`imgclf train --resume`)."""
    with interrupts.installed():
        return load(trainer.resume(run_dir, echo=echo))


def tune(config=None, overrides=None, *, out: str | Path | None = None,
         directory: str | Path | None = None, echo=print) -> Path:
    """A KerasTuner search over tune.space (`imgclf tune`); returns the tune directory (made
    under ``out``, or exactly ``directory``)."""
    cfg = tune_config(config, override_items(overrides), out, directory)
    return tune_search(cfg, out=str(out) if out else None, directory=str(directory) if directory else None,
                       echo=echo)


def load(run_dir: str | Path | Run, *, unsafe: bool = False) -> Run:
    """A run directory as a Run. ``unsafe`` lets its model.keras load though it holds Python
    code (a Lambda layer), as the CLI's --unsafe does: only for files you trust."""
    if isinstance(run_dir, Run):
        return run_dir
    return Run(run_dir, unsafe=unsafe)


def compare(runs, sort: str | None = None, *, plot: str | Path | None = None) -> pd.DataFrame:
    """One row per run (`imgclf compare`): ``runs`` are run directories, folders holding runs,
    or Runs. A run that is not finished has empty metric cells and a warning (warnings.warn);
    ``plot`` draws the validation curves into a PNG."""
    items = runs if isinstance(runs, list | tuple) else [runs]
    paths = [r.path if isinstance(r, Run) else r for r in items]
    table = table_of(paths, sort=sort, plot=str(plot) if plot else None, warn=_warn)
    return table.reset_index(drop=True)


def _warn(text: str) -> None:
    warnings.warn(text.removeprefix("warning: "), stacklevel=2)


@dataclass
class Evaluation:
    """What `Run.evaluate` wrote: the folder RUN_DIR/eval/NAME/ and its metrics.json."""

    path: Path
    metrics: dict


class Run:
    """A run directory, read from its files as they are when asked (a run still training
    shows its history so far); the model loads on first use."""

    def __init__(self, path: str | Path, unsafe: bool = False):
        saved = open_run(path, need_model=False)
        self.path: Path = saved.path
        self.class_names: list[str] = saved.class_names
        self.config: Config | None = saved.cfg  # None for an ensemble, which has no config.yaml
        self.unsafe = unsafe
        self._predictor: Predictor | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> dict:
        """run.json ({} when there is none)."""
        return read_manifest(self.path / MANIFEST) if (self.path / MANIFEST).exists() else {}

    @property
    def status(self) -> str:
        return live_status(self.manifest)

    @property
    def metrics(self) -> dict:
        """metrics.json, one object per split ({"val": {"accuracy": ...}, "test": ...}); {} before
        the run has finished."""
        path = self.path / "metrics.json"
        return read_json(path) if path.exists() else {}

    @property
    def cv(self) -> dict | None:
        """A k-fold run's cv.json: {"folds": K, "mean": {split: {metric: ...}}, "std": ...}; None
        for any other run (its fold runs are its folds.csv's ``run`` column, inside it)."""
        path = self.path / CV
        return read_json(path) if path.exists() else None

    @property
    def history(self) -> pd.DataFrame:
        """history.csv: one row per finished epoch (empty before the first)."""
        path = self.path / "history.csv"
        try:
            return pd.read_csv(path) if path.exists() else pd.DataFrame()
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    @property
    def model(self):
        """model.keras, the inference model (raw 0..255 pixels in, probabilities out)."""
        return self._loaded().model

    def _loaded(self) -> Predictor:
        if self._predictor is None:
            self._predictor = load_predictor(self.path, unsafe=self.unsafe)
        return self._predictor

    def predict(self, x, *, tta: str | None = None, batch_size: int = 64) -> pd.DataFrame:
        """Class probabilities of ``x``: an image file, a folder (recursive), a list of files,
        a NumPy array of raw 0..255 pixels (N x H x W x C, or one H x W x C or H x W image)
        or a list of such images. Files are decoded and arrays resized as training's data
        pipeline does. One row per image: ``file`` (relative to a folder) or ``index``,
        ``pred_label``, ``confidence``, one ``prob_<class>`` column per class, and for files
        ``error`` (a file that does not decode: its row has no prediction)."""
        check_tta(tta)
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1. Received: batch_size={batch_size}")
        pred = self._loaded()
        if _is_arrays(x):
            probs = [batch_probs(pred.model, batch, tta) for batch in _array_batches(x, pred, batch_size)]
            probs = np.concatenate(probs) if probs else np.zeros((0, len(pred.class_names)))
            return _frame(pred.class_names, "index", list(range(len(probs))), probs)
        return _file_frame(pred, x, tta, batch_size)

    def evaluate(self, data: str | Path | None = None, split: str | None = None, tta: str | None = None,
                 name: str | None = None, *, echo=print) -> Evaluation:
        """Recompute the numbers from model.keras (`imgclf evaluate`) on the run's own ``split``
        (default test if there is one, else val), or on ``data`` (a folder of class folders, or
        the run's array source at that path); written to RUN_DIR/eval/NAME/."""
        out = evaluate_run(self.path, data=str(data) if data is not None else None, split=split, tta=tta,
                           name=name, unsafe=self.unsafe, echo=echo)
        return Evaluation(out, read_json(out / "metrics.json"))

    def export(self, format: str | list[str] = "saved_model", *, quantize: str | None = None,
               out: str | Path | None = None, force: bool = False, echo=print) -> Path:
        """Export the model (`imgclf export`): saved_model, tflite, onnx, or a list of them;
        ``quantize`` float16 or int8 (tflite and onnx). Each file is checked against
        model.keras on the run's own images; returns the folder (default RUN_DIR/export)."""
        formats = [format] if isinstance(format, str) else list(format)
        return export_run(self.path, formats=formats, quantize=quantize, out=out, force=force,
                          unsafe=self.unsafe, echo=echo)

    def __repr__(self) -> str:
        model = self.manifest.get("model") or (self.config.model.name if self.config else None)
        val = self.metrics.get("val", {}).get("accuracy")
        score = f", val_accuracy={val:.4f}" if isinstance(val, float) else ""
        return f"Run({str(self.path)!r}, status={self.status}, model={model}{score})"

    def _repr_html_(self) -> str:
        figures = [(self.path / "curves.png", "learning curves"),
                   (self.path / "confusion_matrix.png", "confusion matrix")]
        subtitle = run_subtitle(self.manifest, self.config, self.status)
        return summary(self.name, subtitle, self.metrics, figures)


def _frame(class_names: list[str], id_column: str, ids: list, probs: np.ndarray,
           errors: list[str] | None = None) -> pd.DataFrame:
    """The rows of Run.predict; a row of NaN probabilities (a file that failed) has no label."""
    done = ~np.isnan(probs).any(axis=1)
    labels = np.array(class_names, dtype=object)[np.nan_to_num(probs, nan=-1.0).argmax(axis=1)]
    frame = pd.DataFrame({id_column: ids, "pred_label": np.where(done, labels, None),
                          "confidence": np.where(done, np.nan_to_num(probs).max(axis=1, initial=0), np.nan)})
    frame[prob_columns(class_names)] = probs
    if errors is not None:
        frame["error"] = errors
    return frame


def _file_frame(pred: Predictor, x, tta: str | None, batch_size: int) -> pd.DataFrame:
    """Rows for a file, a folder or a list of files, through predict's own stream."""
    if isinstance(x, str | Path):
        files, base = list_inputs(x)
        names = None  # paths relative to the folder, as `imgclf predict` writes them
    else:
        x = list(x)
        given = [Path(p).expanduser() for p in x]
        for path in given:
            if path.is_dir():
                raise DataError(f"a list of inputs holds image files; give a folder alone. Received: {path}")
            if not path.is_file():
                raise DataError(f"input not found: {path}")
        files = [p.absolute() for p in given]
        base = Path(os.path.commonpath(files)) if files else Path()
        names = [str(p) for p in x]  # the paths as given
    ids, probs, errors = [], [], []
    nan = np.full(len(pred.class_names), np.nan)
    for i, (rel, row, why) in enumerate(iter_probs(pred, files, base, batch_size, tta, warn=_warn)):
        ids.append(rel if names is None else names[i])
        probs.append(nan if row is None else row)
        errors.append(why)
    return _frame(pred.class_names, "file", ids, np.array(probs).reshape(len(ids), len(nan)), errors)


def _is_arrays(x) -> bool:
    if isinstance(x, np.ndarray):
        return True
    return isinstance(x, list | tuple) and len(x) > 0 and all(isinstance(a, np.ndarray) for a in x)


def _as_batch(a: np.ndarray, one: bool) -> np.ndarray:
    """``a`` as N x H x W x C: ``one`` image (H x W x C, or H x W grey) or a batch."""
    shape = tuple(a.shape)
    if one and a.ndim == 2:
        a = a[..., None]
    if one and a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or 0 in a.shape[1:]:
        raise DataError(f"expected images as an array N x H x W x C (or one H x W x C or H x W image) "
                        f"with 1 or 3 channels. Received: shape {shape}")
    if a.dtype.kind == "f" and a.size and float(np.nanmax(a)) <= 1.0:
        _warn("these images lie within 0..1; predict takes raw 0..255 pixels, as image files hold")
    return a


def _array_batches(x, pred: Predictor, batch_size: int):
    """Model-ready batches of ``x`` (an array, or a list of single images), each image resized
    and given the model's channels as an array source is in the data pipeline."""
    size, want = pred.image_size, pred.channels
    if isinstance(x, np.ndarray):
        images = _as_batch(x, one=x.ndim < 4)
        for start in range(0, len(images), batch_size):
            yield model_input(images[start:start + batch_size], size, images.shape[-1], want)
        return
    images = [_as_batch(np.asarray(a), one=True) for a in x]
    for a in images:
        if len(a) != 1:
            raise DataError(f"a list of arrays holds single images (H x W x C). "
                            f"Received: shape {a.shape[1:]}")
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield np.concatenate([model_input(a, size, a.shape[-1], want) for a in chunk])
