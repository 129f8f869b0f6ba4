"""Per-file caches on disk: the scan's decode verdicts (data/scan.py) and the duplicate
hashes (data/duplicates.py), each entry keyed by the file's absolute path and valid while its
``stamp`` (size, inode, modification and change time) is unchanged.

A cache is one JSON file of columns: {"judge": ..., "keys": [path, ...], "columns": [[the first
item of every entry], [the second], ...]}. Parallel lists parse four times faster than a dict
of 60,000 small lists, which cost half a second of a cached scan of CIFAR-10's folder.

Beside it, a summary (``*.sum.json``) seals the last list of files the cache answered in full:
the ``digest`` of the judge, every key in order and every stamp, with the answers as a table
of distinct values and one index per file. When the digest of a new scan is the same, the
summary answers alone: a few kB to parse instead of 8 MB for CIFAR-10.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
from array import array
from contextlib import contextmanager
from pathlib import Path

from imgclf.runs import write_text


def cache_dir() -> Path:
    """IMGCLF_CACHE_DIR, else $XDG_CACHE_HOME/imgclf, else ~/.cache/imgclf."""
    if os.environ.get("IMGCLF_CACHE_DIR"):
        return Path(os.environ["IMGCLF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgclf"


def cache_file(paths: list, kind: str = "scan", keys: list[str] | None = None) -> Path:
    """The cache of ``kind`` (scan: decode verdicts; hashes: data/duplicates.py's image hashes)
    for ``paths`` (or their ``cache_key``s, when the caller has them): one per data folder, the
    files' common parent."""
    if keys is None:
        cwd = os.getcwd()
        keys = [cache_key(p, cwd) for p in paths]
    # each key's folder by rpartition, not os.path.dirname (3 times its cost): the keys are
    # absolute, and commonpath normalises what rpartition leaves (/a/ for /a//b, '' for /b)
    common = os.path.commonpath([d or os.sep for d in {k.rpartition(os.sep)[0] for k in keys}])
    return cache_dir() / kind / (hashlib.sha1(common.encode("utf-8", "surrogateescape")).hexdigest()[:20]
                                 + ".json")


def cache_key(path, cwd: str | None = None) -> str:
    """A file's key in a per-file cache: ``Path.absolute()``'s string (not normalised), made
    without pathlib, which costs a second on a cached scan of 60,000 files."""
    text = os.fspath(path)
    return text if os.path.isabs(text) else os.path.join(cwd or os.getcwd(), text)


def cache_keys(paths: list) -> list[str]:
    """``cache_key`` of each of ``paths``."""
    texts = list(map(os.fspath, paths))
    # os.path.isabs on POSIX is a leading /, tested here without its call per file (30 ms at 60,000)
    if os.name == "posix" and all(t[:1] == "/" for t in texts):
        return texts
    cwd = os.getcwd()
    return [cache_key(t, cwd) for t in texts]


def stamp(path) -> list | None:
    """What identifies a file's content without reading it: size, inode, and the modification
    and change times (ctime moves on every write and cannot be set back by `cp -p`, `rsync -a`
    or `touch -r`)."""
    try:
        st = os.stat(path)
    except OSError:  # gone, a broken link, a symlink loop: decode again and say why
        return None
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def read_columns(file: Path, judge: dict, width: int) -> tuple[list[str], list[list]]:
    """A cache's keys and its ``width`` columns (``stamp``'s four first) when it was made under
    ``judge``; no keys for none, a damaged one, or one made otherwise."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        keys, columns = data["keys"], data["columns"]
        if (data["judge"] == judge and isinstance(keys, list) and isinstance(columns, list)
                and len(columns) == width and all(type(k) is str for k in keys)
                and all(isinstance(c, list) and len(c) == len(keys) for c in columns)):
            return keys, columns
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache, or a damaged one: the work is done again
    return [], [[] for _ in range(width)]


def read_cache(file: Path, judge: dict, width: int) -> dict:
    """A cache's entries, {absolute path: [*stamp, ...] (``width`` items)}: see read_columns."""
    keys, columns = read_columns(file, judge, width)
    return {k: list(v) for k, v in zip(keys, zip(*columns))}


def write_cache(file: Path, judge: dict, entries: dict) -> None:
    """Write ``entries`` ({absolute path: a list, all of one length}) as a cache of columns."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        columns = [list(c) for c in zip(*entries.values())]
        write_text(file, json.dumps({"judge": judge, "keys": list(entries), "columns": columns},
                                    separators=(",", ":"), allow_nan=False))
    except OSError:
        pass  # a read-only home costs the work again next time, nothing more


def digest(judge: dict, keys: list[str], stamps: list) -> str | None:
    """One hash of ``judge``, every key in order and every file's stamp (tuples of ints); None
    when a file has no stamp or one that does not pack."""
    if None in stamps:
        return None
    try:
        packed = array("q", itertools.chain.from_iterable(stamps)).tobytes()
    except (OverflowError, TypeError):
        return None
    sealed = hashlib.sha1(json.dumps(judge, sort_keys=True).encode())
    sealed.update("\0".join(keys).encode("utf-8", "surrogateescape"))  # NUL: in no path
    sealed.update(packed)
    return sealed.hexdigest()


def summary_file(file: Path) -> Path:
    return file.with_name(file.stem + ".sum.json")


def read_summary(file: Path, sealed: str, count: int) -> list | None:
    """The values a summary beside cache ``file`` holds for ``count`` files (one shared object
    per distinct value, each a tuple of its items), when its digest is ``sealed``; else None."""
    try:
        data = json.loads(summary_file(file).read_text(encoding="utf-8"))
        if data["digest"] != sealed or len(data["index"]) != count:
            return None
        table = [_frozen(v) for v in data["table"]]
        if all(type(i) is int and 0 <= i < len(table) for i in data["index"]):
            return list(map(table.__getitem__, data["index"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none, or a damaged one: the cache answers
    return None


def _frozen(value):
    """JSON's lists as tuples, all the way down."""
    return tuple(map(_frozen, value)) if isinstance(value, list) else value


def write_summary(file: Path, sealed: str, values: list) -> None:
    """Seal ``values`` (one hashable value per file, in the digest's order) beside cache ``file``."""
    table: dict = {}
    index = [table.setdefault(v, len(table)) for v in values]
    try:
        write_text(summary_file(file), json.dumps({"digest": sealed, "table": list(table), "index": index},
                                                  separators=(",", ":"), allow_nan=False))
    except OSError:
        pass  # as write_cache


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


@contextmanager
def no_gc():
    """Python's cycle collector paused: the 60,000 paths, names and cache entries of a scan hold
    no cycles, yet their allocation sets it off again and again over all the objects alive (a
    cached scan of CIFAR-10 took three times as long with it running)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
