"""Exact and near duplicates among a data set's images, and the groups they form.

Two images are exact duplicates when their decoded pixels are the same (RGB array and shape),
whatever their files' bytes; near duplicates when their perceptual hashes (imagehash.phash, 64
bits) differ in at most NEAR_DISTANCE bits. Pairs are joined into groups (connected components:
a chain of near pairs is one group). A file's two hashes are cached beside the scan cache
(data/scan.py), keyed the same way, so a second look at an unchanged folder decodes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imgclf.data.cache import cache_file, cache_key, read_cache, unchanged, write_cache
from imgclf.data.scan import open_quietly, printable

# phash bits (of 64) two images may differ in and count as near duplicates: a resize plus a
# JPEG re-encode moves 0-4 bits, unrelated photos differ in ~32 (a chain of such pairs is one group)
NEAR_DISTANCE = 4
HASH_VERSION = 1
Hashes = tuple[str, int]  # (the decoded pixels' digest, the 64-bit perceptual hash)


# ------------------------------------------------------------------------- hashing
def hash_image(im: Image.Image) -> Hashes:
    """(digest of the RGB pixels and their shape, phash as an int) of a PIL image."""
    rgb = im.convert("RGB")
    pixels = np.asarray(rgb)
    digest = hashlib.blake2b(repr(pixels.shape).encode() + pixels.tobytes(), digest_size=16).hexdigest()
    return digest, int(str(imagehash.phash(rgb)), 16)


def hash_file(path: Path) -> Hashes | None:
    """The file's hashes, or None where PIL cannot decode it."""
    try:
        with open_quietly(path) as im:
            return hash_image(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def array_hashes(x: np.ndarray) -> list[Hashes]:
    """The hashes of in-memory uint8 images, (N, H, W, 1|3)."""
    return [hash_image(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)) for a in x]


def _judge() -> dict:
    """What the hashes depend on besides the file: a cache made otherwise is not used."""
    return {"version": HASH_VERSION, "imagehash": md.version("imagehash"), "pillow": md.version("pillow")}


def file_hashes(paths: list[Path]) -> dict[Path, Hashes | None]:
    """{path: its hashes, or None if PIL cannot decode it}: from the cache where a file's
    ``stamp`` is unchanged, the rest hashed (in threads: decoding releases the GIL) and cached."""
    if not paths:
        return {}
    where = cache_file(paths, "hashes")
    cached = read_cache(where, _judge(), 6)  # [*stamp, pixel hash, phash hex]
    stamps, hits, todo = unchanged(paths, cached)
    out: dict[Path, Hashes | None] = {p: None if e[0] is None else (e[0], int(e[1], 16))
                                      for p, e in hits.items()}
    if not todo:
        return out
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for p, h in zip(todo, pool.map(hash_file, todo, chunksize=64)):
            out[p] = h
            if stamps[p] is not None:
                cached[cache_key(p)] = [*stamps[p], *((h[0], f"{h[1]:016x}") if h else (None, None))]
    write_cache(where, _judge(), cached)
    return out


