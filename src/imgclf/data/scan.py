"""Find image files under a folder and check, once, that each one decodes.

The check runs every file through the training pipeline's own TensorFlow decoder, in
parallel, so a file that passes cannot fail mid-epoch. Its verdicts are cached on disk per
file (keyed by size and modification time), so a second command on the same folder (another
run, a resume, every trial of a sweep, evaluate, inspect) decodes only the files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# larger images are skipped unread: a few MB of PNG can hold a 50,000 x 50,000 image (7.5 GB
# decoded). A 10,000 x 10,000 photo passes (300 MB decoded, resized on the way in). The limit is
# the one past which PIL itself refuses to open an image (twice its warning threshold), so what
# training uses, the report's thumbnails and `imgclf inspect` can read too
MAX_PIXELS = 178_956_970
CACHE_VERSION = 1


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


def skipped_summary(bad: list[tuple[str, str]]) -> str:
    """``7 unreadable file(s) and 1 folder(s)`` for a bad_files list (folders end in /)."""
    folders = sum(p.endswith("/") for p, _ in bad)
    files = len(bad) - folders
    parts = ([f"{files} unreadable file(s)"] if files else []) + ([f"{folders} folder(s)"] if folders else [])
    return " and ".join(parts)


# ------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """IMGCLF_CACHE_DIR, else $XDG_CACHE_HOME/imgclf, else ~/.cache/imgclf."""
    if os.environ.get("IMGCLF_CACHE_DIR"):
        return Path(os.environ["IMGCLF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgclf"


def _cache_file(paths: list[Path]) -> Path:
    # one cache per data folder: the files' common parent
    common = os.path.commonpath([str(p.absolute().parent) for p in paths])
    return cache_dir() / "scan" / (hashlib.sha1(common.encode("utf-8", "surrogateescape")).hexdigest()[:20]
                                   + ".json")


def _stamp(path: Path) -> list | None:
    try:
        st = path.stat()
    except OSError:  # gone, a broken link, a symlink loop: decode again and say why
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_cache(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return data["files"] if data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no cache, or a damaged one: scan again


def _write_cache(file: Path, entries: dict) -> None:
    from imgclf.runs import write_json

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json(file, {"version": CACHE_VERSION, "files": entries})
    except OSError:
        pass  # a read-only home costs a rescan next time, nothing more


# ------------------------------------------------------------------------- check
def unreadable_images(paths: list[Path]) -> list[tuple[Path, str]]:
    """The files among ``paths`` that cannot be used, as (path, reason), in order: files that
    do not decode, and images over MAX_PIXELS. Verdicts come from the cache where a file's size
    and modification time are unchanged; the rest are checked (in parallel) and cached."""
    if not paths:
        return []
    cache_file = _cache_file(paths)
    cached = _read_cache(cache_file)
    verdicts: dict[Path, str | None] = {}
    stamps = {p: _stamp(p) for p in paths}
    todo = []
    for p in paths:
        hit = cached.get(str(p.absolute()))
        if stamps[p] is not None and hit is not None and hit[:2] == stamps[p]:
            verdicts[p] = hit[2]
        else:
            todo.append(p)
    for p, why in check_images(todo).items():
        verdicts[p] = why
    if todo:
        for p in todo:
            if stamps[p] is not None:
                cached[str(p.absolute())] = [*stamps[p], verdicts[p]]
        _write_cache(cache_file, cached)
    return [(p, verdicts[p]) for p in paths if verdicts[p] is not None]


def too_large(path: Path) -> str | None:
    """The reason to skip an image whose header declares more than MAX_PIXELS, else None
    (the header only: nothing is decoded)."""
    try:
        with open_quietly(path, check_size=False) as im:
            w, h = im.size
    except Exception:  # not an image PIL knows: TensorFlow's decoder decides
        return None
    if w * h > MAX_PIXELS:
        return f"too large: {w} x {h} pixels (the limit is {MAX_PIXELS:,} pixels)"
    return None


@contextmanager
def open_quietly(path, check_size: bool = True):
    """PIL's Image.open without its DecompressionBombWarning (MAX_PIXELS is the judge here);
    ``check_size=False`` opens any size, to read the header alone."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        if not check_size:
            Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:
                yield im
        finally:
            Image.MAX_IMAGE_PIXELS = old


def check_images(paths: list[Path]) -> dict[Path, str | None]:
    """{path: None if it decodes, else why not}, every file decoded by TensorFlow in parallel
    (tf.data); the few that fail are decoded once more on their own to learn why."""
    if not paths:
        return {}
    out: dict[Path, str | None] = {p: too_large(p) for p in paths}
    todo = [p for p in paths if out[p] is None]
    if not todo:
        return out
    from imgclf._tf import import_tensorflow

    tf = import_tensorflow()
    from imgclf.data.pipeline import decode_file

    names = tf.constant([str(p) for p in todo])
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(todo)), names))
    ds = ds.map(lambda i, p: (i, tf.shape(decode_file(p))[0]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(4096)
    ok = {int(i) for batch, _ in ds.as_numpy_iterator() for i in batch}
    for i, p in enumerate(todo):
        if i not in ok:
            out[p] = why_unreadable(p)
    return out


def why_unreadable(path: Path) -> str:
    """Why ``path`` does not decode, in one short line (re-decoded eagerly, one file)."""
    from imgclf._tf import import_tensorflow

    tf = import_tensorflow()
    from imgclf.data.pipeline import decode_file

    try:
        if path.stat().st_size == 0:
            return "empty file"
        big = too_large(path)
        if big:
            return big
        decode_file(tf.constant(str(path)))
    except OSError as exc:  # a broken link, a symlink loop, no permission
        return exc.strerror or type(exc).__name__
    except tf.errors.OpError as exc:
        text = " ".join((getattr(exc, "message", None) or str(exc)).split())
        # TensorFlow wraps the decoder's message: {{function_node ...}} MESSAGE [Op:DecodeImage] name:
        text = re.sub(r"\s*\[Op:.*$", "", re.sub(r"^\{\{.*?\}\}\s*", "", text)) or text
        return text[:200] or type(exc).__name__
    return "unreadable"
