"""The augmentation stack in the training pipeline: the config's `augment` steps checked and
split between model and pipeline, the per-image layers mapped over batches, and MixUp/CutMix.

Per-image steps become Keras preprocessing layers (imgclf.layers, the home of every layer we
register). They run either inside the model, before the rescaling (``augment_on: model``: on
the accelerator, inactive at inference), or in the training dataset's tf.data map on batches
(``augment_on: pipeline``: on the CPU, in parallel).

MixUp and CutMix mix labels as well as images, so they cannot live in the model: they always
run on one-hot training batches in the pipeline (``mix_batch``), whatever ``augment_on`` says.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from imgclf.config import AugmentStep
from imgclf.errors import ConfigError
from imgclf.layers import augmentation_layers

MIXERS = ("mixup", "cutmix")


# ------------------------------------------------------------------ checks
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
