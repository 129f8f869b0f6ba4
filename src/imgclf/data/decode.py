"""One image file's way in: read and decode it (JPEG/PNG/GIF/BMP/WebP), resize it alias-free.

The tf.data pipeline decodes with these, and the scan (data/scan.py) checks each file with the
same decoder, so a file that passes the scan cannot fail mid-epoch. Importing this module imports
TensorFlow: the scan imports it only after ``imgclf._tf.import_tensorflow`` has done so quietly.
"""

from __future__ import annotations

import tensorflow as tf


def decode_file(path: tf.Tensor) -> tf.Tensor:
    """Read one JPEG/PNG/GIF/BMP file as a uint8 RGB image (a GIF's first frame)."""
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8)
    img.set_shape([None, None, 3])
    return img


def resize_image(img: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``img`` at ``size`` (float32), alias-free at little more than plain bilinear's cost:
    plain bilinear while no side shrinks more than 2x (its 2x2 taps still reach every source
    pixel); past that, area averaging where both sides shrink, antialiased bilinear (twice as
    slow on 224 px photos) where one side grows."""
    hw = tf.shape(img)[:2]
    target = tf.constant(size, tf.int32)
    shrinks = tf.reduce_all(hw >= target)
    far = tf.reduce_any(hw > 2 * target)
    return tf.case(
        [(tf.logical_not(far), lambda: tf.image.resize(img, size, method="bilinear")),
         (shrinks, lambda: tf.image.resize(img, size, method="area"))],
        default=lambda: tf.image.resize(img, size, method="bilinear", antialias=True),
    )


def decode_image(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Read one image file as a uint8 RGB image of ``size``."""
    img = resize_image(decode_file(path), size)
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)
