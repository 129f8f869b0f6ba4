"""A hostile or careless user, one row per bad input: broken and odd image files, bad configs and
command lines, interruptions, and files that would run code. Each row says what imgclf does
with it: the file is used (decoded correctly), skipped and listed, or never looked at; a bad
setting is one line and exit 2 before any training; an interruption loses nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from conftest import FAST, pattern_image
from imgclf.cli import app
from imgclf.config import Config, dump_yaml, load_config, valid_keys
from imgclf.errors import ConfigError

runner = CliRunner()
CLI = [sys.executable, "-m", "imgclf"]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def last_line_path(result) -> Path:
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


def one_line_error(result) -> str:
    """The single line a bad input must give, checked: exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclf: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# ---------------------------------------------------------------- the hostile folder
ANTS, BEES = "ants", "bées et guêpes"  # a class name with accents and spaces


def png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (grey or RGB), written by hand: PIL writes no 16-bit RGB."""
    h, w = pixels.shape[:2]
    color = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def bomb_png(path: Path, side: int, bad_text_crc: bool = False) -> None:
    """The start of a PNG declaring side x side RGB pixels: its header and a few zero rows.
    ``bad_text_crc`` adds a text chunk with a wrong checksum: PIL refuses the file, TensorFlow's
    decoder does not, so PIL alone cannot be the size check."""
    def chunk(kind, data, crc=None):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc or zlib.crc32(kind + data))

    rows = zlib.compressobj().compress(b"\0" * (3 * side + 1) * 8)
    head = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    text = chunk(b"tEXt", b"Comment\0hello", crc=12345) if bad_text_crc else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + text + chunk(b"IDAT", rows))


def pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def make_hostile_folder(root: Path) -> dict[str, np.ndarray]:
    """Good images of two classes plus every awkward file; returns {file: the RGB pixels a
    correct decoder gives} for the awkward files that must be used."""
    rng = np.random.default_rng(0)
    ants, bees = root / ANTS, root / BEES
    for folder in (ants, bees, root / "empty"):
        folder.mkdir(parents=True)
    for i in range(6):
        pattern_image(0, rng).save(ants / f"img_{i}.jpg", quality=95)
        pattern_image(1, rng).save(bees / f"bee ünï {i}.png")  # spaces and unicode in file names
    expect = {}

    good = (ants / "img_0.jpg").read_bytes()
    (ants / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (ants / "zero.jpg").write_bytes(b"")
    (ants / "notes.jpg").write_text("these are my notes, not a photo\n")

    frames = [pattern_image(0, rng) for _ in range(3)]  # an animated GIF among the JPEGs
    frames[0].save(ants / "moving.gif", save_all=True, append_images=frames[1:])
    expect[f"{ANTS}/moving.gif"] = pil_rgb(ants / "moving.gif")  # its first frame

    pattern_image(0, rng).convert("CMYK").save(ants / "cmyk.jpg", quality=95)
    expect[f"{ANTS}/cmyk.jpg"] = pil_rgb(ants / "cmyk.jpg")

    rgba = np.asarray(pattern_image(1, rng).convert("RGBA")).copy()
    rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2])  # the alpha is dropped, not blended
    Image.fromarray(rgba, "RGBA").save(bees / "rgba.png")
    expect[f"{BEES}/rgba.png"] = rgba[..., :3]

    deep = rng.integers(0, 65536, (16, 16, 3)).astype(np.uint16)
    png16(bees / "rgb16.png", deep)
    expect[f"{BEES}/rgb16.png"] = np.round(deep / 257.0).astype(np.uint8)
    grey16 = rng.integers(0, 65536, (16, 16)).astype(np.uint16)
    png16(bees / "grey16.png", grey16)
    expect[f"{BEES}/grey16.png"] = np.repeat(np.round(grey16 / 257.0).astype(np.uint8)[..., None], 3, -1)

    pattern_image(0, rng).save(ants / "modern.webp", lossless=True)  # WebP among the JPEGs
    expect[f"{ANTS}/modern.webp"] = pil_rgb(ants / "modern.webp")

    pattern_image(1, rng).convert("L").save(bees / "grey.jpg", quality=95)  # greyscale beside RGB
    expect[f"{BEES}/grey.jpg"] = pil_rgb(bees / "grey.jpg")

    Image.new("RGB", (10_000, 10_000), (200, 30, 90)).save(ants / "huge.jpg", quality=50)
    expect[f"{ANTS}/huge.jpg"] = np.full((16, 16, 3), (200, 30, 90), np.uint8)  # compared resized

    # a PNG whose header declares 40,000 x 40,000 pixels (4.8 GB decoded): a bomb's first rows
    bomb_png(ants / "bomb.png", 40_000)
    bomb_png(ants / "sly_bomb.png", 40_000, bad_text_crc=True)
    with open(os.fsencode(ants) + b"/caf\xe9.jpg", "wb") as fh:  # a Latin-1 name, from an old zip
        fh.write(good)

    os.symlink("loop_b.jpg", ants / "loop_a.jpg")  # two links that point at each other
    os.symlink("loop_a.jpg", ants / "loop_b.jpg")
    os.symlink("..", ants / "up")  # a folder link back up the tree
    (ants / ".hidden.jpg").write_bytes(good)
    (ants / "._img_0.jpg").write_bytes(b"\0\5\26\7 AppleDouble junk")  # macOS resource fork
    (bees / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return expect


# (case, file, what happens, a fragment of the reason when skipped)
USED, SKIPPED, UNSEEN = "used", "skipped", "never read"
CASES = [
    ("truncated JPEG", f"{ANTS}/truncated.jpg", SKIPPED, "JPEG"),
    ("zero-byte file", f"{ANTS}/zero.jpg", SKIPPED, "empty file"),
    ("text file named .jpg", f"{ANTS}/notes.jpg", SKIPPED, "Unknown image file format"),
    ("animated GIF among JPEGs", f"{ANTS}/moving.gif", USED, None),
    ("CMYK JPEG", f"{ANTS}/cmyk.jpg", USED, None),
    ("WebP among JPEGs", f"{ANTS}/modern.webp", USED, None),
    ("RGBA PNG", f"{BEES}/rgba.png", USED, None),
    ("16-bit RGB PNG", f"{BEES}/rgb16.png", USED, None),
    ("16-bit greyscale PNG", f"{BEES}/grey16.png", USED, None),
    ("greyscale JPEG beside RGB", f"{BEES}/grey.jpg", USED, None),
    ("10,000 x 10,000 image", f"{ANTS}/huge.jpg", USED, None),
    ("decompression bomb (40,000 x 40,000 header)", f"{ANTS}/bomb.png", SKIPPED, "too large"),
    ("bomb that PIL cannot open (bad text chunk)", f"{ANTS}/sly_bomb.png", SKIPPED, "too large"),
    ("file name not valid UTF-8", f"{ANTS}/caf\\xe9.jpg", SKIPPED, "not valid UTF-8"),
    ("unicode and spaces in class and file names", f"{BEES}/bee ünï 0.png", USED, None),
    ("empty class folder", "empty/", SKIPPED, "left out"),
    ("symlink loop (files)", f"{ANTS}/loop_a.jpg", SKIPPED, "symbolic links"),
    ("symlink loop (folder)", f"{ANTS}/up/{ANTS}/img_0.jpg", UNSEEN, None),
    ("hidden file", f"{ANTS}/.hidden.jpg", UNSEEN, None),
    ("macOS ._ file", f"{ANTS}/._img_0.jpg", UNSEEN, None),
    ("macOS .DS_Store", f"{BEES}/.DS_Store", UNSEEN, None),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The folder, and every command run on it once: train, predict, evaluate --data, inspect."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "data"
    expect = make_hostile_folder(root)
    train = runner.invoke(app, ["train", *sets(FAST + ["train.epochs=1", "data.source=folder",
                                                       f"data.path={root}", "data.image_size=16",
                                                       "data.val_split=0.25"]),
                                "--out", str(base / "runs")])
    run = last_line_path(train)
    predict = runner.invoke(app, ["predict", str(run), str(root), "--output", str(base / "pred.csv")])
    evaluate = runner.invoke(app, ["evaluate", str(run), "--data", str(root), "--name", "again"])
    inspect = runner.invoke(app, ["inspect", str(root), "--grid", str(base / "grid.png"), "--out",
                                  str(base / "inspect")])
    return dict(root=root, expect=expect, run=run, train=train, predict=predict, evaluate=evaluate,
                inspect=inspect, base=base)


def listed(path: Path) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines())


def test_every_command_finishes_on_the_hostile_folder(hostile):
    for name in ("train", "predict", "evaluate", "inspect"):
        result = hostile[name]
        assert result.exit_code == 0, f"{name}: {result.output}"
        assert "Traceback" not in result.output
    run = hostile["run"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert json.loads((run / "classes.json").read_text()) == [ANTS, BEES]  # empty/ left out
    assert "skipped 8 unreadable file(s) and 1 folder(s)" in hostile["train"].output  # loop_b too


@pytest.mark.parametrize("case, file, outcome, reason", CASES, ids=[c[0] for c in CASES])
def test_bad_input(hostile, case, file, outcome, reason):
    run, root = hostile["run"], hostile["root"]
    in_run = listed(run / "bad_files.txt")
    in_eval = listed(run / "eval" / "again" / "bad_files.txt")
    rows = {r["file"]: r for r in csv.DictReader((hostile["base"] / "pred.csv").open(encoding="utf-8"))}
    inspected = hostile["inspect"].output
    if outcome == SKIPPED:
        assert reason in in_run[file] and reason in in_eval[file]
        assert file in inspected
        if not file.endswith("/"):  # predict lists files, not folders
            assert reason in rows[file]["error"] and rows[file]["top1_label"] == ""
    else:
        assert file not in in_run and file not in in_eval
    if outcome == UNSEEN:
        assert file not in rows and file not in inspected
    if outcome == USED:
        assert rows[file]["error"] == "" and rows[file]["top1_label"] in (ANTS, BEES)
        # and it decodes to the right pixels, the way training reads it
        import tensorflow as tf

        from imgclf.data.decode import decode_file, decode_image

        want = hostile["expect"].get(file)
        if file.endswith("huge.jpg"):
            got = decode_image(tf.constant(str(root / file)), (16, 16)).numpy()
        else:
            got = decode_file(tf.constant(str(root / file))).numpy()
        if want is not None:
            assert got.shape == want.shape
            assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.0


def _damage(run: Path, what: str) -> None:
    if what == "run.json cut short":
        (run / "run.json").write_text('{"status": "fin')
    elif what == "classes.json not JSON":
        (run / "classes.json").write_text("ants, bees")
    elif what == "classes.json not a list":
        (run / "classes.json").write_text('{"ants": 0}')
    elif what == "model.keras cut short":
        (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:500])
    elif what == "model.keras missing":
        (run / "model.keras").unlink()
    elif what == "config.yaml damaged":
        (run / "config.yaml").write_text("model: {name: 3")


DAMAGED_RUNS = [  # (damage, the line evaluate and predict give)
    ("run.json cut short", "run.json: not valid JSON"),
    ("classes.json not JSON", "classes.json: not valid JSON"),
    ("classes.json not a list", "expected a list of at least two class names"),
    ("model.keras cut short", "not a .keras file"),
    ("model.keras missing", "has no model.keras"),
    ("config.yaml damaged", "the saved config no longer loads"),
]


@pytest.mark.parametrize("damage, message", DAMAGED_RUNS, ids=[d for d, _ in DAMAGED_RUNS])
def test_a_damaged_run_directory(hostile, tmp_path, damage, message):
    """evaluate and predict refuse it in one line; compare still shows the other runs."""
    import shutil

    run = tmp_path / "damaged"
    shutil.copytree(hostile["run"], run, ignore=shutil.ignore_patterns("eval"))
    _damage(run, damage)
    for args in (["evaluate", str(run)], ["predict", str(run), str(hostile["root"] / ANTS)]):
        assert message in one_line_error(runner.invoke(app, args))
    compared = runner.invoke(app, ["compare", str(run), str(hostile["run"]), "--format", "csv"])
    assert compared.exit_code == 0, compared.output
    rows = list(csv.DictReader(io.StringIO(compared.stdout)))
    assert [r["status"] for r in rows][1] == "finished" and len(rows) == 2


def test_predict_paths_are_relative_to_its_input(hostile):
    rows = list(csv.DictReader((hostile["base"] / "pred.csv").open(encoding="utf-8")))
    files = [r["file"] for r in rows]
    assert files == sorted(files) and all(not f.startswith("/") for f in files)
    assert f"{BEES}/bee ünï 3.png" in files


def test_the_scan_runs_once_and_is_cached(tmp_path, monkeypatch):
    """Every file is decoded once by the scan, whatever the epochs; a second command decodes
    only what changed since."""
    import imgclf.data.scan as scan
    from conftest import write_class_folder

    root = write_class_folder(tmp_path / "data", {"a": 6, "b": 6})
    (root / "a" / "bad.jpg").write_text("not a JPEG")
    checked = []
    real = scan.check_images

    def counting(paths):
        if paths:  # the files actually decoded
            checked.append(len(paths))
        return real(paths)

    monkeypatch.setattr(scan, "check_images", counting)
    overrides = FAST + ["train.epochs=3", "data.source=folder", f"data.path={root}", "data.image_size=16",
                        "train.early_stopping.enabled=false"]
    run = last_line_path(runner.invoke(app, ["train", *sets(overrides), "--out", str(tmp_path / "runs")]))
    assert len(pd.read_csv(run / "history.csv")) == 3
    assert checked == [13]  # 13 files, checked once for three epochs
    assert list(listed(run / "bad_files.txt")) == ["a/bad.jpg"]

    last_line_path(runner.invoke(app, ["train", *sets(overrides), "--out", str(tmp_path / "runs")]))
    assert checked[1:] == []  # all 13 verdicts from the cache: nothing decoded again
    pattern_image(0, np.random.default_rng(1)).save(root / "a" / "bad.jpg")  # mended
    # and a good PNG damaged in place: same size, its modification time put back (as cp -p would)
    victim = root / "b" / "img_000.png"
    before = victim.stat()
    data = bytearray(victim.read_bytes())
    data[60:90] = b"\x00" * 30  # inside the compressed pixels
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert victim.stat().st_size == before.st_size and victim.stat().st_mtime_ns == before.st_mtime_ns
    run = last_line_path(runner.invoke(app, ["train", *sets(overrides), "--out", str(tmp_path / "runs")]))
    assert checked[1:] == [2]  # the mended file and the damaged one, nothing else
    assert list(listed(run / "bad_files.txt")) == ["b/img_000.png"]


# ---------------------------------------------------------------- configs and command lines
@pytest.fixture
def files(tmp_path):
    (tmp_path / "broken.yaml").write_text("data: {source: digits\n  oops")
    (tmp_path / "unknown.yaml").write_text("train:\n  epocs: 3\n")
    (tmp_path / "types.yaml").write_text("train:\n  epochs: [1, 2]\n")
    (tmp_path / "list.yaml").write_text("- train\n- epochs\n")
    (tmp_path / "code.yaml").write_text(
        f"output:\n  name: !!python/object/apply:os.mkdir ['{tmp_path}/pwned']\n")
    (tmp_path / "a_file").write_text("a file where a folder should be")
    return tmp_path


CONFIG_CASES = [
    ("malformed YAML", ["-c", "{d}/broken.yaml"], "malformed YAML"),
    ("unknown key, with a suggestion", ["-c", "{d}/unknown.yaml"], "did you mean train.epochs?"),
    ("unknown --set key", ["--set", "data.val_splt=0.1"], "did you mean data.val_split?"),
    ("wrong type in a file", ["-c", "{d}/types.yaml"], "train.epochs"),
    ("wrong type in --set", ["--set", "train.epochs=ten"], "valid integer"),
    ("a YAML list, not a mapping", ["-c", "{d}/list.yaml"], "mapping"),
    ("zero epochs", ["--set", "train.epochs=0"], "greater than 0"),
    ("negative epochs", ["--set", "train.epochs=-5"], "greater than 0"),
    ("zero batch size", ["--set", "data.batch_size=0"], "greater than 0"),
    ("negative batch size", ["--set", "data.batch_size=-32"], "greater than 0"),
    ("val_split 1.5", ["--set", "data.val_split=1.5"], "less than 1"),
    ("missing data path", ["--set", "data.source=folder", "--set", "data.path={d}/nowhere"],
     "data folder not found"),
    ("missing config file", ["-c", "{d}/nowhere.yaml"], "config file not found"),
    ("unknown model name", ["--set", "model.name=resnet9000"], "Unknown model"),
    ("output dir that cannot be made", ["--out", "{d}/a_file/runs"], "cannot create output directory"),
    ("--set without a value", ["--set", "train.epochs"], "expected section.key=value"),
    ("code in a YAML tag", ["-c", "{d}/code.yaml"], "malformed YAML"),
]


@pytest.mark.parametrize("case, args, message", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(files, case, args, message, monkeypatch):
    monkeypatch.chdir(files)  # outputs/ would land here if anything got that far
    started = []
    import imgclf.training.trainer as trainer

    monkeypatch.setattr(trainer, "_train_in", lambda *a, **k: started.append(1))
    result = runner.invoke(app, ["train", *[a.format(d=files) for a in args]])
    assert message in one_line_error(result)
    assert not started  # failed before any training
    assert not (files / "outputs").exists() or not any((files / "outputs").iterdir())
    assert not (files / "pwned").exists()


USAGE_CASES = [
    ("unknown option", ["train", "--epochs", "5"], "No such option: --epochs"),
    ("misspelt command", ["trian"], "Did you mean 'train'?"),
    ("missing argument", ["predict"], "Missing argument"),
    ("option without its value", ["train", "--config"], "requires an argument"),
    ("text for a number", ["predict", "r", "i", "--top-k", "three"], "--top-k"),
]


@pytest.mark.parametrize("case, args, message", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_bad_command_line(case, args, message):
    """Through the console entry point (Typer's own usage errors included): one line, exit 2."""
    proc = subprocess.run(CLI + args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclf: error: ") and message in lines[0], proc.stderr


# ---------------------------------------------------------------- fuzzing configs and --set
KEYS = valid_keys()
NAMES = sorted({part for key in KEYS for part in key.split(".")})
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["digits", "folder", "adam", "cosine", "flip", "auto", "max",
                                           "1e-3", "0x10", "yes", "~", ".inf", "-.nan"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), inner,
                                                 max_size=4)), max_leaves=10)
