"""Find image files under a folder and check that each one decodes, in parallel, once."""

from __future__ import annotations

import os
import re
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
    return [(p, why_unreadable(p)) for i, p in enumerate(paths) if i not in ok]


def why_unreadable(path: Path) -> str:
    """Why ``path`` does not decode, in one short line (re-decoded eagerly, one file)."""
    from imgclf._tf import import_tensorflow

    tf = import_tensorflow()
    from imgclf.data.pipeline import decode_file

    try:
        if path.stat().st_size == 0:
            return "empty file"
        decode_file(tf.constant(str(path)))
    except (tf.errors.OpError, OSError) as exc:
        text = " ".join((getattr(exc, "message", None) or str(exc)).split())
        # TensorFlow wraps the decoder's message: {{function_node ...}} MESSAGE [Op:DecodeImage] name:
        text = re.sub(r"\s*\[Op:.*$", "", re.sub(r"^\{\{.*?\}\}\s*", "", text)) or text
        return text[:200] or type(exc).__name__
    return "unreadable"
