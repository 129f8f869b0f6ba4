"""Find image files under a folder and check that each one decodes, in parallel, once."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def visible_subdirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not is_hidden(p.name)), key=lambda p: p.name
    )


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order; hidden files and folders
    are skipped and symlinked folders are not followed (no loops)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in files:
            if not is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found)


def unreadable_images(paths: list[Path]) -> list[tuple[Path, str]]:
    """The files among ``paths`` that do not decode, as (path, reason), in order.

    Every file goes through the training pipeline's own TensorFlow decoder, in parallel
    (tf.data), so a file that passes here cannot fail mid-epoch; the few that fail are
    decoded once more on their own to learn why.
    """
    if not paths:
        return []
    from imgclf._tf import import_tensorflow

    tf = import_tensorflow()
    from imgclf.data.pipeline import decode_file

    names = tf.constant([str(p) for p in paths])
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), names))
    ds = ds.map(lambda i, p: (i, tf.shape(decode_file(p))[0]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(4096)
    ok = {int(i) for batch, _ in ds.as_numpy_iterator() for i in batch}
    return [(p, _why(p, decode_file, tf)) for i, p in enumerate(paths) if i not in ok]


def _why(path: Path, decode_file, tf) -> str:
    try:
        if path.stat().st_size == 0:
            return "empty file"
        decode_file(tf.constant(str(path)))
    except (tf.errors.OpError, OSError) as exc:
        text = getattr(exc, "message", None) or str(exc)
        return " ".join(text.split())[:200] or type(exc).__name__
    return "unreadable"