# ------------------------------------------------------------------------- grouping
def near_pairs(codes: np.ndarray, max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i != j, of the 64-bit ``codes`` (distinct, uint64) within ``max_distance`` bits.

    Multi-index hashing: the 64 bits are cut into max_distance + 1 bands; two codes that differ
    in at most max_distance bits agree exactly on at least one band (pigeonhole), so only codes
    sharing a band's value are compared: sorted by the band, each code against the next k-th
    for k = 1, 2, ... while any k-th neighbour still shares the value (vectorised, no n^2)."""
    codes = np.asarray(codes, dtype=np.uint64)
    bands = max_distance + 1
    widths = [64 // bands + (1 if b < 64 % bands else 0) for b in range(bands)]
    found_i, found_j, shift = [], [], 0
    for width in widths:
        values = (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        shift += width
        order = np.argsort(values, kind="stable")
        ranked = values[order]
        for k in range(1, len(codes)):
            same = ranked[:-k] == ranked[k:]
            if not same.any():
                break
            i, j = order[:-k][same], order[k:][same]
            close = np.bitwise_count(codes[i] ^ codes[j]) <= max_distance
            found_i.append(i[close])
            found_j.append(j[close])
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)


def group_labels(hashes: list[Hashes], max_distance: int = NEAR_DISTANCE) -> np.ndarray:
    """A group label per image: images joined by exact or near pairs share one (connected
    components), every other image has a label of its own. Labels count from 0 in the order
    of each group's first member."""
    n = len(hashes)
    if n == 0:
        return np.empty(0, np.int64)
    _, exact = np.unique([h[0] for h in hashes], return_inverse=True)
    codes, near = np.unique(np.array([h[1] for h in hashes], dtype=np.uint64), return_inverse=True)
    items = np.arange(n)
    first_exact = np.full(exact.max() + 1, n)
    np.minimum.at(first_exact, exact, items)
    first_code = np.full(len(codes), n)
    np.minimum.at(first_code, near, items)
    a, b = near_pairs(codes, max_distance)
    rows = np.concatenate([items, items, first_code[a]])
    cols = np.concatenate([first_exact[exact], first_code[near], first_code[b]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)  # renumber in order of first members
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]


# ------------------------------------------------------------------------- report
@dataclass
class Member:
    split: str
    cls: str
    file: str


def scope(members: list[Member]) -> str:
    """within-class, cross-class, cross-split or cross-class+cross-split."""
    parts = (["cross-class"] if len({m.cls for m in members}) > 1 else []) + (
        ["cross-split"] if len({m.split for m in members}) > 1 else [])
    return "+".join(parts) or "within-class"


def duplicate_rows(members: list[Member], hashes: list[Hashes | None]) -> list[dict]:
    """duplicates.csv's rows: one per member of each group of two or more (group numbered from
    1, kind exact or near, scope, split, class, file, distance: phash bits from the first member).
    Images without hashes (not decodable by PIL) take no part."""
    kept = [i for i, h in enumerate(hashes) if h is not None]
    labels = group_labels([hashes[i] for i in kept])
    sizes = np.bincount(labels) if len(labels) else np.empty(0, np.int64)
    groups: dict[int, list[int]] = {}
    for pos, label in enumerate(labels):
        if sizes[label] > 1:
            groups.setdefault(int(label), []).append(kept[pos])
    rows = []
    for number, idx in enumerate(groups.values(), start=1):
        group = [members[i] for i in idx]
        kind = "exact" if len({hashes[i][0] for i in idx}) == 1 else "near"
        where = scope(group)
        head = hashes[idx[0]][1]
        for i, m in zip(idx, group):
            rows.append({"group": number, "kind": kind, "scope": where, "split": m.split, "class": m.cls,
                         "file": m.file, "distance": int(head ^ hashes[i][1]).bit_count()})
    return rows


def split_groups(hashes: list[Hashes | None]) -> np.ndarray:
    """A group label per image for data/splits.py (images without hashes alone in theirs)."""
    kept = [i for i, h in enumerate(hashes) if h is not None]
    labels = np.arange(len(hashes)) + len(hashes)  # alone, unless in a group below
    labels[kept] = group_labels([hashes[i] for i in kept])
    return labels


def bundle_hashes(bundle) -> tuple[list[Member], list[Hashes | None]]:
    """Every image of a DataBundle as a Member (split, class, id) and its hashes: the files of
    all splits hashed in one call (one cache), arrays hashed in memory."""
    members, paths = [], []
    for name, part in bundle.splits.items():
        members += [Member(name, bundle.class_names[int(c)], printable(str(i)))
                    for c, i in zip(part.y, part.ids)]
        if part.files is not None:
            paths += [Path(f) for f in part.files]
    if bundle.kind == "files":
        found = file_hashes(paths)
        return members, [found[p] for p in paths]
    return members, [h for part in bundle.splits.values() for h in array_hashes(part.x)]


def groups_for(part, dedupe: bool) -> np.ndarray | None:
    """data.dedupe_split's group labels of a Split about to be split (None when it is off)."""
    if not dedupe:
        return None
    if part.files is None:
        return split_groups(array_hashes(part.x))
    paths = [Path(f) for f in part.files]
    found = file_hashes(paths)
    return split_groups([found[p] for p in paths])


def grouped(rows: list[dict]) -> dict[int, list[dict]]:
    """duplicate_rows' rows by group number, in order."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    return groups


def crossing(groups: dict[int, list[dict]], scope: str) -> int:
    """How many groups cross ``scope`` (cross-class or cross-split)."""
    return sum(scope in g[0]["scope"] for g in groups.values())


def duplicates_line(bundle, data_path: str | None) -> str | None:
    """The start of `imgclf train`'s word on duplicates in a files source (its hashes cached
    like the scan's): how many groups, how many cross splits or classes, and where to look;
    None when there are none, or for arrays (hashed anew each time: `imgclf inspect` does it)."""
    if bundle.kind != "files":
        return None
    groups = grouped(duplicate_rows(*bundle_hashes(bundle)))
    if not groups:
        return None
    cross_split, cross_class = crossing(groups, "cross-split"), crossing(groups, "cross-class")
    return (f"duplicates: {len(groups)} group(s) of identical or near-identical images, {cross_split} "
            f"across splits (leakage), {cross_class} across classes (conflicting labels); "
            f"`imgclf inspect {data_path or 'CONFIG'}` lists them")
