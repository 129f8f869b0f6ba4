"""fastnet and its pieces: the patch-whitening layer set from data, the identity (Dirac)
initialiser, and a run that adapts, trains, saves and loads."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from tests.conftest import train_cli, train_run

from imgclf.layers import Dirac, PatchWhitening


def correlated_images(n=64, size=12, seed=0):
    """Smooth, colour-correlated images: neighbouring pixels and channels far from independent."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, size // 2, size // 2, 1)).repeat(2, axis=1).repeat(2, axis=2)
    tint = rng.normal(size=(n, 1, 1, 3)) * 0.3
    return (base + tint + 0.1 * rng.normal(size=(n, size, size, 3))).astype(np.float32)


def test_patch_whitening_makes_patches_uncorrelated():
    images = correlated_images()
    layer = PatchWhitening(2, epsilon=1e-6)
    layer.adapt(images)
    out = keras.ops.convert_to_numpy(layer(images))
    assert out.shape == (64, 11, 11, 24)
    half = out[..., :12].reshape(-1, 12)
    cov = np.cov(half, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(12), atol=0.05)  # whitened: unit variance, no correlation
    np.testing.assert_allclose(half.mean(axis=0), 0, atol=0.05)  # the bias centres them
    np.testing.assert_allclose(out[..., 12:], -out[..., :12], atol=1e-4)  # each filter and its negative
    before = correlated_images(seed=1).reshape(-1, 3)
    assert abs(np.corrcoef(before, rowvar=False)[0, 1]) > 0.5  # the input was correlated


def test_patch_whitening_is_the_same_in_any_input_units():
    """0..1 pixels or standardised ones: epsilon counts in the patches' variance, so the faint
    directions are kept alike (an absolute one damps them the more, the smaller the units)."""
    images = correlated_images()
    standard, unit = PatchWhitening(2), PatchWhitening(2)
    standard.adapt(images)
    unit.adapt(images / 255.0)
    def lengths(layer, x):  # each patch's whitened length: free of the eigenvectors' sign and order
        return np.linalg.norm(keras.ops.convert_to_numpy(layer(x))[..., :12], axis=-1)

    np.testing.assert_allclose(lengths(unit, images / 255.0), lengths(standard, images), rtol=1e-3)


def test_patch_whitening_kernel_does_not_train_and_saves(tmp_path):
    inputs = keras.Input((12, 12, 3))
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(PatchWhitening(2)(inputs))))
    white = model.layers[1]
    white.adapt(correlated_images())
    assert [w.name for w in model.trainable_weights if w.path.startswith(white.name)] == ["bias"]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = correlated_images(4, seed=2)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


def test_dirac_passes_channels_through():
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 5)).astype(np.float32)
    conv = layers.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer=Dirac(seed=1))
    y = keras.ops.convert_to_numpy(conv(x))
    np.testing.assert_allclose(y[..., :5], x, atol=1e-6)  # the first in-channels filters: identity
    assert np.abs(y[..., 5:]).mean() > 0.01  # the rest random
    fewer = layers.Conv2D(3, 3, padding="same", use_bias=False, kernel_initializer=Dirac())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fewer(x)), x[..., :3], atol=1e-6)


def tiny_fastnet(folder: Path) -> list[str]:
    """fastnet at 8-16 filters on a folder of 16 px images."""
    return ["model.name=fastnet", "model.filters=[8,16,16]", "model.dense_units=0", "data.source=folder",
            f"data.path={folder}", "data.image_size=[16,16]"]


def test_fastnet_run_adapts_trains_and_loads(tmp_path, folder_data):
    run = train_run(tmp_path, *tiny_fastnet(folder_data), "train.optimizer.name=sgd",
                    "train.optimizer.lr=0.2", "train.optimizer.momentum=0.85",
                    "train.optimizer.nesterov=true", "train.schedule.name=one_cycle",
                    "train.schedule.anneal_strategy=linear", "train.epochs=2")
    model = keras.saving.load_model(run / "model.keras")
    white = model.get_layer("whiten_conv")
    kernel = white.kernel.numpy().reshape(12, 24)[:, :12]
    # adapted: the filters are the scaled eigenvectors of the patch covariance, so orthogonal
    gram = kernel.T @ kernel
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-3 * np.abs(gram).max())
    assert np.diag(gram).std() > 0  # scaled by 1/sqrt(eigenvalue): not the initial random kernel


@pytest.mark.parametrize("value", [None, 120])
def test_noise_erasing_before_the_whitening_layer_warns_once(tmp_path, folder_data, value):
    erasing = f"{{name: erasing, probability: 1.0, value: {'null' if value is None else value}}}"
    result = train_cli(tmp_path, *tiny_fastnet(folder_data), "train.epochs=1", f"augment=[{erasing}]")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "erasing without a value" in line]
    # noise boxes are what the whitening layer magnifies; a grey box passes quietly
    assert len(warned) == (1 if value is None else 0), result.output
    if value is None:
        assert warned[0].startswith("warning: augment: erasing") and "value: 120" in warned[0]
