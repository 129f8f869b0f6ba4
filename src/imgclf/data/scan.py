"""Find image files under a folder and check, once, that each one decodes.

The check runs every file through the training pipeline's own TensorFlow decoder, in
parallel, so a file that passes cannot fail mid-epoch. Its verdicts are cached on disk per
file (keyed by ``stamp``: size, inode, modification and change time), so a second command on
the same folder (another run, a resume, every trial of a sweep, evaluate, inspect) decodes
only the files that changed.
"""

from __future__ import annotations

import importlib.metadata as md
import itertools
import operator
import os
import re
import struct
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from imgclf._tf import import_tensorflow
from imgclf.data.cache import (
    cache_file,
    cache_keys,
    digest,
    no_gc,
    read_columns,
    read_summary,
    stamp,
    write_cache,
    write_summary,
)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# larger images are skipped unread: a few MB of PNG can hold a 50,000 x 50,000 image (7.5 GB
# decoded). A 10,000 x 10,000 photo passes (300 MB decoded, resized on the way in). The limit is
# the one past which PIL itself refuses to open an image (twice its warning threshold), so what
# training uses, the report's thumbnails and `imgclf inspect` can read too
MAX_PIXELS = 178_956_970
CACHE_VERSION = 5  # 5: the cache is kept in columns (data/cache.py)
# (width, height, is a JPEG, is grayscale) of every file the check read a header of or found
# in its cache, by absolute path: the pipeline plans its decoding from these, and a folder of
# grayscale images is read with one channel, without opening the files again
HEADERS: dict[str, tuple[int, int, bool, bool]] = {}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}  # PIL's modes without colour
# the last check of a folder's files (unreadable_images): how many, how many decoded (not
# found in the cache), seconds; `imgclf train` prints it with its data line
LAST_SCAN: dict = {}
_STAT_STAMP = operator.attrgetter("st_size", "st_ino", "st_mtime_ns", "st_ctime_ns")  # stamp's


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def visible_subdirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not is_hidden(p.name)), key=lambda p: p.name
    )


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order (pathlib's, part by part);
    hidden files and folders are skipped and symlinked folders are not followed (no loops)."""
    paths, keys = [], []
    with no_gc():
        for top, names in _walk(os.fspath(folder)):
            paths += _children(Path(top), names)
            # sorted as strings, NUL for the separator (no name holds one): the order of Path's
            # parts, without pathlib's comparisons (seconds at 60,000) or a list of parts per file
            prefix = os.path.join(top, "").replace(os.sep, "\0")
            keys += [prefix + name for name in names]
        return [paths[i] for i in sorted(range(len(keys)), key=keys.__getitem__)]


def _walk(folder: str) -> list[tuple[str, list[str]]]:
    """(folder, the names of its image files) for ``folder`` and every folder under it that is
    not hidden: os.walk's walk (a folder that cannot be listed is passed over, a symlink to a
    folder is neither followed nor a file), without its lists of every name."""
    found, stack = [], [folder]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                names = []
                for e in entries:
                    name = e.name
                    if is_hidden(name):
                        continue
                    if _is_dir(e):
                        if not e.is_symlink():
                            stack.append(os.path.join(top, name))
                    # os.path.splitext's extension, for a name that does not start with a dot
                    elif name[name.rfind("."):].lower() in IMAGE_EXTENSIONS:
                        names.append(name)
        except OSError:
            continue
        found.append((top, names))
    return found


def _is_dir(entry: os.DirEntry) -> bool:
    """As os.walk asks: a symlink loop or a link it cannot follow is not a folder."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _children(parent: Path, names: list[str]) -> list[Path]:
    """``parent / name`` for each of ``names`` (plain file names)."""
    # pathlib parses every name anew (Path(text): 0.45 s at 60,000 files, joinpath: 0.1 s), but
    # Path.iterdir builds its children from the parent's parts (0.05 s): that, where it is there
    make = getattr(parent, "_make_child_relpath", None)
    if make is None or not names:
        return [parent / name for name in names]
    paths = list(map(make, names))
    if sys.version_info < (3, 12):
        # Python 3.12's children keep their text, as Path(text) does; before 3.12, each str()
        # joins the parts again (0.08 s at 60,000, for the scan's cache keys). A child's text is
        # its parent's part and its name: the part is taken from pathlib's own text of the first
        prefix = str(paths[0])[: -len(names[0])]
        try:
            for p, name in zip(paths, names):
                p._str = prefix + name
        except AttributeError:  # a pathlib without that slot: str() makes the text
            pass
    return paths


def loose_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (not in its sub-folders), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden(p.name)
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def skipped_summary(bad: list[tuple[str, str]]) -> str:
    """``7 unreadable file(s) and 1 folder(s)`` for a bad_files list (folders end in /)."""
    folders = sum(p.endswith("/") for p, _ in bad)
    files = len(bad) - folders
    parts = ([f"{files} unreadable file(s)"] if files else []) + ([f"{folders} folder(s)"] if folders else [])
    return " and ".join(parts)


