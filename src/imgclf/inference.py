"""Inference, the one path that train, evaluate and predict share: load a saved model safely,
turn images into class probabilities (with or without test-time augmentation), and write the
rows of a predictions.csv.

Loading needs only imgclf.layers, where the layers a saved model names are registered: the
model loads with compile=False, so training's optimizers and schedules are never needed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import imgclf.layers  # noqa: F401  (registers our layers: a saved model names them)
from imgclf.errors import ConfigError, ModelError, first_line
from imgclf.runs import atomic_path, prob_columns

TTA_MODES = ("flip",)


def check_tta(tta: str | None) -> None:
    if tta is not None and tta not in TTA_MODES:
        raise ConfigError(f"Unknown `--tta` mode. Received: tta={tta} (known: {', '.join(TTA_MODES)})")


def load_model(path: str | Path, unsafe: bool = False) -> keras.Model:
    """A saved .keras model, without its optimizer. Keras' safe mode refuses a file that holds
    Python code (a Lambda layer's bytecode) unless ``unsafe`` (the CLI's --unsafe) says the
    file is trusted."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ModelError(f"cannot load {path}: not a .keras file (a zip archive)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        if "safe_mode" in str(exc) or "unsafe_deserialization" in str(exc):
            raise ModelError(f"refusing to load {path}: it holds Python code (a Lambda layer) that would "
                             "run as it loads; if you trust where it came from, pass --unsafe") from None
        raise ModelError(f"cannot load {path}: {first_line(exc)[:300]}") from None


def _tta_probs(predict, images, tta: str | None, flip) -> np.ndarray:
    """The one TTA rule: the mean of ``predict``'s probabilities over the views (the images,
    and with ``tta="flip"`` their left-right mirror, made by ``flip``), in float64, each row
    renormalised to sum to 1."""
    views = [images, flip(images)] if tta == "flip" else [images]
    probs = np.mean([np.asarray(predict(v), dtype=np.float64) for v in views], axis=0)
    return probs / probs.sum(axis=1, keepdims=True)


def batch_probs(model, images, tta: str | None = None) -> np.ndarray:
    """Probabilities of one batch of images (N x H x W x C, a tensor or an array)."""
    return _tta_probs(model.predict_on_batch, images, tta, tf.image.flip_left_right)


def predict_probs(model, images: tf.data.Dataset, tta: str | None = None) -> np.ndarray:
    """Probabilities of a dataset of image batches, or of (images, labels) batches, in its
    order. It goes through Keras' own predict loop, which spreads the batches over the
    replicas of the model's distribution strategy (predict_on_batch would not)."""
    if isinstance(images.element_spec, tuple):
        images = images.map(lambda x, y: x)
    return _tta_probs(lambda ds: model.predict(ds, verbose=0), images, tta,
                      lambda ds: ds.map(tf.image.flip_left_right))


def write_prediction_rows(path: Path, class_names: list[str], id_column: str,
                          splits: Mapping[str, tuple[list, np.ndarray, np.ndarray]]) -> None:
    """predictions.csv: for each split in order, given as ``{split: (ids, y, probs)}`` (item
    ids, int labels, probabilities), one row per item: split, its id under ``id_column``
    ("file" or "index"), true and predicted class, and one probability column per class."""
    names = np.array(class_names)
    frames = []
    for split, (ids, y, probs) in splits.items():
        frame = pd.DataFrame({"split": split, id_column: ids, "true_label": names[y],
                              "pred_label": names[probs.argmax(axis=1)]})
        frame[prob_columns(class_names)] = probs
        frames.append(frame)
    with atomic_path(path) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, float_format="%.10g")
