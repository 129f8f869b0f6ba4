"""imgclf inspect's duplicates: exact (same pixels, any bytes), near (phash), their groups,
which cross classes or splits, data.dedupe_split, and the hash cache."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import pattern_image, write_class_folder
from imgclf.cli import app
from imgclf.config import load_config
from imgclf.data import duplicates, load_data
from imgclf.data.duplicates import NEAR_DISTANCE, file_hashes, group_labels, near_pairs
from imgclf.data.scan import cache_file

runner = CliRunner()


def photo(seed: int, size=64):
    """A smooth random picture (phash needs low frequencies to tell images apart)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def inspect(*args):
    result = runner.invoke(app, ["inspect", *map(str, args)])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip().splitlines()[-1])
    with open(out / "duplicates.csv", newline="") as fh:
        return result.output, out, list(csv.DictReader(fh))


def groups_of(rows):
    found = {}
    for r in rows:
        found.setdefault(r["group"], []).append(r)
    return found


@pytest.fixture
def dirty(tmp_path):
    """train/ and val/ of two classes, with planted duplicates: an exact pair across classes
    (two PNGs of the same pixels, different bytes), a near pair across splits (a JPEG resized
    and re-encoded), and unrelated pictures."""
    root = tmp_path / "dirty"
    for split in ("train", "val"):
        for c in ("roses", "tulips"):
            (root / split / c).mkdir(parents=True)
    for i in range(4):
        photo(100 + i).save(root / "train" / "roses" / f"r{i}.png")
        photo(200 + i).save(root / "train" / "tulips" / f"t{i}.png")
        photo(300 + i).save(root / "val" / ("roses" if i % 2 else "tulips") / f"v{i}.png")
    twin = photo(1)
    twin.save(root / "train" / "roses" / "twin.png", compress_level=0)
    twin.save(root / "train" / "tulips" / "twin.png", compress_level=9)
    near = photo(2, size=96)
    near.save(root / "train" / "roses" / "near.jpg", quality=95)
    near.resize((80, 80)).save(root / "val" / "roses" / "near.jpg", quality=70)
    return root


def test_exact_and_near_groups_across_classes_and_splits(dirty, tmp_path):
    a, b = dirty / "train" / "roses" / "twin.png", dirty / "train" / "tulips" / "twin.png"
    assert a.read_bytes() != b.read_bytes()  # the same pixels in other bytes
    output, out, rows = inspect(dirty, "--out", tmp_path / "look")
    assert out == tmp_path / "look" and (out / "samples.png").is_file()
    assert list(rows[0]) == ["group", "kind", "scope", "split", "class", "file", "distance"]
    found = {tuple(sorted(r["file"] for r in g)): g for g in groups_of(rows).values()}
    assert set(found) == {("train/roses/twin.png", "train/tulips/twin.png"),
                          ("train/roses/near.jpg", "val/roses/near.jpg")}  # nothing else grouped
    exact = found[("train/roses/twin.png", "train/tulips/twin.png")]
    assert {r["kind"] for r in exact} == {"exact"} and {r["scope"] for r in exact} == {"cross-class"}
    assert {r["class"] for r in exact} == {"roses", "tulips"} and {r["distance"] for r in exact} == {"0"}
    near = found[("train/roses/near.jpg", "val/roses/near.jpg")]
    assert {r["kind"] for r in near} == {"near"} and {r["scope"] for r in near} == {"cross-split"}
    assert {r["split"] for r in near} == {"train", "val"}
    assert 0 <= int(near[1]["distance"]) <= NEAR_DISTANCE
    assert "duplicates: 2 group(s) of 4 images: 1 exact (same pixels), 1 near" in output
    assert "1 cross-class (conflicting labels), 1 cross-split (leakage)" in output


def test_different_images_are_not_grouped(tmp_path, monkeypatch):
    data = write_class_folder(tmp_path / "data", {"cats": 6, "dogs": 6})
    monkeypatch.chdir(tmp_path)
    output, out, rows = inspect(data)  # no --out: a new folder under outputs/
    assert rows == [] and "duplicates: none" in output
    assert out.parent == Path("outputs") and out.name.endswith("-inspect-data")
    assert (tmp_path / out / "samples.png").is_file()
    hashes = [(f"{i}", int(v)) for i, v in enumerate([0, 0b1, 0xFFFF, 0xFFFF0000FFFF])]
    assert group_labels(hashes).tolist() == [0, 0, 1, 2]  # 1 bit apart: near; 16 and 32 bits: not


def test_near_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 400, dtype=np.uint64)
    flips = [int(b) ^ int(sum(1 << int(k) for k in rng.choice(64, rng.integers(0, 7), replace=False)))
             for b in base[:150]]
    codes = np.unique(np.concatenate([base, np.array(flips, dtype=np.uint64)]))
    i, j = near_pairs(codes, NEAR_DISTANCE)
    got = {tuple(sorted(p)) for p in zip(i.tolist(), j.tolist())}
    dist = np.bitwise_count(codes[:, None] ^ codes[None, :])
    want = set(zip(*[a.tolist() for a in np.nonzero(np.triu(dist <= NEAR_DISTANCE, 1))]))
    assert got == want and len(want) > 50


