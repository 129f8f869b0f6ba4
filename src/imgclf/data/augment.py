"""The augmentation stack: the config's `augment` steps as Keras layers, and MixUp/CutMix.

Per-image steps become Keras preprocessing layers. They run either inside the model, before
the rescaling (``augment_on: model``: on the accelerator, inactive at inference), or in the
training dataset's tf.data map on batches (``augment_on: pipeline``: on the CPU, in
parallel). Either way they see float32 images in 0..255 and return the same shape, dtype and
range. Where Keras has the layer it is used; ``RandomPadCrop``, ``RandomResizedCrop``,
``ClippedGaussianNoise`` and ``ClippedColorJitter`` are small layers of ours, registered so
that a saved ``model.keras`` loads without this package's help beyond importing it.

MixUp and CutMix mix labels as well as images, so they cannot live in the model: they always
run on one-hot training batches in the pipeline (``mix_batch``), whatever ``augment_on`` says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import layers, ops

from imgclf.config import AugmentStep
from imgclf.errors import ConfigError

VALUE_RANGE = (0.0, 255.0)
MIXERS = ("mixup", "cutmix")
PACKAGE = "imgclf"


# ------------------------------------------------------------------ custom layers
def _transform(a0, a2, b1, b2):
    """Per-image affine maps, output pixel -> input pixel: x_in = a0*x + a2, y_in = b1*y + b2."""
    zeros = ops.zeros_like(a0)
    return ops.stack([a0, zeros, a2, zeros, b1, b2, zeros, zeros], axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomPadCrop(layers.Layer):
    """Pad each image by reflection, then crop a random window of the original size
    (the CIFAR recipe: up to ``padding`` pixels of shift). Identity at inference."""

    def __init__(self, padding: int = 4, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        p = self.padding
        h, w = images.shape[1], images.shape[2]
        h = ops.shape(images)[1] if h is None else h
        w = ops.shape(images)[2] if w is None else w
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        batch = ops.shape(images)[0]
        shift = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
        shift = ops.cast(shift, "float32")
        ones = ops.ones_like(shift[:, 0])
        # integer shifts with nearest sampling: an exact crop of the padded image
        moved = ops.image.affine_transform(
            padded, _transform(ones, shift[:, 1], ones, shift[:, 0]), interpolation="nearest"
        )
        return ops.cast(moved[:, :h, :w, :], images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomResizedCrop(layers.Layer):
    """Crop a random region (area fraction in ``scale``, width/height in ``ratio``, drawn
    log-uniformly) and resize it back to the input size. Identity at inference."""

    def __init__(self, scale=(0.08, 1.0), ratio=(0.75, 1.333), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        batch = shape[0]
        h = ops.cast(shape[1], "float32")
        w = ops.cast(shape[2], "float32")
        area = keras.random.uniform((batch,), *self.scale, seed=self.seed_generator)
        log_ratio = keras.random.uniform(
            (batch,), math.log(self.ratio[0]), math.log(self.ratio[1]) + 1e-9, seed=self.seed_generator
        )
        ratio = ops.exp(log_ratio)
        # crop sides in pixels (width/height = ratio), capped at the image's sides
        crop_w = ops.minimum(ops.sqrt(area * h * w * ratio), w)
        crop_h = ops.minimum(ops.sqrt(area * h * w / ratio), h)
        corner = keras.random.uniform((batch, 2), 0.0, 1.0, seed=self.seed_generator)
        x0 = corner[:, 0] * (w - crop_w)
        y0 = corner[:, 1] * (h - crop_h)
        sx, sy = crop_w / w, crop_h / h
        # pixel centres: x_in + 0.5 = x0 + (x + 0.5) * sx
        transform = _transform(sx, x0 + 0.5 * sx - 0.5, sy, y0 + 0.5 * sy - 0.5)
        out = ops.image.affine_transform(
            ops.cast(images, "float32"), transform, interpolation="bilinear", fill_mode="nearest"
        )
        return ops.cast(ops.clip(out, *VALUE_RANGE), images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": list(self.scale), "ratio": list(self.ratio),
                "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClippedGaussianNoise(layers.Layer):
    """Add zero-mean Gaussian noise of ``stddev`` pixel values, clipped to 0..255 (Keras'
    GaussianNoise does not clip). Identity at inference."""

    def __init__(self, stddev: float = 10.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        noise = keras.random.normal(ops.shape(images), stddev=self.stddev, seed=self.seed_generator)
        out = ops.cast(images, "float32") + noise
        return ops.cast(ops.clip(out, *VALUE_RANGE), images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClippedColorJitter(layers.RandomColorJitter):
    """Keras' RandomColorJitter with its output clipped to ``value_range``: raising the
    saturation can push a pixel outside it."""

    def transform_images(self, images, transformation, training=True):
        images = super().transform_images(images, transformation, training=training)
        if training:
            images = self.backend.numpy.clip(images, self.value_range[0], self.value_range[1])
        return images


# ----------------------------------------------------------------- step -> layer
def _saturation_factor(s: float) -> tuple[float, float]:
    # Keras draws f and multiplies the saturation by f / (1 - f); a multiplier in
    # [1 - s, 1 + s] is f in [(1 - s) / (2 - s), (1 + s) / (2 + s)]
    return ((1 - s) / (2 - s), (1 + s) / (2 + s))


def step_layer(step: AugmentStep, seed: int | None = None) -> layers.Layer:
    """The Keras layer for one per-image step (not mixup/cutmix)."""
    name = step.name
    if name == "flip":
        return layers.RandomFlip(step.mode, seed=seed)
    if name == "rotation":
        return layers.RandomRotation(step.factor, fill_mode="reflect", seed=seed)
    if name == "zoom":
        return layers.RandomZoom(step.factor, fill_mode="reflect", seed=seed)
    if name == "translation":
        return layers.RandomTranslation(step.factor, step.factor, fill_mode="reflect", seed=seed)
    if name == "contrast":
        return layers.RandomContrast(step.factor, value_range=VALUE_RANGE, seed=seed)
    if name == "brightness":
        return layers.RandomBrightness(step.factor, value_range=VALUE_RANGE, seed=seed)
    if name == "crop":
        return RandomPadCrop(step.padding, seed=seed)
    if name == "random_resized_crop":
        return RandomResizedCrop(step.scale, step.ratio, seed=seed)
    if name == "gaussian_noise":
        return ClippedGaussianNoise(step.stddev, seed=seed)
    if name == "erasing":
        # a (p, p) range: Keras draws the probability from it, a single p would mean U(0, p)
        return layers.RandomErasing(factor=(step.probability, step.probability), scale=step.scale,
                                    fill_value=step.value, value_range=VALUE_RANGE, seed=seed)
    if name == "color_jitter":
        return ClippedColorJitter(
            value_range=VALUE_RANGE,
            brightness_factor=step.brightness or None,
            contrast_factor=step.contrast or None,
            saturation_factor=_saturation_factor(step.saturation) if step.saturation else None,
            hue_factor=2 * step.hue or None,  # Keras shifts the hue by up to factor / 2 of a turn
            seed=seed,
        )
    if name == "randaugment":
        return layers.RandAugment(value_range=VALUE_RANGE, num_ops=step.num_ops, factor=step.magnitude,
                                  seed=seed)
    raise ValueError(f"Unknown per-image augmentation step. Received: name={name}")


def augmentation_layers(steps: Sequence[AugmentStep], seed: int | None = None) -> list[layers.Layer]:
    """One Keras layer per per-image step, in order; each active only with ``training=True``.
    With a ``seed``, step i is seeded ``seed + i`` (None: Keras' global seed)."""
    return [step_layer(s, None if seed is None else seed + i) for i, s in enumerate(steps)]


def check_steps(steps: Sequence[AugmentStep], input_shape: tuple[int, int, int]) -> None:
    """Raise ConfigError for steps that cannot work on these images."""
    h, w, channels = input_shape
    for i, step in enumerate(steps):
        if step.name == "color_jitter" and channels != 3 and (step.saturation or step.hue):
            raise ConfigError(
                f"augment.{i} (color_jitter): saturation and hue need RGB images, the images have "
                f"{channels} channel(s); set saturation: 0 and hue: 0, or data.channels: 3. "
                f"Received: saturation={step.saturation}, hue={step.hue}"
            )
        if step.name == "crop" and step.padding >= min(h, w):
            raise ConfigError(
                f"augment.{i}.padding: reflection padding must be smaller than the image "
                f"({h}x{w}). Received: padding={step.padding}"
            )


def split_steps(
    steps: Sequence[AugmentStep], augment_on: str, input_shape: tuple[int, int, int]
) -> tuple[tuple[AugmentStep, ...], tuple[AugmentStep, ...]]:
    """(steps inside the model, steps in the training pipeline), after ``check_steps``.

    MixUp and CutMix always go to the pipeline; the per-image steps go where ``augment_on``
    says."""
    check_steps(steps, input_shape)
    per_image = tuple(s for s in steps if s.name not in MIXERS)
    mixers = tuple(s for s in steps if s.name in MIXERS)
    if augment_on == "pipeline":
        return (), per_image + mixers
    return per_image, mixers


# ---------------------------------------------------------------- MixUp / CutMix
def _beta(alpha: float, shape, seed) -> tf.Tensor:
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    a = tf.random.stateless_gamma(shape, s1, alpha=alpha)
    b = tf.random.stateless_gamma(shape, s2, alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def mixup(images, labels, alpha: float, seed):
    """Each image becomes lam * itself + (1 - lam) * a partner from the batch, lam ~ Beta(alpha,
    alpha) per image; its label mixes the same way."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    n = tf.shape(images)[0]
    partner = tf.argsort(tf.random.stateless_uniform([n], s1))
    lam = _beta(alpha, [n], s2)
    mixed = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * tf.gather(images, partner)
    return mixed, lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, partner)


def cutmix(images, labels, alpha: float, seed):
    """Each image gets a box pasted from a partner from the batch; the box's side is
    sqrt(1 - lam) of the image's, lam ~ Beta(alpha, alpha), centred uniformly and clipped to
    the image. The label weights are the pixel counts actually kept and pasted."""
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    partner = tf.argsort(tf.random.stateless_uniform([n], s1))
    side = tf.sqrt(1.0 - _beta(alpha, [n], s2))
    centre = tf.random.stateless_uniform([n, 2], s3)
    cy, cx = centre[:, 0] * hf, centre[:, 1] * wf
    half_h, half_w = side * hf / 2, side * wf / 2
    y0 = tf.clip_by_value(tf.round(cy - half_h), 0, hf)
    y1 = tf.clip_by_value(tf.round(cy + half_h), 0, hf)
    x0 = tf.clip_by_value(tf.round(cx - half_w), 0, wf)
    x1 = tf.clip_by_value(tf.round(cx + half_w), 0, wf)
    rows = tf.range(hf)[None, :, None]
    cols = tf.range(wf)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    mixed = tf.where(inside[..., None], tf.gather(images, partner), images)
    pasted = (y1 - y0) * (x1 - x0) / (hf * wf)
    lam = (1.0 - pasted)[:, None]
    return mixed, lam * labels + (1 - lam) * tf.gather(labels, partner)


def mix_batch(images, labels, steps: Sequence[AugmentStep], seed):
    """Apply the mixup/cutmix steps to one batch. With both listed, each batch gets one of
    them, picked at random with equal odds (the usual recipe); ``seed`` is a stateless
    seed pair, one per batch."""
    fns = [(mixup if s.name == "mixup" else cutmix, s.alpha) for s in steps]
    if not fns:
        return images, labels
    pick_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if len(fns) == 1:
        fn, alpha = fns[0]
        return fn(images, labels, alpha, mix_seed)
    pick = tf.random.stateless_uniform([], pick_seed, 0, len(fns), dtype=tf.int32)
    branches = [lambda fn=fn, alpha=alpha: fn(images, labels, alpha, mix_seed) for fn, alpha in fns]
    return tf.switch_case(pick, branches)


# ---------------------------------------------------------------- pipeline hook
def augment_dataset(ds: tf.data.Dataset, steps: Sequence[AugmentStep], seed: int) -> tf.data.Dataset:
    """Apply ``steps`` to a dataset of (float32 image batches 0..255, one-hot labels):
    the per-image layers in one parallel map, then MixUp/CutMix with a per-batch seed
    from a seeded random stream (different every epoch, the same for the same seed)."""
    per_image = [s for s in steps if s.name not in MIXERS]
    mixers = [s for s in steps if s.name in MIXERS]
    if per_image:
        stack = augmentation_layers(per_image, seed=seed)

        def apply(images, labels):
            for layer in stack:
                images = layer(images, training=True)
            return images, labels

        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    if mixers:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, s: mix_batch(batch[0], batch[1], mixers, s),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds
