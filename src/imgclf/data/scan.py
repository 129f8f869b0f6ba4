"""Find image files under a folder and check, once, that each one decodes.

The check runs every file through the training pipeline's own TensorFlow decoder, in
parallel, so a file that passes cannot fail mid-epoch. Its verdicts are cached on disk per
file (keyed by ``stamp``: size, inode, modification and change time), so a second command on
the same folder (another run, a resume, every trial of a sweep, evaluate, inspect) decodes
only the files that changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import struct
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from imgclf._tf import import_tensorflow
from imgclf.runs import write_json

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# larger images are skipped unread: a few MB of PNG can hold a 50,000 x 50,000 image (7.5 GB
# decoded). A 10,000 x 10,000 photo passes (300 MB decoded, resized on the way in). The limit is
# the one past which PIL itself refuses to open an image (twice its warning threshold), so what
# training uses, the report's thumbnails and `imgclf inspect` can read too
MAX_PIXELS = 178_956_970
CACHE_VERSION = 4
# (width, height, is a JPEG, is grayscale) of every file the check read a header of or found
# in its cache, by absolute path: the pipeline plans its decoding from these, and a folder of
# grayscale images is read with one channel, without opening the files again
HEADERS: dict[str, tuple[int, int, bool, bool]] = {}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}  # PIL's modes without colour
# the last check of a folder's files (unreadable_images): how many, how many decoded (not
# found in the cache), seconds; `imgclf train` prints it with its data line
LAST_SCAN: dict = {}


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
        found += [os.path.join(root, name) for name in files
                  if not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    # Path order (part by part), sorted as strings: pathlib's comparisons cost seconds at 60,000
    return [Path(f) for f in sorted(found, key=lambda f: f.split(os.sep))]


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
def cache_dir() -> Path:
    """IMGCLF_CACHE_DIR, else $XDG_CACHE_HOME/imgclf, else ~/.cache/imgclf."""
    if os.environ.get("IMGCLF_CACHE_DIR"):
        return Path(os.environ["IMGCLF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgclf"


def cache_file(paths: list[Path], kind: str = "scan") -> Path:
    """The cache of ``kind`` (scan: decode verdicts; hashes: data/duplicates.py's image hashes)
    for ``paths``: one per data folder, the files' common parent."""
    cwd = os.getcwd()
    common = os.path.commonpath(list({os.path.dirname(cache_key(p, cwd)) for p in paths}))
    return cache_dir() / kind / (hashlib.sha1(common.encode("utf-8", "surrogateescape")).hexdigest()[:20]
                                 + ".json")


def stamp(path) -> list | None:
    """What identifies a file's content without reading it: size, inode, and the modification
    and change times (ctime moves on every write and cannot be set back by `cp -p`, `rsync -a`
    or `touch -r`)."""
    try:
        st = os.stat(path)
    except OSError:  # gone, a broken link, a symlink loop: decode again and say why
        return None
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _judge() -> dict:
    """What the verdicts depend on besides the file: a cache made under another limit or
    another TensorFlow decoder is not used."""
    try:
        tf_version = md.version("tensorflow")
    except md.PackageNotFoundError:
        tf_version = None
    return {"version": CACHE_VERSION, "max_pixels": MAX_PIXELS, "tensorflow": tf_version}


def read_cache(file: Path, judge: dict, width: int) -> dict:
    """A per-file cache's entries (lists of ``width`` items, ``stamp`` first, by absolute path)
    when it was made under ``judge``; {} for none, a damaged one, or one made otherwise. The
    scan's verdicts and data/duplicates.py's hashes are kept this way."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("judge") != judge or not isinstance(data["files"], dict):
            return {}
        return {k: v for k, v in data["files"].items() if isinstance(v, list) and len(v) == width}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no cache, or a damaged one: the work is done again


def write_cache(file: Path, judge: dict, entries: dict) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json(file, {"judge": judge, "files": entries})
    except OSError:
        pass  # a read-only home costs the work again next time, nothing more


def cache_key(path, cwd: str | None = None) -> str:
    """A file's key in a per-file cache: ``Path.absolute()``'s string (not normalised), made
    without pathlib, which costs a second on a cached scan of 60,000 files."""
    text = os.fspath(path)
    return text if os.path.isabs(text) else os.path.join(cwd or os.getcwd(), text)


def unchanged(paths: list[Path], cached: dict) -> tuple[dict, dict, list[Path]]:
    """(each path's ``stamp``; {path: its cached entry after the stamp} where the stamp is
    unchanged; the other paths, in order)."""
    cwd = os.getcwd()
    stamps, hits, todo = {}, {}, []
    for p in paths:
        key = cache_key(p, cwd)
        stamps[p] = now = stamp(key)
        hit = cached.get(key)
        if now is not None and hit is not None and hit[:4] == now:
            hits[p] = hit[4:]
        else:
            todo.append(p)
    return stamps, hits, todo


# ------------------------------------------------------------------------- check
def unreadable_images(paths: list[Path]) -> list[tuple[Path, str]]:
    """The files among ``paths`` that cannot be used, as (path, reason), in order: files that
    do not decode, and files ``refuse`` turns down. Verdicts come from the cache where a file's
    ``stamp`` is unchanged; the rest are checked (in parallel) and cached."""
    if not paths:
        return []
    started = time.perf_counter()
    where = cache_file(paths)
    cached = {k: v for k, v in read_cache(where, _judge(), 6).items()  # [*stamp, verdict, header]
              if v[4] is None or isinstance(v[4], str)}
    stamps, hits, todo = unchanged(paths, cached)
    verdicts: dict[Path, str | None] = {}
    for p, (verdict, header) in hits.items():
        verdicts[p] = verdict
        if header:
            HEADERS[os.path.abspath(p)] = tuple(header)
    for p, why in check_images(todo).items():
        verdicts[p] = why
    if todo:
        for p in todo:
            if stamps[p] is not None:
                cached[cache_key(p)] = [*stamps[p], verdicts[p], HEADERS.get(os.path.abspath(p))]
        write_cache(where, _judge(), cached)
    LAST_SCAN.update(files=len(paths), decoded=len(todo), seconds=time.perf_counter() - started)
    return [(p, verdicts[p]) for p in paths if verdicts[p] is not None]


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
