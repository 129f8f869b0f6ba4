"""Losses by name and class weights from a config value.

The models end in softmax and the pipeline yields one-hot targets (so MixUp/CutMix can mix
them), hence the categorical losses on probabilities. Keras' `fit(class_weight=...)` accepts
one-hot targets: it weighs each sample by the class of its argmax.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np

LOSSES = ("crossentropy", "focal")


def _number(key: str, value, low: float, high: float | None = None, *, high_open=False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value >= low and (high is None or (value < high if high_open else value <= high))
    if not ok:
        upper = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ValueError(f"`{key}` must be a number >= {low}{upper}. Received: {key}={value!r}")
    return float(value)


def make_loss(name: str, *, label_smoothing: float = 0.0, alpha: float = 0.25, gamma: float = 2.0):
    """A keras loss on one-hot targets and softmax probabilities.

    crossentropy: CategoricalCrossentropy(label_smoothing).
    focal: CategoricalFocalCrossentropy (Lin et al. 2017): -alpha * (1 - p)^gamma * log(p) on
    the (smoothed) target class; gamma=0 gives alpha times the cross-entropy.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown `loss` (known: {', '.join(LOSSES)}). Received: name={name!r}")
    ls = _number("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
    if name == "crossentropy":
        return keras.losses.CategoricalCrossentropy(label_smoothing=ls)
    return keras.losses.CategoricalFocalCrossentropy(
        alpha=_number("alpha", alpha, 0.0, 1.0),
        gamma=_number("gamma", gamma, 0.0),
        label_smoothing=ls,
    )


def class_weights(y: np.ndarray, class_names: list[str], spec) -> dict[int, float]:
    """Weights for every class index 0..K-1 (Keras' `class_weight` needs them all for tf.data).

    spec "balanced": n_samples / (n_classes * count_c), scikit-learn's definition; a class with
    no sample in `y` gets 1.0 (it never weighs anything). spec a dict: class name -> weight,
    classes left out weigh 1.0.
    """
    k = len(class_names)
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(
                f"Unknown `class_weight` (use 'balanced' or a mapping class name -> weight). "
                f"Received: class_weight={spec!r}"
            )
        y = np.asarray(y).astype(int).ravel()
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"class_weight: labels must lie in 0..{k - 1}. Received: label={y.max()!r}")
        counts = np.bincount(y, minlength=k)
        return {c: (y.size / (k * int(n)) if n else 1.0) for c, n in enumerate(counts)}
    if not isinstance(spec, Mapping):
        raise ValueError(
            "`class_weight` must be 'balanced' or a mapping class name -> weight. "
            f"Received: class_weight={spec!r}"
        )
    index = {name: i for i, name in enumerate(class_names)}
    weights = dict.fromkeys(range(k), 1.0)
    for name, weight in spec.items():
        if name not in index and str(name) in index:  # YAML reads a class named 3 as the int 3
            name = str(name)
        if name not in index:
            raise ValueError(
                f"Unknown class in `class_weight` (known: {', '.join(class_names)}). Received: class={name!r}"
            )
        weights[index[name]] = _number(f"class_weight.{name}", weight, 0.0)
    return weights
