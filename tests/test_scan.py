"""The scan's listing (find_images) and its cache of verdicts (unreadable_images), directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import imgclf.data.scan as scan
from conftest import pattern_image, write_class_folder
from imgclf.data.cache import cache_file, read_cache, summary_file, write_cache


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """A fresh cache folder; returns the list of the file names each check decoded."""
    monkeypatch.setenv("IMGCLF_CACHE_DIR", str(tmp_path / "cache"))
    decoded: list[list[str]] = []
    real = scan.check_images

    def counting(paths):
        decoded.append(sorted(Path(p).name for p in paths))
        return real(paths)

    monkeypatch.setattr(scan, "check_images", counting)
    return decoded


def test_find_images_is_pathlibs_order_without_hidden_files_or_followed_links(tmp_path, monkeypatch):
    root = tmp_path / "d"
    for rel in ["a/b.jpg", "a/b/x.JPG", "a/b-c.png", "a.b/z.png", "ab/y.gif", "a/.h.jpg", ".hid/q.jpg",
                "a/b/.d/e.jpg", "top.webp", "a/n.txt", "a/b c/é.jpeg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    os.symlink(root / "a", root / "link")  # a folder link: not followed
    os.symlink("l2.jpg", root / "a" / "l1.jpg")  # a loop: listed, as a file
    os.symlink("l1.jpg", root / "a" / "l2.jpg")
    found = scan.find_images(root)
    assert found == sorted(found) and all(type(p) is type(root) for p in found)
    assert [p.relative_to(root).as_posix() for p in found] == [
        "a/b/x.JPG", "a/b c/é.jpeg", "a/b-c.png", "a/b.jpg", "a/l1.jpg", "a/l2.jpg", "a.b/z.png",
        "ab/y.gif", "top.webp"]
    assert [str(p) for p in found] == [str(Path(str(p))) for p in found]  # texts as pathlib makes them
    monkeypatch.chdir(tmp_path)
    assert scan.find_images(Path("d")) == [Path("d") / p.relative_to(root) for p in found]
    assert scan.find_images(root / "missing") == []


def test_cached_verdicts_follow_each_file(tmp_path, counted):
    root = write_class_folder(tmp_path / "data", {"a": 3, "b": 3})
    (root / "a" / "bad.jpg").write_text("not a JPEG")
    files = scan.find_images(root)
    first = scan.unreadable_images(files)
    assert [(p.name, "Unknown image file format" in why) for p, why in first] == [("bad.jpg", True)]
    assert counted == [sorted(p.name for p in files)] and scan.LAST_SCAN["decoded"] == 7

    scan.HEADERS.clear()
    assert scan.unreadable_images(files) == first and len(counted) == 1  # all from the cache
    assert scan.LAST_SCAN["files"] == 7 and scan.LAST_SCAN["decoded"] == 0
    assert {str(p.absolute()) for p in files if p.name != "bad.jpg"} <= set(scan.HEADERS)

    victim = root / "b" / "img_000.png"  # rewritten in place, same size and modification time
    before = victim.stat()
    data = bytearray(victim.read_bytes())
    data[60:90] = b"\0" * 30
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    pattern_image(0, np.random.default_rng(1)).save(root / "a" / "new.png")  # added
    (root / "a" / "img_001.jpg").unlink()  # removed
    files = scan.find_images(root)
    again = scan.unreadable_images(files)
    assert counted[1:] == [["img_000.png", "new.png"]]
    assert sorted(p.name for p, _ in again) == ["bad.jpg", "img_000.png"]
    assert scan.unreadable_images(files) == again and len(counted) == 2


def test_a_cache_of_another_version_or_a_damaged_one_is_not_used(tmp_path, counted):
    root = write_class_folder(tmp_path / "data", {"a": 2, "b": 2})
    files = scan.find_images(root)
    where = cache_file(files)
    where.parent.mkdir(parents=True)
    # version 4's dict of entries, with the same stamps but a verdict that would skip every file
    stamps = {str(p): [*scan.stamp(p)] for p in files}
    old = {"judge": {**scan._judge(), "version": 4},
           "files": {k: [*v, "judged by version 4", None] for k, v in stamps.items()}}
    where.write_text(json.dumps(old))
    assert scan.unreadable_images(files) == [] and len(counted) == 1
    assert read_cache(where, scan._judge(), 6).keys() == stamps.keys()  # rewritten in columns
    for damaged in ("{", json.dumps({"judge": scan._judge(), "keys": [1], "columns": [[1]] * 6})):
        where.write_text(damaged)
        summary_file(where).unlink()  # else the summary answers alone (the test below)
        assert scan.unreadable_images(files) == []
    assert len(counted) == 3


def test_the_cache_keeps_any_width_of_entries(tmp_path):
    where = tmp_path / "c" / "x.json"
    entries = {"/a/b.png": [1, 2, 3, 4, "ab", None], "/a/c.png": [5, 6, 7, 8, None, [3, 4, True, False]]}
    write_cache(where, {"v": 1}, entries)
    assert read_cache(where, {"v": 1}, 6) == entries
    assert read_cache(where, {"v": 2}, 6) == {} and read_cache(where, {"v": 1}, 5) == {}


def test_the_summary_answers_an_unchanged_folder_alone_and_nothing_else(tmp_path, counted):
    root = write_class_folder(tmp_path / "data", {"a": 2, "b": 2})
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n but no more")
    files = scan.find_images(root)
    first = scan.unreadable_images(files)
    assert [p.name for p, _ in first] == ["bad.png"] and len(counted) == 1
    mine = [str(p.absolute()) for p in files if p.name != "bad.png"]
    headers = {k: scan.HEADERS[k] for k in mine}

    where = cache_file(files)
    where.write_text("{")  # the cache damaged: the summary of the same files and stamps answers
    scan.HEADERS.clear()
    assert scan.unreadable_images(files) == first and len(counted) == 1
    assert scan.HEADERS == headers and all(type(h) is tuple for h in headers.values())

    summary_file(where).write_text('{"digest": "x"')  # both damaged: everything is decoded again
    assert scan.unreadable_images(files) == first and len(counted) == 2
    good = [p for p in files if p.name != "bad.png"]
    assert scan.unreadable_images(good) == [] and len(counted) == 2  # another list: the cache answers

    victim = files[0]  # rewritten: its stamp seals another digest
    victim.write_bytes(b"gone")
    again = scan.unreadable_images(files)
    assert counted[2:] == [[victim.name]] and [p for p, _ in again] == [victim, root / "b" / "bad.png"]
