"""Losses and class weights: focal and label smoothing by hand, sklearn's balanced weights, fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from imgclf.training.losses import class_weights, make_loss

K = 4


def probs_and_targets(n=16, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, K))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.eye(K)[rng.integers(0, K, n)]
    return p.astype("float32"), y.astype("float32")


def value(loss, y, p) -> float:
    return float(keras.ops.convert_to_numpy(loss(y, p)))


def test_crossentropy_matches_numpy():
    p, y = probs_and_targets()
    want = -(y * np.log(p)).sum(axis=1).mean()
    assert value(make_loss("crossentropy"), y, p) == pytest.approx(want, rel=1e-5)


def test_label_smoothing_is_crossentropy_against_smoothed_targets():
    p, y = probs_and_targets(seed=1)
    ls = 0.2
    smoothed = y * (1 - ls) + ls / K
    want = -(smoothed * np.log(p)).sum(axis=1).mean()
    got = value(make_loss("crossentropy", label_smoothing=ls), y, p)
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(value(make_loss("crossentropy"), y, p), rel=1e-3)


@pytest.mark.parametrize("alpha", [0.25, 1.0])
def test_focal_with_gamma_0_is_alpha_times_crossentropy(alpha):
    p, y = probs_and_targets(seed=2)
    ce = value(make_loss("crossentropy"), y, p)
    assert value(make_loss("focal", alpha=alpha, gamma=0.0), y, p) == pytest.approx(alpha * ce, rel=1e-5)


def test_focal_down_weights_easy_examples():
    p, y = probs_and_targets(seed=3)
    alpha, gamma = 0.25, 2.0
    want = (-alpha * (1 - p) ** gamma * y * np.log(p)).sum(axis=1).mean()
    assert value(make_loss("focal", alpha=alpha, gamma=gamma), y, p) == pytest.approx(want, rel=1e-5)


def test_bad_loss_settings():
    with pytest.raises(ValueError, match=r"Unknown `loss`.*Received: name='mse'"):
        make_loss("mse")
    with pytest.raises(ValueError, match=r"Received: label_smoothing=1.0"):
        make_loss("crossentropy", label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"Received: gamma=-1"):
        make_loss("focal", gamma=-1)


def test_balanced_weights_match_sklearn():
    y = np.array([0] * 10 + [1] * 3 + [2] * 1 + [3] * 6)
    got = class_weights(y, ["a", "b", "c", "d"], "balanced")
    want = compute_class_weight("balanced", classes=np.arange(K), y=y)
    assert list(got) == [0, 1, 2, 3]
    np.testing.assert_allclose([got[c] for c in range(K)], want)


def test_a_class_absent_from_the_labels_weighs_one():
    got = class_weights(np.array([0, 0, 1]), ["a", "b", "c"], "balanced")
    assert got == pytest.approx({0: 3 / 6, 1: 3 / 3, 2: 1.0})


def test_weights_by_class_name():
    got = class_weights(np.array([0, 1, 2]), ["cat", "dog", "owl"], {"dog": 3.0})
    assert got == {0: 1.0, 1: 3.0, 2: 1.0}
    assert class_weights(np.array([0, 1]), ["0", "1"], {1: 2.5}) == {0: 1.0, 1: 2.5}  # YAML int keys
    with pytest.raises(ValueError, match=r"known: cat, dog, owl.*Received: class='cow'"):
        class_weights(np.array([0]), ["cat", "dog", "owl"], {"cow": 2.0})
    with pytest.raises(ValueError, match=r"Unknown `class_weight`.*Received: class_weight='balance'"):
        class_weights(np.array([0]), ["cat"], "balance")
    with pytest.raises(ValueError, match=r"Received: class_weight.dog=-1"):
        class_weights(np.array([0]), ["cat", "dog"], {"dog": -1})


def test_class_weight_in_fit_weighs_one_hot_targets():
    """fit(class_weight=...) on a tf.data dataset of one-hot targets: the reported loss is the
    sample-weighted loss (sum of w_i * loss_i over the batch size), as evaluate with sample weights."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 3)).astype("float32")
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3])
    y = np.eye(K, dtype="float32")[labels]
    weights = class_weights(labels, ["a", "b", "c", "d"], "balanced")
    sample_w = np.array([weights[c] for c in labels], "float32")

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(K, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.0), make_loss("crossentropy"))  # rate 0: the weights stay
    per_sample = -np.log((model.predict(x, verbose=0) * y).sum(axis=1))
    weighted = float((sample_w * per_sample).sum() / len(x))
    plain = float(per_sample.mean())
    assert weighted != pytest.approx(plain, rel=1e-2)

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
    fitted = model.fit(data, class_weight=weights, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    assert fitted == pytest.approx(weighted, rel=1e-5)
    assert model.fit(data, epochs=1, shuffle=False, verbose=0).history["loss"][0] == pytest.approx(
        plain, rel=1e-5
    )
    evaluated = model.evaluate(x, y, sample_weight=sample_w, batch_size=12, verbose=0)
    assert evaluated == pytest.approx(weighted, rel=1e-5)
