"""Inference, the one path that train, evaluate and predict share: load a saved model safely,
turn images into class probabilities (with or without test-time augmentation), and write the
rows of a predictions.csv.

A run's model.keras is its inference model (`inference_model`): the trained weights in Keras'
own layers only, without the augmentation layers and without an optimizer, so plain
`keras.models.load_model` reads it in a Python without imgclf, and `model(x)` is
deterministic. Loading older files needs imgclf.layers, where the layers they name are
registered: a model loads with compile=False, so training's optimizers and schedules are
never needed.
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
from imgclf.layers import AUGMENTATION_LAYERS, CaffePreprocess, PatchWhitening, caffe_preprocess_conv
from imgclf.runs import atomic_path, prob_columns

TTA_MODES = ("flip", "flip_shift")


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


def inference_model(model: keras.Model, float32: bool = False) -> keras.Model:
    """``model`` as it serves: the augmentation layers left out, imgclf's CaffePreprocess and
    PatchWhitening replaced by the same arithmetic in Keras' layers (and our initialisers by
    Keras' own), no optimizer, the same weights (copied by
    layer name). With ``float32``, a mixed-precision model computes in float32 (ONNX and
    TFLite converters take float32 models)."""
    def call(layer, *args, **kwargs):
        if isinstance(layer, AUGMENTATION_LAYERS):
            return args[0]
        return layer(*args, **kwargs)

    def clone(layer):
        config = layer.get_config()
        if float32 and "dtype" in config:
            config["dtype"] = "float32"
        if isinstance(layer, CaffePreprocess):
            return caffe_preprocess_conv(layer.name, config.get("dtype"))
        if isinstance(layer, PatchWhitening):  # a plain conv; its kernel and bias are copied by name
            return keras.layers.Conv2D(layer.kernel.shape[-1], layer.kernel_size, padding="valid",
                                       name=layer.name, dtype=config.get("dtype"))
        for key, value in config.items():  # our initialisers (Dirac): the weights are copied anyway
            if (key.endswith("_initializer") and isinstance(value, dict)
                    and str(value.get("registered_name")).startswith("imgclf>")):
                config[key] = "zeros"
        return layer.__class__.from_config(config)

    if isinstance(model, keras.Sequential):  # clone_model's call_function takes functional models
        inputs = x = keras.Input(model.input_shape[1:])
        for layer in model.layers:
            x = layer(x)
        model = keras.Model(inputs, x, name=model.name)
    cloned = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=float32)
    # the same layers in a model of their own: clone_model would carry over the compile config
    served = keras.Model(cloned.input, cloned.output, name=model.name)
    copy_weights(model, served)
    return served


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Every weight of ``source`` into the same-named layer of ``target`` (a layer that only
    one of them has, or that has no weights in ``source``, is left as it is)."""
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        twin = by_name.get(layer.name)
        if layer.weights and twin is not None and twin.weights:
            names = [w.name for w in layer.weights]
            theirs = {w.name: w for w in twin.weights}
            if len(set(names)) == len(names) == len(theirs) and set(names) == set(theirs):
                for w in layer.weights:  # by name: a frozen kernel comes after the bias (PatchWhitening)
                    w.assign(theirs[w.name])
            else:
                layer.set_weights(twin.get_weights())


def save_inference_model(model: keras.Model, path: Path, served: keras.Model | None = None) -> keras.Model:
    """Save ``model``'s inference model at ``path`` (atomically); returns the inference model,
    which a later save of the same model may pass back as ``served`` to skip the rebuild."""
    if served is None:
        served = inference_model(model)
    else:
        copy_weights(model, served)
    with atomic_path(path) as tmp:
        served.save(tmp)
    return served


def _shift(images, d: int):
    """``images`` (N x H x W x C) moved ``d`` pixels down and right, the border reflected."""
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    return padded[:, 1 - d:1 - d + h, 1 - d:1 - d + w, :]


def tta_views(tta: str | None) -> list[tuple[float, object]]:
    """(weight, function of an image batch) for each view of ``tta``: flip_shift weighs the
    unshifted pair as much as the four shifted views together, as the fast CIFAR-10 recipes do."""
    if tta is None:
        return [(1.0, None)]
    pair = [None, tf.image.flip_left_right]
    if tta == "flip":
        return [(0.5, view) for view in pair]
    shifted = [lambda x, d=d, f=f: f(_shift(x, d)) if f else _shift(x, d) for d in (-1, 1) for f in pair]
    return [(0.25, view) for view in pair] + [(0.125, view) for view in shifted]


def _tta_probs(predict, images, tta: str | None, apply) -> np.ndarray:
    """The one TTA rule: the weighted mean of ``predict``'s probabilities over the views of
    ``tta`` (tta_views; ``apply(images, view)`` makes one), in float64, each row renormalised
    to sum to 1."""
    probs = sum(w * np.asarray(predict(images if view is None else apply(images, view)), dtype=np.float64)
                for w, view in tta_views(tta))
    return probs / probs.sum(axis=1, keepdims=True)


def batch_probs(model, images, tta: str | None = None) -> np.ndarray:
    """Probabilities of one batch of images (N x H x W x C, a tensor or an array)."""
    return _tta_probs(model.predict_on_batch, images, tta, lambda x, view: view(tf.convert_to_tensor(x)))


def predict_probs(model, images: tf.data.Dataset, tta: str | None = None) -> np.ndarray:
    """Probabilities of a dataset of image batches, or of (images, labels) batches, in its
    order. It goes through Keras' own predict loop, which spreads the batches over the
    replicas of the model's distribution strategy (predict_on_batch would not)."""
    if isinstance(images.element_spec, tuple):
        images = images.map(lambda x, y: x)
    return _tta_probs(lambda ds: model.predict(ds, verbose=0), images, tta, lambda ds, view: ds.map(view))


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