def skipped_note(bad: list[tuple[str, str]]) -> str:
    """The report's line about a bad_files list."""
    return f"Skipped {skipped_summary(bad)}, e.g. {bad[0][0]} ({bad[0][1]}); bad_files.txt lists them all."


# ------------------------------------------------------------------------- cache
def _judge() -> dict:
    """What the verdicts depend on besides the file: a cache made under another limit or
    another TensorFlow decoder is not used."""
    try:
        tf_version = md.version("tensorflow")
    except md.PackageNotFoundError:
        tf_version = None
    return {"version": CACHE_VERSION, "max_pixels": MAX_PIXELS, "tensorflow": tf_version}


# ------------------------------------------------------------------------- check
def unreadable_images(paths: list[Path]) -> list[tuple[Path, str]]:
    """The files among ``paths`` that cannot be used, as (path, reason), in order: files that
    do not decode, and files ``refuse`` turns down. Verdicts come from the cache where a file's
    ``stamp`` is unchanged; the rest are checked (in parallel) and cached."""
    if not paths:
        return []
    started = time.perf_counter()
    verdicts, todo = _verdicts(paths)
    LAST_SCAN.update(files=len(paths), decoded=len(todo), seconds=time.perf_counter() - started)
    return [(p, why) for p, why in zip(paths, verdicts) if why is not None]


def _verdicts(paths: list[Path]) -> tuple[list[str | None], list[int]]:
    """(each path's verdict; the indices of those decoded, not found in the cache)."""
    with no_gc():  # not while TensorFlow decodes, below
        keys = cache_keys(paths)
        where = cache_file(paths, keys=keys)
        stamps = _stamps(keys)
        sealed = digest(_judge(), keys, stamps)
        summed = read_summary(where, sealed, len(keys)) if sealed else None
        if summed is not None:  # (verdict, header) of each file, from the summary alone
            HEADERS.update((_header_key(k), h) for k, (_, h) in zip(keys, summed) if h)
            return [why for why, _ in summed], []
        cached, columns = read_columns(where, _judge(), 6)  # [*stamp, verdict, header]
        verdicts, todo = _cached_verdicts(keys, cached, columns, stamps)
    if todo:
        checked = check_images([paths[i] for i in todo])
        entries = {k: list(v) for k, v in zip(cached, zip(*columns))}
        for i in todo:
            verdicts[i] = checked[paths[i]]
            if stamps[i] is not None:
                entries[keys[i]] = [*stamps[i], verdicts[i], HEADERS.get(os.path.abspath(keys[i]))]
        write_cache(where, _judge(), entries)
    if sealed:
        with no_gc():
            write_summary(where, sealed, [(why, HEADERS.get(_header_key(k)))
                                          for k, why in zip(keys, verdicts)])
    return verdicts, todo


def _header_key(key: str) -> str:
    """HEADERS' key of an absolute cache key: abspath's normalising (25 ms at 60,000 files)
    changes only a text with /. or //."""
    return key if os.sep + "." not in key and os.sep * 2 not in key else os.path.abspath(key)


def _cached_verdicts(keys: list[str], cached: list[str], columns: list[list],
                     stamps: list) -> tuple[list, list]:
    """(each file's cached verdict, None where it has none; the indices of the files without a
    cached verdict, to decode), given each file's ``stamp`` (a tuple, None for a file that cannot
    be stat'ed). Fills HEADERS from the cache."""
    sizes, inodes, mtimes, ctimes, said, headers = columns
    # one pass per step through C (map, zip) instead of Python's loop over each file: 0.1 s less
    # at 60,000. An entry of a damaged verdict, and a file not in the cache (index len(cached)),
    # meet the stamp (), which no file has
    before = [s if v is None or type(v) is str else ()
              for s, v in zip(zip(sizes, inodes, mtimes, ctimes), said)] + [()]
    index = dict(zip(cached, range(len(cached))))
    where = list(map(index.get, keys, itertools.repeat(len(cached))))
    same = list(map(operator.eq, map(before.__getitem__, where), stamps))
    said = [*said, None]
    verdicts = [said[j] if hit else None for j, hit in zip(where, same)]
    headers = [*headers, None]
    HEADERS.update((_header_key(k), tuple(h))
                   for k, h, hit in zip(keys, map(headers.__getitem__, where), same) if hit and h)
    return verdicts, list(itertools.compress(range(len(keys)), map(operator.not_, same)))


def _stamps(keys: list[str]) -> list[tuple | None]:
    """``stamp`` of each file, as a tuple."""
    try:
        return list(map(_STAT_STAMP, map(os.stat, keys)))  # through C, where every file is there
    except OSError:
        return [None if st is None else tuple(st) for st in map(stamp, keys)]


def own_channels(paths) -> int:
    """1 when the scan saw every one of ``paths`` as a grayscale image, else 3."""
    seen = [HEADERS.get(os.path.abspath(p)) for p in paths]
    return 1 if seen and all(h is not None and len(h) > 3 and h[3] for h in seen) else 3


