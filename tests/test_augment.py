"""The augmentation stack: every step, in the model and in the pipeline, and MixUp/CutMix."""

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from conftest import FAST
from imgclf.cli import app
from imgclf.config import AUGMENT_STEPS, ModelConfig, load_config
from imgclf.data.augment import MIXERS, augment_dataset, cutmix, mixup
from imgclf.data.pipeline import make_dataset
from imgclf.errors import ConfigError
from imgclf.layers import augmentation_layers
from imgclf.models import ModelSpec, create_model
from imgclf.training.setup import build_model, datasets, prepare

PER_IMAGE = sorted(n for n in AUGMENT_STEPS if n not in MIXERS)
runner = CliRunner()


def step(name, **params):
    return AUGMENT_STEPS[name](name=name, **params)


def batch(n=16, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, channels)).astype("float32")


def tiny_model(steps, channels=3):
    cfg = ModelConfig(filters=[4], dense_units=4)
    return create_model("simple_cnn", ModelSpec((16, 16, channels), 3, cfg, tuple(steps)))


def is_augmentation(layer):
    return layer.__class__.__name__ not in ("InputLayer",) and layer.name != "rescale" and (
        layer.__module__.startswith("keras.src.layers.preprocessing.image_preprocessing")
        or layer.__module__ == "imgclf.layers"
    )


# ------------------------------------------------------------------ per-image steps
@pytest.mark.parametrize("name", PER_IMAGE)
@pytest.mark.parametrize("channels", [3, 1])
def test_every_step_changes_a_training_batch_and_keeps_shape_dtype_range(name, channels):
    if name == "color_jitter" and channels == 1:
        params = {"saturation": 0.0, "hue": 0.0}  # saturation and hue need RGB
    else:
        params = {}
    keras.utils.set_random_seed(1)
    (layer,) = augmentation_layers([step(name, **params)])
    x = batch(channels=channels)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 255.0
    assert not np.allclose(y, x)
    assert np.array_equal(np.asarray(layer(x, training=False)), x)


@pytest.mark.parametrize("name", PER_IMAGE)
def test_model_output_at_inference_equals_the_model_without_augmentation(name):
    keras.utils.set_random_seed(0)
    augmented = tiny_model([step(name)])
    plain = tiny_model([])
    assert any(is_augmentation(la) for la in augmented.layers)
    assert not any(is_augmentation(la) for la in plain.layers)
    weighted = [la for la in augmented.layers if la.weights and not is_augmentation(la)]
    for src, dst in zip(weighted, [la for la in plain.layers if la.weights], strict=True):
        dst.set_weights(src.get_weights())
    x = batch(8)
    expected = plain.predict(x, verbose=0)
    np.testing.assert_allclose(augmented.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(augmented(x, training=False), expected, rtol=1e-5, atol=1e-6)


def test_model_with_every_in_model_step_round_trips_through_model_keras(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model([step(n) for n in PER_IMAGE])
    kinds = [la.__class__.__name__ for la in model.layers if is_augmentation(la)]
    assert len(kinds) == len(PER_IMAGE)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert [la.__class__.__name__ for la in loaded.layers if is_augmentation(la)] == kinds
    x = batch(8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    stem = keras.Model(loaded.input, loaded.get_layer("rescale").output)
    assert not np.allclose(stem(x, training=True), x / 255.0)  # still augments in training


# ------------------------------------------------------------------ MixUp / CutMix
def constant_batch(n=12, classes=12, size=16):
    """Image i is the constant value values[i]; its label is one-hot class i."""
    values = np.linspace(10, 240, n).astype("float32")
    images = np.broadcast_to(values[:, None, None, None], (n, size, size, 3)).copy()
    return images, np.eye(classes, dtype="float32")[np.arange(n)], values


@pytest.mark.parametrize("fn", [mixup, cutmix])
@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixed_labels_are_convex_and_match_the_mixed_pixels(fn, alpha):
    images, labels, values = constant_batch()
    mixed, mixed_labels = (t.numpy() for t in fn(tf.constant(images), tf.constant(labels), alpha,
                                                 tf.constant([3, 4], tf.int64)))
    assert mixed.shape == images.shape and mixed_labels.shape == labels.shape
    assert (mixed_labels >= 0).all() and (mixed_labels <= 1).all()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    assert ((mixed_labels > 1e-6).sum(axis=1) <= 2).all()  # each image mixes at most two
    # the label weights are the share of each source image in the mixed pixels
    np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), mixed_labels @ values, rtol=1e-4)
    assert not np.allclose(mixed, images)
    if fn is cutmix:  # pasted, not blended: every pixel is one of the two sources
        for img, lab in zip(mixed, mixed_labels, strict=True):
            assert set(np.unique(img)) <= set(values[lab > 1e-6])


def test_mixup_and_cutmix_run_on_every_training_batch_of_the_pipeline():
    images, labels, values = constant_batch(24, 24)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    mixed = augment_dataset(ds, [step("mixup", alpha=1.0), step("cutmix")], seed=5)
    epochs = [[(x.numpy(), y.numpy()) for x, y in mixed] for _ in range(2)]
    for x, y in epochs[0] + epochs[1]:
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), y @ values, rtol=1e-4)
    assert any(not np.allclose(a[1], b[1]) for a, b in zip(*epochs, strict=True))  # fresh each epoch
    once = [(x.numpy(), y.numpy()) for x, y in augment_dataset(ds, [step("mixup")], seed=5)]
    again = [(x.numpy(), y.numpy()) for x, y in augment_dataset(ds, [step("mixup")], seed=5)]
    for (x1, y1), (x2, y2) in zip(once, again, strict=True):  # the seed fixes the draws
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


