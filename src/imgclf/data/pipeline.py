"""The tf.data input pipeline: decode, resize, channel conversion, cache, shuffle, batch.

Images leave the pipeline as float32 in 0..255 (every model rescales inside itself) with
one-hot float32 labels. Per-image work (decode, resize: data/decode.py) runs in parallel before
the cache and is stored as uint8; a file split made with ``fill`` decodes into its cache in one
pass before the dataset is returned, so no training step shares the cores with decoding.
Per-batch work (cast, channel conversion, one-hot) runs after batching.
Training augmentation in the pipeline (imgclf.data.augment) runs after that, on batches,
after the cache, so every epoch sees fresh draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import tensorflow as tf

from imgclf.config import AugmentStep
from imgclf.data.augment import augment_dataset
from imgclf.data.bundle import Split
from imgclf.data.decode import decode_image, jpeg_ratio, planned_decoder, resize_mode
from imgclf.data.scan import HEADERS, header_size

AUTOTUNE = tf.data.AUTOTUNE


def _to_channels(images: tf.Tensor, have: int, want: int) -> tf.Tensor:
    if have == want:
        return images
    if want == 3:
        return tf.image.grayscale_to_rgb(images)
    return tf.image.rgb_to_grayscale(images)


def model_input(images: tf.Tensor, size: tuple[int, int], have: int, want: int) -> tf.Tensor:
    """A batch of array images (0..255, any number type) as a model takes them: float32, at
    ``size`` (bilinear, antialiased) where they are not, with ``want`` channels."""
    images = tf.cast(images, tf.float32)
    if tuple(images.shape[1:3]) != tuple(size):
        images = tf.image.resize(images, size, method="bilinear", antialias=True)
    return _to_channels(images, have, want)


def _header(path: str) -> tuple[int, int] | None:
    """(width, height) of a JPEG file (None for any other file): from what the scan read
    (data/scan.HEADERS), else from the file's header."""
    known = HEADERS.get(os.path.abspath(path))
    if known is not None:
        return known[:2] if known[2] else None
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\xff\xd8":
                return None
        found = header_size(Path(path))
    except OSError:
        return None
    return found if found and found != (0, 0) else None


def _plan(path: str, size: tuple[int, int]) -> tuple[int, str] | None:
    """(JPEG scale, resize mode) of a JPEG file from its header, or None for any other file."""
    found = _header(path)
    return None if found is None else _plan_for(*found, size)


@cache
def _plan_for(w: int, h: int, size: tuple[int, int]) -> tuple[int, str]:
    ratio = jpeg_ratio(h, w, size)
    return ratio, resize_mode(-(-h // ratio), -(-w // ratio), size)  # libjpeg rounds a scaled side up


def decode_files(files: Sequence[str], size: tuple[int, int], labels=None) -> tf.data.Dataset:
    """uint8 images at ``size`` of ``files``, in order, as decode_image gives them; with
    ``labels``, (image, label) pairs from the same map (a zip of two datasets cost CIFAR's
    32x32 JPEGs a third of their decode rate: benchmarks/decode.py). Where every file is a JPEG
    that decodes and resizes alike (by the headers the scan read: a set such as CIFAR's),
    through one branch-free map; decode_image's branches cost as much as decoding a 32x32 JPEG.
    Photos of many sizes go through decode_image itself: splitting them into alike groups and
    merging those back cost more than the branches."""
    size = tuple(size)
    plans = {_plan(f, size) for f in files}
    one = next(iter(plans)) if len(plans) == 1 else None
    decode = planned_decoder(*one, size) if one is not None else (lambda p: decode_image(p, size))
    if labels is None:
        return tf.data.Dataset.from_tensor_slices(list(files)).map(decode, num_parallel_calls=AUTOTUNE)
    return tf.data.Dataset.from_tensor_slices((list(files), labels)).map(
        lambda path, y: (decode(path), y), num_parallel_calls=AUTOTUNE)


def fill_cache(ds: tf.data.Dataset) -> int:
    """Read ``ds`` (ending in ``cache()``) to its end, so its in-memory cache is complete and
    every iterator made later reads from it; returns the images read. So no training step
    shares the cores with decoding and the first epoch trains at the rate of the others
    (benchmarks/folder_peer.py measures it against decoding while training: README, Performance)."""
    # read from Python, batch by batch, so that a Ctrl-C acts within a batch (interrupts.py)
    return sum(int(images.shape[0]) for images, _ in ds.batch(256))


def split_source(
    split: Split,
    *,
    image_size: tuple[int, int],
    training: bool,
    seed: int,
    cache: bool = True,
    shuffle_buffer: int = 10_000,
    fill: bool = False,
) -> tuple[tf.data.Dataset, int]:
    """One split's (image, label) elements before shuffle and batch, and the channels they have:
    decoded (files) or sliced (arrays), then cached. make_dataset batches it; batching the same
    source again (a new batch size) reads the same cache, so files are not decoded twice.
    ``fill`` (with ``cache``, for files) decodes every file into the cache now: fill_cache."""
    size = tuple(int(s) for s in image_size)
    if training and shuffle_buffer < len(split):
        # folders list their files class by class: a buffer smaller than the split would fill
        # whole batches from two or three classes, so the order is shuffled in full once first
        split = split.take(np.random.default_rng(seed).permutation(len(split)))
    labels = tf.constant(split.y, dtype=tf.int32)
    if split.files is not None:
        have = 3
        ds = decode_files(list(split.files), size, labels)
    else:
        have = int(split.x.shape[-1])
        ds = tf.data.Dataset.from_tensor_slices((split.x, labels))
    if cache:
        ds = ds.cache()
        if fill and split.files is not None:
            fill_cache(ds)
    return ds, have


def make_dataset(
    split: Split,
    *,
    image_size: tuple[int, int],
    channels: int,
    num_classes: int,
    batch_size: int,
    training: bool,
    seed: int,
    cache: bool = True,
    shuffle_buffer: int = 10_000,
    augment: Sequence[AugmentStep] = (),
    fill: bool = False,
    source: tuple[tf.data.Dataset, int] | None = None,
) -> tf.data.Dataset:
    """A batched dataset of (float32 images 0..255, one-hot labels) for one split.

    ``training`` shuffles (with ``seed``, reshuffled every epoch); otherwise the order is
    the split's order, which is the order of predictions.csv. ``augment`` steps (training
    datasets only) run on the batches, seeded with ``seed``; MixUp/CutMix mix the labels too.
    ``fill`` (with ``cache``, for files) decodes every file into the cache now: fill_cache.
    ``source``: the split's split_source, made before with the same arguments, to batch again.
    """
    if augment and not training:
        raise ValueError("augmentation is for training datasets only")
    size = tuple(int(s) for s in image_size)
    ds, have = source or split_source(split, image_size=size, training=training, seed=seed, cache=cache,
                                      shuffle_buffer=shuffle_buffer, fill=fill)
    if training:
        ds = ds.shuffle(min(shuffle_buffer, max(len(split), 1)), seed=seed,
                        reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def per_batch(images, y):
        # decoded files are at ``size`` already: model_input resizes only arrays of another size
        return model_input(images, size, have, channels), tf.one_hot(y, num_classes, dtype=tf.float32)

    ds = ds.map(per_batch, num_parallel_calls=AUTOTUNE)
    if augment:
        ds = augment_dataset(ds, augment, seed)
    return ds.prefetch(AUTOTUNE)
