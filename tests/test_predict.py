"""predict: one row per file in sorted order, error rows for files that do not decode, and
the same probabilities the run computed for the same images."""

import csv
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from imgclf.cli import app
from imgclf.runs import prob_columns

runner = CliRunner()


def predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


@pytest.fixture
def mixed_folder(folder_run, tmp_path):
    """Good images (nested), a truncated JPEG, a zero-byte file and a text file named .jpg."""
    cfg_root = folder_run.parent.parent / "data"
    root = tmp_path / "incoming"
    (root / "deep" / "er").mkdir(parents=True)
    good = sorted((cfg_root / "ants").glob("*.jpg"))[:2] + sorted((cfg_root / "wasps").glob("*.png"))[:3]
    for i, src in enumerate(good):
        shutil.copy(src, (root if i % 2 else root / "deep" / "er") / f"g{i}{src.suffix}")
    jpeg = good[0].read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "zero.jpg").write_bytes(b"")
    (root / "deep" / "notes.jpg").write_text("these are my notes, not a photo\n")
    return root


def test_rows_and_error_rows(folder_run, mixed_folder, tmp_path):
    out = tmp_path / "pred.csv"
    result = predict(folder_run, mixed_folder, "--top-k", "2", "--output", out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    files = [r["file"] for r in rows]
    expected = sorted(p.relative_to(mixed_folder).as_posix() for p in mixed_folder.rglob("*.*"))
    assert files == expected  # every file once, sorted, relative to the input folder
    assert list(rows[0]) == ["file", "top1_label", "top1_prob", "top2_label", "top2_prob", "error"]

    errors = {r["file"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"truncated.jpg", "zero.jpg", "deep/notes.jpg"}
    assert errors["zero.jpg"] == "empty file"
    assert "JPEG" in errors["truncated.jpg"] and "format" in errors["deep/notes.jpg"]
    for r in rows:
        if r["error"]:
            assert r["top1_label"] == r["top1_prob"] == ""
        else:
            assert {r["top1_label"], r["top2_label"]} <= {"ants", "bees", "wasps"}
            assert r["top1_label"] != r["top2_label"]
            assert 1.0 >= float(r["top1_prob"]) >= float(r["top2_prob"]) >= 0.0
    for name in errors:  # a warning each, and a summary that counts them
        assert f"warning: {name}:" in result.output
    assert "predicted 5 of 8 file(s), 3 unreadable" in result.output


def test_probabilities_match_the_runs_predictions(folder_run, tmp_path):
    data = folder_run.parent.parent / "data"
    out = tmp_path / "pred.json"
    result = predict(folder_run, data, "--top-k", "3", "--output", out)
    assert result.exit_code == 0, result.output
    got = {r["file"]: {t["label"]: t["prob"] for t in r["top"]} for r in json.loads(out.read_text())}
    assert len(got) == 30 and all(r for r in got.values())
    names = json.loads((folder_run / "classes.json").read_text())
    preds = pd.read_csv(folder_run / "predictions.csv", keep_default_na=False)
    for _, row in preds.iterrows():
        expect = row[prob_columns(names)].to_numpy(dtype=float)
        np.testing.assert_allclose([got[row["file"]][c] for c in names], expect, atol=2e-6)


def test_a_keras_file_and_one_image_to_stdout(folder_run):
    image = sorted((folder_run.parent.parent / "data" / "bees").glob("*.png"))[0]
    result = runner.invoke(app, ["predict", str(folder_run / "model.keras"), str(image), "-k", "1"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert len(rows) == 1 and rows[0]["file"] == image.name
    assert rows[0]["top1_label"] in {"ants", "bees", "wasps"}  # classes.json beside the model


@pytest.mark.parametrize("args, message", [
    (["--top-k", "4"], "--top-k must be between 1 and 3 (the model's classes). Received: top_k=4"),
    (["--output", "x.txt"], "--output must end in .csv or .json. Received: output=x.txt"),
    (["--tta", "spin"], "Unknown `--tta` mode. Received: tta=spin"),
])
def test_bad_arguments_are_one_line(folder_run, tmp_path, args, message):
    result = predict(folder_run, folder_run.parent.parent / "data", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_missing_model_or_input(folder_run, tmp_path):
    result = predict(tmp_path / "nope", tmp_path)
    assert result.exit_code == 2 and "no such run directory or model file" in result.output
    result = predict(folder_run, tmp_path / "nothing")
    assert result.exit_code == 2 and "input not found" in result.output


def test_a_keras_file_that_is_not_one(folder_run, tmp_path):
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip")
    result = predict(fake, folder_run.parent.parent / "data")
    assert result.exit_code == 2
    assert f"cannot load {fake}: not a .keras file (a zip archive)" in result.output


def test_a_colour_photo_given_to_a_digits_model_gets_one_warning(digits_runs, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    digit = tmp_path / "digit"
    digit.mkdir()
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(digit / "3.png")
    far = predict(digits_runs[0], tmp_path / "photo.jpg")
    assert far.exit_code == 0 and far.output.count("warning:") == 1
    assert "8x8x1" in far.output and "320x240 in colour" in far.output
    near = predict(digits_runs[0], digit)
    assert near.exit_code == 0 and "warning" not in near.output