# ------------------------------------------------------------------ the trainer's datasets
def digits_prep(*overrides):
    cfg = load_config(None, ["data.test_split=0.2", "data.batch_size=64", *overrides])
    return prepare(cfg)


def first_batches(ds, n=3):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_pipeline_mode_augments_the_training_split_only():
    steps = "augment=[{name: flip, mode: horizontal_and_vertical}, {name: crop, padding: 2}]"
    keras.utils.set_random_seed(0)
    plain = datasets(digits_prep())
    keras.utils.set_random_seed(0)
    aug = datasets(digits_prep(steps, "augment_on=pipeline"))
    train_plain, train_aug = first_batches(plain["train"]), first_batches(aug["train"])
    for (xp, yp), (xa, ya) in zip(train_plain, train_aug, strict=True):
        np.testing.assert_array_equal(ya, yp)  # same shuffle, labels untouched
        assert xa.shape == xp.shape and xa.dtype == xp.dtype
        assert not np.allclose(xa, xp)
    for split in ("val", "test"):
        for (xp, yp), (xa, ya) in zip(first_batches(plain[split], 100), first_batches(aug[split], 100),
                                      strict=True):
            np.testing.assert_array_equal(xa, xp)
            np.testing.assert_array_equal(ya, yp)


def test_model_mode_puts_per_image_steps_in_the_model_and_mixers_in_the_pipeline():
    overrides = ("augment=[{name: flip}, {name: mixup}]",)
    prep = digits_prep(*overrides)
    model = build_model(prep)
    assert [la.__class__.__name__ for la in model.layers if is_augmentation(la)] == ["RandomFlip"]
    (x, y), = first_batches(datasets(prep)["train"], 1)
    assert ((y > 1e-6).sum(axis=1) == 2).any()  # mixed labels
    (xv, yv), = first_batches(datasets(prep)["val"], 1)
    assert set(np.unique(yv)) == {0.0, 1.0}
    pipeline = build_model(digits_prep(*overrides, "augment_on=pipeline"))
    assert not any(is_augmentation(la) for la in pipeline.layers)


def test_make_dataset_refuses_augmentation_outside_training():
    prep = digits_prep()
    with pytest.raises(ValueError, match="training"):
        make_dataset(prep.bundle.splits["val"], image_size=(8, 8), channels=1, num_classes=10,
                     batch_size=8, training=False, seed=0, augment=(step("flip"),))


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("augment=[{name: blur}]", "augment.0.name: unknown augmentation step 'blur'"),
        ("augment=[{name: mixp}]", "did you mean mixup?"),
        ("augment=[{name: flip}, {name: crop, padding: 0}]", "augment.1.padding"),
        ("augment=[{name: random_resized_crop, scale: [0.9, 0.2]}]", "augment.0.scale: must be [low, high]"),
        ("augment=[{name: erasing, probability: 2}]", "augment.0.probability"),
        ("augment=[{name: cutmix, alpa: 1}]", "unknown key augment.0.alpa (did you mean augment.0.alpha?)"),
        ("augment_on=gpu", "augment_on"),
    ],
)
def test_bad_augment_config_is_one_clear_line(override, fragment):
    result = runner.invoke(app, ["train", "--set", override, *[a for o in FAST for a in ("--set", o)]])
    assert result.exit_code == 2
    assert fragment in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["augment=[{name: color_jitter}]"], "saturation and hue need RGB"),
        (["augment=[{name: crop, padding: 8}]"], "augment.0.padding: reflection padding"),
    ],
)
def test_steps_that_do_not_fit_the_images_fail_before_training(tmp_path, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):  # digits are 8x8, one channel
        build_model(digits_prep(*overrides))
    result = runner.invoke(app, ["train", *[a for o in overrides for a in ("--set", o)],
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and fragment in result.output
    assert not (tmp_path / "runs").exists()  # no half-made run directory


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize(
    "overrides",
    [
        ["augment_on=pipeline", "augment=[{name: flip}, {name: random_resized_crop}, {name: erasing}]"],
        ["augment=[{name: crop, padding: 2}, {name: mixup}, {name: cutmix}]"],
    ],
    ids=["pipeline", "mixup-cutmix"],
)
def test_train_with_augmentation_writes_a_run(folder_data, tmp_path, overrides):
    args = [f"data.path={folder_data}", "data.source=folder", "data.image_size=[16,16]", *FAST, *overrides]
    result = runner.invoke(app, ["train", *[a for o in args for a in ("--set", o)],
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    written = {p.name for p in run.iterdir()}
    assert {"model.keras", "history.csv", "predictions.csv", "metrics.json"} <= written
    saved, asked = load_config(run / "config.yaml"), load_config(None, args)
    assert (saved.augment, saved.augment_on) == (asked.augment, asked.augment_on)
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    # model.keras is the inference model: whether the steps ran in the model or the pipeline,
    # it holds none of them
    model = keras.models.load_model(run / "model.keras")
    assert [la.__class__.__name__ for la in model.layers if is_augmentation(la)] == []