def printable(name: str) -> str:
    """``name`` as text any file or terminal takes: a byte that is not UTF-8 (a file name from
    an old zip) shows as \\xNN instead of failing the write."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def refuse(path: Path) -> str | None:
    """The reason not to hand ``path`` to the decoder at all, else None: a name TensorFlow
    cannot take (not UTF-8), or a header that declares too many pixels (``too_large``)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8: rename it"
    return too_large(path)


def too_large(path: Path) -> str | None:
    """The reason not to decode ``path``, from its header alone, else None: an image that
    declares more than MAX_PIXELS, or a file that looks like an image TensorFlow decodes but
    whose size cannot be read (it could be any size). Files of no known format are left to
    TensorFlow's decoder, which refuses them."""
    try:
        with open_quietly(path, check_size=False) as im:
            w, h = im.size
            HEADERS[os.path.abspath(path)] = (w, h, im.format == "JPEG", im.mode in GRAY_MODES)
    except Exception:  # PIL refuses some files TensorFlow decodes: read the size ourselves
        try:
            size = header_size(path)
        except OSError:
            return None  # unreadable: the decoder says why
        if size is None:
            return None
        if size == (0, 0):
            return "damaged image header: its size cannot be read"
        w, h = size
    if w * h > MAX_PIXELS:
        return f"too large: {w} x {h} pixels (the limit is {MAX_PIXELS:,} pixels)"
    return None


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, GIF, BMP, WebP or JPEG file; (0, 0) for one of
    those formats whose size cannot be read; None for any other file."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return struct.unpack(">II", head[16:24]) if head[12:16] == b"IHDR" else (0, 0)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", head[6:10]) if len(head) >= 10 else (0, 0)
        if head[:2] == b"BM":
            if len(head) < 26:
                return (0, 0)
            w, h = struct.unpack("<ii", head[18:26])
            return abs(w), abs(h)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind, body = head[12:16], head[20:]
            if kind == b"VP8X" and len(body) >= 10:
                return (int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1)
            if kind == b"VP8L" and len(body) >= 5:
                bits = int.from_bytes(body[1:5], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if kind == b"VP8 " and len(body) >= 10:
                w, h = struct.unpack("<HH", body[6:10])
                return w & 0x3FFF, h & 0x3FFF
            return (0, 0)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(fh)
    return None


def _jpeg_size(fh) -> tuple[int, int]:
    """The frame size from a JPEG's first SOF marker (segments skipped by their lengths)."""
    fh.seek(2)
    for _ in range(10_000):
        byte = fh.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = fh.read(1)
        if not byte:
            return (0, 0)
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        length = fh.read(2)
        if len(length) < 2:
            return (0, 0)
        size = struct.unpack(">H", length)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = fh.read(5)
            if len(frame) < 5:
                return (0, 0)
            h, w = struct.unpack(">HH", frame[1:5])
            return w, h
        fh.seek(size - 2, 1)
        nxt = fh.read(1)
        if nxt != b"\xff":
            return (0, 0)
    return (0, 0)


@contextmanager
def open_quietly(path, check_size: bool = True):
    """PIL's Image.open without its DecompressionBombWarning (MAX_PIXELS is the judge here);
    ``check_size=False`` opens any size, to read the header alone."""
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


def _decoder():
    """TensorFlow and the pipeline's own decoder (data/decode.py), imported on first need:
    finding files, the cache and the array sources run without TensorFlow."""
    tf = import_tensorflow()  # quietly, before data/decode.py imports it plainly
    from imgclf.data.decode import decode_file  # the one import kept in a function, for the above

    return tf, decode_file


def check_images(paths: list[Path]) -> dict[Path, str | None]:
    """{path: None if it decodes, else why not}, every file decoded by TensorFlow in parallel
    (tf.data); the few that fail are decoded once more on their own to learn why."""
    if not paths:
        return {}
    out: dict[Path, str | None] = {p: refuse(p) for p in paths}
    todo = [p for p in paths if out[p] is None]
    if not todo:
        return out
    tf, decode_file = _decoder()
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
    tf, decode_file = _decoder()
    try:
        if path.stat().st_size == 0:
            return "empty file"
        refused = refuse(path)
        if refused:
            return refused
        decode_file(tf.constant(str(path)))
    except OSError as exc:  # a broken link, a symlink loop, no permission
        return exc.strerror or type(exc).__name__
    except tf.errors.OpError as exc:
        text = " ".join((getattr(exc, "message", None) or str(exc)).split())
        # TensorFlow wraps the decoder's message: {{function_node ...}} MESSAGE [Op:DecodeImage] name:
        text = re.sub(r"\s*\[Op:.*$", "", re.sub(r"^\{\{.*?\}\}\s*", "", text)) or text
        return text[:200] or type(exc).__name__
    return "unreadable"