def test_dedupe_split_keeps_each_group_in_one_split(tmp_path):
    root = tmp_path / "flat"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ants", "bees")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pattern_image(c, rng, (32, 32)).save(root / name / f"{i}.png")
    for k in range(6):  # six photos, each also under the other class and again in its own
        pic = photo(50 + k)
        pic.save(root / "ants" / f"dup{k}.png")
        pic.save(root / "bees" / f"dup{k}.png")
        pic.save(root / "ants" / f"dup{k}b.png", compress_level=1)
    sets = ["data.source=folder", f"data.path={root}", "data.val_split=0.3", "data.test_split=0.3"]
    crossing = []
    for dedupe in (False, True):
        bundle = load_data(load_config(None, [*sets, f"data.dedupe_split={str(dedupe).lower()}"]).data, 3)
        where = {Path(f).relative_to(root).as_posix(): s for s, p in bundle.splits.items() for f in p.files}
        crossing.append(sum(len({where[f"{c}/dup{k}{x}.png"] for c, x in (("ants", ""), ("bees", ""),
                                                                         ("ants", "b"))}) > 1
                            for k in range(6)))
    assert crossing[0] > 0 and crossing[1] == 0  # seeded: without the switch some groups cross
    config = tmp_path / "flat.yaml"
    config.write_text(f"seed: 3\ndata: {{source: folder, path: {root}, val_split: 0.3, test_split: 0.3}}\n")
    _, _, rows = inspect(config, "--out", tmp_path / "o")
    assert any("cross-split" in r["scope"] for r in rows)
    output, _, rows = inspect(config, "--fix-split", "--out", tmp_path / "fixed")
    assert len(groups_of(rows)) == 6 and not any("cross-split" in r["scope"] for r in rows)
    assert "data.dedupe_split: each group stays in one of the splits imgclf makes" in output


def test_second_inspect_reuses_the_cached_hashes(dirty, tmp_path, monkeypatch):
    inspect(dirty, "--out", tmp_path / "first")
    files = sorted(dirty.rglob("*.*"))
    cached = json.loads(cache_file(files, "hashes").read_text())["keys"]
    assert {str(p) for p in files} <= set(cached)

    def refuse(path):
        raise AssertionError(f"hashed again: {path}")

    monkeypatch.setattr(duplicates, "hash_file", refuse)
    _, _, rows = inspect(dirty, "--out", tmp_path / "second")
    assert len(groups_of(rows)) == 2
    assert len(file_hashes(files)) == len(files)
    (dirty / "val" / "roses" / "v1.png").write_bytes((dirty / "val" / "roses" / "v1.png").read_bytes())
    with pytest.raises(AssertionError, match="hashed again: .*v1.png"):
        file_hashes(files)  # a rewritten file is hashed again


def test_inspect_bad_input_is_one_line(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "not found" in result.output
    data = write_class_folder(tmp_path / "data", {"cats": 3, "dogs": 3})
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["inspect", str(data), "--out", str(tmp_path / "file" / "sub")])
    assert result.exit_code != 0 and "Traceback" not in result.output and len(result.output.splitlines()) >= 1
    assert result.output.strip().splitlines()[-1].startswith("imgclf: error:")


def test_train_starts_with_a_word_on_duplicates_and_says_nothing_without(tmp_path):
    clean = tmp_path / "clean"
    for c, name in enumerate(("cats", "dogs")):
        (clean / name).mkdir(parents=True)
        for i in range(6):
            photo(100 * c + i).save(clean / name / f"{i}.png")
    dirty = tmp_path / "dirty"
    shutil.copytree(clean, dirty)
    photo(0).save(dirty / "dogs" / "also_cat_0.png")  # the same picture under two classes
    for folder, expect in ((clean, False), (dirty, True)):
        args = ["train", "--out", str(tmp_path / "runs"), "--set", "data.source=folder",
                "--set", f"data.path={folder}", "--set", "data.image_size=[16,16]", "--set", "train.epochs=1",
                "--set", "model.filters=[4]", "--set", "train.verbose=0", "--set", "output.gradcam=0"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        line = [ln for ln in result.output.splitlines() if ln.startswith("duplicates:")]
        assert bool(line) == expect, result.output
        if expect:
            assert "1 group(s)" in line[0] and "1 across classes" in line[0] and "imgclf inspect" in line[0]


def test_train_says_how_many_files_the_scan_checked_and_how_long_it_took(tmp_path):
    data = write_class_folder(tmp_path / "data", {"a": 5, "b": 5})
    args = ["train", "--out", str(tmp_path / "runs"), "--set", "data.source=folder",
            "--set", f"data.path={data}", "--set", "data.image_size=[16,16]", "--set", "train.epochs=1",
            "--set", "model.filters=[4]",
            "--set", "train.verbose=0", "--set", "output.gradcam=0", "--set", "data.val_split=0.4"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    lines = [[ln for ln in r.output.splitlines() if ln.startswith("scan:")] for r in (first, second)]
    assert lines[0] and "10 files checked" in lines[0][0] and "(10 decoded, 0 from the cache" in lines[0][0]
    assert lines[1] and "(0 decoded, 10 from the cache" in lines[1][0]