configs = st.dictionaries(st.sampled_from(["data", "model", "train", "augment", "output", "tune", "seed",
                                           "augment_on"]) | st.text(max_size=8), values, max_size=5)
value_texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["[1, 2", "{a: b}", "!!python/object/apply:os.system ['false']", "!!binary AAAA",
                     "&a [*a]", "nan", "-inf", "1e400", "0b101", "'quoted'", "[[]]", "{}", "null", "=",
                     "\x00"]),
    scalars.map(lambda v: yaml_text(v)),
)
overrides = st.tuples(st.sampled_from(KEYS) | st.text(max_size=15), value_texts).map(
    lambda kv: f"{kv[0]}={kv[1]}")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def yaml_text(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _loads_or_one_line_error(*args) -> Config | None:
    """A config loads, or it is a ConfigError with a one-line message: never another error."""
    try:
        cfg = load_config(*args)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(cfg, Config)
    return cfg


@FUZZ
@given(raw=configs)
def test_fuzzed_config_files_load_or_fail_in_one_line(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    cfg = _loads_or_one_line_error(path)
    if cfg is not None:  # what loads, saves as a config that loads the same
        again = path.with_name("resolved.yaml")
        again.write_text(dump_yaml(cfg), encoding="utf-8")
        assert load_config(again) == cfg


@FUZZ
@given(text=st.text(max_size=80) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_fuzzed_yaml_text_loads_or_fails_in_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    _loads_or_one_line_error(path)


@FUZZ
@given(items=st.lists(overrides, min_size=1, max_size=4))
def test_fuzzed_set_overrides_load_or_fail_in_one_line(items):
    cfg = _loads_or_one_line_error(None, items)
    if cfg is not None:
        assert load_config(None, [f"seed={cfg.seed}"]).seed == cfg.seed


@settings(max_examples=25, deadline=None)
@given(item=overrides)
def test_fuzzed_set_through_the_command_line(item):
    result = runner.invoke(app, ["config", "--set", item])
    if result.exit_code != 0:
        one_line_error(result)
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- interruptions
def _wait_for(predicate, proc, timeout=300.0):
    end = time.monotonic() + timeout  # a guard against hanging, not a speed target
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _checkpointed(out: Path, epochs: int):
    def done():
        states = list(out.glob("*/checkpoint/state.json"))
        try:
            return bool(states) and json.loads(states[0].read_text())["epoch"] >= epochs
        except (OSError, ValueError):
            return False
    return done


LONG_RUN = ["train.epochs=400", "train.verbose=2", "model.filters=[8]", "model.dense_units=8",
            "train.early_stopping.enabled=false"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_train_saves_state_and_says_how_to_resume(tmp_path, sig):
    out = tmp_path / "runs"
    proc = subprocess.Popen(CLI + ["train", *sets(LONG_RUN), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(_checkpointed(out, 1), proc), "no epoch was checkpointed"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    (run,) = out.iterdir()
    assert f"resume with: imgclf train --resume {run}" in stdout
    assert "Traceback" not in stderr
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "interrupted"
    done = len(pd.read_csv(run / "history.csv"))
    assert done >= 1 and (run / "model.keras").is_file()  # the best model so far
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == done  # the checkpoint is the last finished epoch


@pytest.mark.slow
def test_sigkill_loses_at_most_the_epoch_in_progress(tmp_path):
    """No handler runs on SIGKILL: run.json still says running, readers see the dead process
    and call the run interrupted, and --resume repeats only the epoch that was cut off."""
    out = tmp_path / "runs"
    recipe = ["train.epochs=5", "train.verbose=2", "model.filters=[8]", "model.dense_units=8",
              "train.early_stopping.enabled=false", "train.optimizer.lr=0.01",
              "train.schedule.name=cosine", "train.schedule.warmup_epochs=1"]
    proc = subprocess.Popen(CLI + ["train", *sets(recipe), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(_checkpointed(out, 2), proc), "no second epoch was checkpointed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    (run,) = out.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    saved = json.loads((run / "checkpoint" / "state.json").read_text())["epoch"]
    assert saved >= 2

    compared = runner.invoke(app, ["compare", str(run), "--format", "csv"])
    assert compared.exit_code == 0, compared.output
    row = next(csv.DictReader(io.StringIO(compared.stdout)))
    assert row["status"] == "interrupted"  # not "running": its process is gone

    resumed = runner.invoke(app, ["train", "--resume", str(run)])
    assert last_line_path(resumed) == run
    assert f"after epoch {saved} of 5" in resumed.output
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]  # each epoch once
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed"] == 1
    # the schedule went on from its step count: the rates are an uninterrupted run's
    whole = last_line_path(runner.invoke(app, ["train", *sets(recipe), "--out", str(tmp_path / "whole")]))
    np.testing.assert_allclose(history["lr"], pd.read_csv(whole / "history.csv")["lr"], rtol=1e-6)


def test_resume_refuses_a_run_its_process_is_still_writing(tmp_path):
    from imgclf.runs import Manifest, _started, holding, live_status

    run = tmp_path / "live"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    Manifest(run, "train")
    owner = subprocess.Popen(["sleep", "60"])  # the process that "writes" the run
    try:
        data = json.loads((run / "run.json").read_text())
        data.update(pid=owner.pid, pid_started=_started(owner.pid))
        (run / "run.json").write_text(json.dumps(data))
        assert data["host"] == socket.gethostname() and live_status(data) == "running"
        result = runner.invoke(app, ["train", "--resume", str(run)])
        assert f"process {owner.pid} on this machine is still running it" in one_line_error(result)
    finally:
        owner.kill()
        owner.wait()
    assert live_status(data) == "interrupted"  # gone: a reader no longer calls it running
    data["pid_started"] = 1  # a live process that reuses a dead run's number is not its owner
    data["pid"] = os.getppid()
    assert live_status(data) == "interrupted"

    with holding(run):  # another imgclf process in the run, whatever run.json says
        result = runner.invoke(app, ["train", "--resume", str(run)])
    assert "another imgclf process is working in this run" in one_line_error(result)


@pytest.mark.slow
def test_sigterm_during_tune_saves_the_search_and_says_how_to_resume(tmp_path):
    tune_dir = tmp_path / "sweep"
    space = ["tune.max_trials=20", "train.epochs=1", "model.filters=[8]", "model.dense_units=8",
             "tune.space={train.optimizer.lr: {float: [0.0001, 0.01], log: true}}"]
    proc = subprocess.Popen(CLI + ["tune", *sets(space), "--dir", str(tune_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: bool(list(tune_dir.glob("trials/trial_*.json"))), proc), "no trial ended"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert f"resume with: imgclf tune --resume {tune_dir}" in stdout and "Traceback" not in stderr
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "interrupted"
    ended = len(list(tune_dir.glob("trials/trial_*.json")))
    assert 1 <= ended < 20 and len(pd.read_csv(tune_dir / "trials.csv")) >= ended


def test_every_file_of_a_run_is_written_atomically(tmp_path, monkeypatch):
    """Each file in a run directory arrives by rename from a temporary file beside it, so a
    crash leaves the old file or the new one, never half of one."""
    renamed = set()
    real = os.replace

    def recording(src, dst, *args, **kwargs):
        renamed.add(Path(dst).resolve())
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording)
    overrides = FAST + ["train.epochs=2", "train.early_stopping.enabled=false", "output.name=atomic"]
    run = last_line_path(runner.invoke(app, ["train", *sets(overrides), "--out", str(tmp_path)]))
    evaluated = last_line_path(runner.invoke(app, ["evaluate", str(run), "--split", "val"]))
    written = {p.resolve() for p in run.rglob("*") if p.is_file()}
    assert evaluated.resolve().parent.parent == run.resolve()
    assert {"model.keras", "history.csv", "run.json", "report.html", "predictions.csv"} <= {
        p.name for p in written}
    assert written - renamed == set()  # no file was written in place
    assert not [p for p in run.rglob(".*") if p.is_file()]  # and no temporary file was left


# ---------------------------------------------------------------- files that would run code
@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("untrusted") / "lambda.keras"
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)  # bytecode inside the file
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(path)
    return path


def test_a_model_with_a_lambda_is_refused_unless_unsafe(lambda_model, tmp_path):
    image = tmp_path / "one.png"
    pattern_image(0, np.random.default_rng(0)).save(image)
    refused = runner.invoke(app, ["predict", str(lambda_model), str(image)])
    assert "holds Python code (a Lambda layer)" in one_line_error(refused)
    assert "--unsafe" in refused.output
    trusted = runner.invoke(app, ["predict", str(lambda_model), str(image), "--unsafe"])
    assert trusted.exit_code == 0, trusted.output
    assert "one.png," in trusted.stdout


def test_evaluate_refuses_a_run_whose_model_holds_code(lambda_model, tmp_path):
    import shutil

    run = last_line_path(runner.invoke(app, ["train", *sets(FAST + ["train.epochs=1"]),
                                             "--out", str(tmp_path)]))
    shutil.copy(lambda_model, run / "model.keras")  # a run directory someone sent us
    result = runner.invoke(app, ["evaluate", str(run), "--split", "val"])
    assert "holds Python code" in one_line_error(result)
    assert not (run / "eval").exists()  # refused before any work


def test_predict_exits_non_zero_when_no_file_could_be_read(hostile, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("no")
    (junk / "b.png").write_bytes(b"")
    proc = subprocess.run(CLI + ["predict", str(hostile["run"]), str(junk)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "predicted 0 of 2 file(s)" in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 3  # the header and two error rows


def test_a_bug_of_ours_is_one_line_unless_debugging(monkeypatch, capsys):
    import imgclf.comparison
    from imgclf.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("something we did not foresee\nover two lines")

    monkeypatch.setattr(imgclf.comparison, "compare", broken)
    monkeypatch.setattr(sys, "argv", ["imgclf", "compare", "somewhere"])
    monkeypatch.delenv("IMGCLF_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imgclf: internal error: RuntimeError: something we did")
    assert "IMGCLF_DEBUG=1" in err[0]
    monkeypatch.setenv("IMGCLF_DEBUG", "1")
    with pytest.raises(RuntimeError, match="did not foresee"):
        main()


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_signal_that_lands_in_a_finalizer_still_stops_the_run(tmp_path, monkeypatch, command):
    """Raised inside a __del__, a KeyboardInterrupt would be printed as 'Exception ignored' and
    lost; the handler holds it instead and the next training batch raises it."""
    from imgclf.training.callbacks import Checkpoint

    save = Checkpoint.on_epoch_end

    class Garbage:
        def __del__(self):  # the signal arrives while the collector runs this
            handler = signal.getsignal(signal.SIGTERM)
            handler(signal.SIGTERM, sys._getframe())

    def epoch_end(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch == 0:
            Garbage()  # collected at once: its __del__ runs here, and must not raise

    monkeypatch.setattr(Checkpoint, "on_epoch_end", epoch_end)
    overrides = FAST + ["train.epochs=5", "train.early_stopping.enabled=false"]
    if command == "tune":
        overrides += ["tune.max_trials=3", "tune.space={model.dropout: {choice: [0.1, 0.2, 0.3]}}"]
    result = runner.invoke(app, [command, *sets(overrides), "--out", str(tmp_path)])
    assert result.exit_code == 130, result.output
    assert f"resume with: imgclf {command} --resume" in result.output
    runs = [p.parent for p in tmp_path.rglob("history.csv")]
    assert len(runs) == 1  # the first run (or trial) stopped; no other began
    assert len(pd.read_csv(runs[0] / "history.csv")) == 1  # at the first batch after the signal
    assert json.loads((runs[0] / "run.json").read_text())["status"] == "interrupted"


def test_the_reports_say_what_was_skipped(hostile):
    for report in (hostile["run"] / "report.html", hostile["run"] / "eval" / "again" / "report.html"):
        assert "Skipped 8 unreadable file(s) and 1 folder(s), e.g. " in report.read_text(encoding="utf-8")


# ---------------------------------------------------------------- data.path, wrongly aimed
def test_data_path_at_a_file_or_at_loose_images_says_what_is_expected(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        pattern_image(i % 2, np.random.default_rng(i)).save(loose / f"{i}.png")

    def train_on(path):
        return runner.invoke(app, ["train", *sets(["data.source=folder", f"data.path={path}"]),
                                   "--out", str(tmp_path)])

    line = one_line_error(train_on(loose / "0.png"))
    assert "is a file" in line and "not found" not in line and "folder of class folders" in line
    line = one_line_error(train_on(loose))
    assert "this folder holds 3 images directly: point data.path at the folder of class folders" in line
    assert "0 classes" not in line
