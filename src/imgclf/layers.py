"""The Keras layers imgclf registers, and the config's augment steps as Keras layers.

A saved ``model.keras`` names these layers ``imgclf>ClassName``; importing this module
registers them, and that is all that loading a saved model for inference needs (no training
or data code). Keep every class name and the package: old model files load by them.

Augmentation layers see float32 images in 0..255 and return the same shape, dtype and range,
and are the identity at inference. Where Keras has the layer it is used; ``RandomPadCrop``,
``RandomResizedCrop``, ``ClippedGaussianNoise`` and ``ClippedColorJitter`` are ours.
``CaffePreprocess`` is the input conversion of the Caffe-style ImageNet weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from imgclf.config import AugmentStep

VALUE_RANGE = (0.0, 255.0)
PACKAGE = "imgclf"


# ----------------------------------------------------------- preprocessing layers
# the ImageNet channel means (RGB) the Caffe-trained VGG and ResNet weights subtract
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CaffePreprocess(keras.layers.Layer):
    """Raw 0..255 RGB pixels to what the Caffe-style ImageNet weights (VGG, ResNet50) expect:
    channels in BGR order, minus the ImageNet mean of each channel, no scaling."""

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        mean = ops.convert_to_tensor(_CAFFE_MEAN_RGB, dtype=self.compute_dtype)
        return ops.flip(x - mean, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


def caffe_preprocess_conv(name: str, dtype=None) -> layers.Conv2D:
    """``CaffePreprocess`` in Keras' own layers, for models that load without imgclf: a fixed
    1x1 convolution whose kernel swaps RGB to BGR (weights 0 and 1, exact) and whose bias
    subtracts the channel means. Built, with its weights set."""
    conv = layers.Conv2D(3, 1, name=name, dtype=dtype, trainable=False)
    conv.build((None, None, None, 3))
    kernel = [[[[1.0 if i == 2 - o else 0.0 for o in range(3)] for i in range(3)]]]
    conv.set_weights([ops.convert_to_numpy(ops.convert_to_tensor(kernel)),
                      ops.convert_to_numpy(-ops.flip(ops.convert_to_tensor(_CAFFE_MEAN_RGB), axis=0))])
    return conv


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchWhitening(layers.Layer):
    """A fixed first convolution that whitens ``kernel_size`` x ``kernel_size`` patches: its
    filters are the eigenvectors of the training patches' covariance, scaled by 1/sqrt of their
    eigenvalue (plus ``epsilon`` times the patches' mean variance, so that it whitens alike in
    any input units: 0..1, 0..255 or standardised), each with its negative, so it gives
    2 x k*k*channels maps ('valid' padding). ``adapt(images)`` sets them from data, as Keras'
    Normalization does; the bias trains. The fast CIFAR-10 recipes start so (imgclf.models.fastnet)."""

    # 8e-3 of the mean variance is 5e-4 in CIFAR-10's 0..1 units; 5e-4 of it (16x weaker) measured
    # no better there (README, Performance)
    def __init__(self, kernel_size: int = 2, epsilon: float = 8e-3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        k, c = self.kernel_size, int(input_shape[-1])
        self.kernel = self.add_weight(shape=(k, k, c, 2 * k * k * c), initializer="glorot_uniform",
                                      trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(2 * k * k * c,), initializer="zeros", name="bias")

    def call(self, x):
        kernel = ops.cast(self.kernel, x.dtype)
        return ops.conv(x, kernel, padding="valid") + ops.cast(self.bias, x.dtype)

    def adapt(self, images, max_patches: int = 200_000, seed: int = 0) -> None:
        """Set the filters (and the bias that centres them) from ``images`` (N, H, W, C), in the
        units this layer sees; at most ``max_patches`` patches, drawn at random."""
        images = np.asarray(images, dtype=np.float32)
        if not self.built:
            self.build(images.shape)
        k, c = self.kernel_size, images.shape[-1]
        windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)  # (kh, kw, c) order
        rng = np.random.default_rng(seed)
        if len(patches) > max_patches:
            patches = patches[rng.choice(len(patches), max_patches, replace=False)]
        mean = patches.mean(axis=0)
        centred = patches - mean
        covariance = centred.T @ centred / len(centred)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        floor = self.epsilon * float(np.mean(np.diag(covariance)))  # epsilon in units of the variance
        filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + floor)  # one per column
        filters = np.concatenate([filters, -filters], axis=1)
        self.kernel.assign(filters.reshape(k, k, c, -1).astype(np.float32))
        self.bias.assign((-(mean @ filters)).astype(np.float32))

    def compute_output_shape(self, input_shape):
        k = self.kernel_size
        h, w = input_shape[1], input_shape[2]
        return (input_shape[0], None if h is None else h - k + 1, None if w is None else w - k + 1,
                2 * k * k * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Dirac(keras.initializers.Initializer):
    """A conv kernel whose first min(in, out) filters pass their input channel through (an
    identity, so a deep plain net starts close to a shallow one); the others are He-uniform
    scaled by ``scale``."""

    def __init__(self, scale: float = 1 / math.sqrt(6), seed: int | None = None):
        self.scale = float(scale)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        rest = keras.initializers.HeUniform(seed=self.seed)(shape, dtype=dtype) * self.scale
        n = min(cin, cout)
        eye = ops.eye(cin, n)  # (cin, n)
        centre = ops.reshape(ops.one_hot(ops.array([(kh // 2) * kw + kw // 2]), kh * kw), (kh, kw, 1, 1))
        identity = ops.cast(centre * ops.reshape(eye, (1, 1, cin, n)), rest.dtype)
        return ops.concatenate([identity, rest[..., n:]], axis=-1)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}


# ------------------------------------------------------------ augmentation layers
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


# every layer step_layer makes: what an inference model leaves out (imgclf.inference)
AUGMENTATION_LAYERS = (
    layers.RandomFlip, layers.RandomRotation, layers.RandomZoom, layers.RandomTranslation,
    layers.RandomContrast, layers.RandomBrightness, layers.RandomErasing, layers.RandomColorJitter,
    layers.RandAugment, RandomPadCrop, RandomResizedCrop, ClippedGaussianNoise,
)


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
