"""One image file's way in: read and decode it (JPEG/PNG/GIF/BMP/WebP), resize it.

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
    """``img`` at ``size`` (float32): plain bilinear while no side shrinks 3x or more (its 2x2
    taps still reach two of every three source pixels: any antialiasing filter costs 40% of
    the decode on 224 px photos); past that, area averaging where both sides shrink,
    antialiased bilinear where one side grows. A JPEG far larger than ``size`` shrinks in the
    decoder first (``decode_image``), which is alias-free."""
    hw = tf.shape(img)[:2]
    target = tf.constant(size, tf.int32)
    shrinks = tf.reduce_all(hw >= target)
    far = tf.reduce_any(hw >= 3 * target)
    return tf.case(
        [(tf.logical_not(far), lambda: tf.image.resize(img, size, method="bilinear")),
         (shrinks, lambda: tf.image.resize(img, size, method="area"))],
        default=lambda: tf.image.resize(img, size, method="bilinear", antialias=True),
    )


RATIOS = (8, 4, 2)  # libjpeg's scaled decodes, largest first


def _to_uint8(img: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)


def jpeg_ratio(height: int, width: int, size: tuple[int, int]) -> int:
    """The JPEG scale ``_decode_jpeg_for`` decodes a ``height`` x ``width`` file at for ``size``."""
    return next((r for r in RATIOS if height // r >= size[0] and width // r >= size[1]), 1)


def resize_mode(height: int, width: int, size: tuple[int, int]) -> str:
    """What ``resize_image`` does to a ``height`` x ``width`` image: none, bilinear, area or antialias."""
    if (height, width) == tuple(size):
        return "none"
    if height < 3 * size[0] and width < 3 * size[1]:
        return "bilinear"
    return "area" if height >= size[0] and width >= size[1] else "antialias"


def planned_decoder(ratio: int, mode: str, size: tuple[int, int]):
    """``decode_image`` for JPEG files whose scale and resize are known from their headers
    (``jpeg_ratio``, ``resize_mode`` of the scaled size): the same pixels, without the
    branches, each of which costs about as much as decoding a 32x32 JPEG in a tf.data map."""
    def decode(path: tf.Tensor) -> tf.Tensor:
        img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, ratio=ratio)
        if mode != "none":
            img = _to_uint8(tf.image.resize(img, size, method="area" if mode == "area" else "bilinear",
                                            antialias=mode == "antialias"))
        img.set_shape([*size, 3])
        return img

    return decode


def _decode_jpeg_for(raw: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """A JPEG decoded at the smallest of 1/8, 1/4, 1/2 or full scale that still covers
    ``size`` on both sides: libjpeg's scaled inverse DCT averages each 8x8 block's frequencies
    down, so a photo far larger than the model's input decodes several times faster, and
    without aliasing; what is left to the resize is less than 2x on one side at least."""
    hw = tf.image.extract_jpeg_shape(raw)[:2]
    target = tf.constant(size, tf.int32)

    def at(ratio: int):
        return lambda: tf.io.decode_jpeg(raw, channels=3, ratio=ratio)

    return tf.case([(tf.reduce_all(hw // r >= target), at(r)) for r in RATIOS], default=at(1))


def decode_image(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Read one image file as a uint8 RGB image of ``size`` (a JPEG decoded at a reduced
    scale where it is far larger: ``_decode_jpeg_for``)."""
    raw = tf.io.read_file(path)
    img = tf.cond(tf.io.is_jpeg(raw), lambda: _decode_jpeg_for(raw, size),
                  lambda: tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8))
    img.set_shape([None, None, 3])
    same = tf.reduce_all(tf.shape(img)[:2] == tf.constant(size, tf.int32))
    out = tf.cond(same, lambda: img, lambda: _to_uint8(resize_image(img, size)))
    out.set_shape([*size, 3])  # static, so the batches after it are known to need no resize
    return out
