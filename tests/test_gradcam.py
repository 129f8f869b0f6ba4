"""Grad-CAM: heat maps where the class signal is, for every family, in reports and `imgclf explain`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import train_run, write_class_folder
from imgclf.cli import app
from imgclf.config import ModelConfig
from imgclf.errors import ModelError
from imgclf.models import ModelSpec, create_model, get_entry, list_models
from imgclf.reports.cams import overlay, select_cases

SIDE, PATCH = 32, 6


def patch_images(n: int, rng: np.random.Generator):
    """Noise everywhere; the "patch" class (label 0) also has one bright PATCH x PATCH square at
    a random place (returned as its top-left corner), the "noise" class (label 1) has none."""
    x = rng.integers(0, 110, (n, SIDE, SIDE, 1)).astype(np.uint8)
    y = np.arange(n) % 2
    where = rng.integers(2, SIDE - PATCH - 2, (n, 2))
    for i in np.flatnonzero(y == 0):
        r, c = where[i]
        x[i, r:r + PATCH, c:c + PATCH] = rng.integers(220, 256, (PATCH, PATCH, 1))
    return x, y, where


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    x, y, _ = patch_images(400, rng)
    xt, yt, where = patch_images(60, rng)
    root = tmp_path_factory.mktemp("patch")
    np.savez(root / "patch.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
             class_names=np.array(["patch", "noise"]))
    run = train_run(root / "runs", "data.source=npz", f"data.path={root / 'patch.npz'}", "data.val_split=0.2",
                    "model.filters=[16,32]", "model.dense_units=0", "train.epochs=6", "data.batch_size=32",
                    "output.gradcam=2")
    return run, xt, yt, where


def test_the_heat_map_peaks_on_the_bright_patch_that_is_the_only_class_signal(patch_run):
    from imgclf.gradcam import GradCam, resize_map
    from imgclf.inference import load_model

    run, xt, yt, where = patch_run
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.9
    cam = GradCam(load_model(run / "model.keras"))
    patch = np.flatnonzero(yt == 0)
    maps, probs = cam.maps(xt[patch].astype("float32"), np.zeros(len(patch), int))
    assert maps.shape[0] == len(patch) and 0.0 <= maps.min() and maps.max() <= 1.0
    hits = 0
    for m, (r, c) in zip(maps, where[patch]):
        heat = resize_map(m, (SIDE, SIDE))
        pr, pc = np.unravel_index(heat.argmax(), heat.shape)
        hits += (r - 1 <= pr <= r + PATCH) and (c - 1 <= pc <= c + PATCH)  # within a pixel of it
    assert hits >= 0.8 * len(patch), f"the peak was on the patch in {hits} of {len(patch)} images"


def test_the_report_shows_right_and_wrong_cases_with_their_overlays(patch_run):
    run = patch_run[0]
    png = run / "gradcam.png"
    assert png.is_file() and Image.open(png).size[0] > 600
    page = (run / "report.html").read_text()
    assert "Where the model looked (Grad-CAM)" in page
    assert page.count("data:image/png") >= 6


def test_evaluate_reports_where_the_model_looked_too(patch_run):
    run = patch_run[0]
    result = CliRunner().invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip().splitlines()[-1])
    assert (out / "gradcam.png").is_file() and "Where the model looked" in (out / "report.html").read_text()


def test_cases_are_the_most_confident_right_and_wrong_of_each_true_class():
    y_true = np.array([0, 0, 0, 1, 1, 1, 2])
    probs = np.array([[.9, .1, 0], [.6, .4, 0], [.2, .8, 0], [.3, .7, 0], [.1, .9, 0], [.7, .3, 0],
                      [.1, .1, .8]])
    shown, cases = select_cases(y_true, probs, per_class=1)
    assert shown == [0, 1, 2]
    assert [(c.row, c.right) for c in cases[0]] == [(0, True), (2, False)]
    assert [(c.row, c.right, c.pred) for c in cases[1]] == [(4, True, 1), (5, False, 0)]
    assert [(c.row, c.right) for c in cases[2]] == [(6, True)]  # never wrong: no wrong case
    shown, _ = select_cases(y_true, probs, per_class=1, max_classes=2)
    assert shown == [0, 1]  # recall 1/3 and 1/3 are below class 2's 1.0


def test_overlay_keeps_the_image_where_the_heat_is_zero():
    img = np.full((5, 7, 3), 100, np.uint8)
    heat = np.zeros((5, 7), np.float32)
    heat[2, 3] = 1.0
    out = overlay(img, heat)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0, 0], img[0, 0])  # no heat: the image as it is
    hot = out[2, 3].astype(int)
    assert hot[0] - hot[2] > 40  # hot: red over the grey


def one_per_family():
    by_family = {}
    for name in list_models():
        entry = get_entry(name)
        known = by_family.get(entry.family)
        if known is None or (entry.params or 0) < (get_entry(known).params or 0):
            by_family[entry.family] = name
    return sorted(by_family.values())


@pytest.mark.parametrize("name", one_per_family())
def test_every_family_gives_an_overlay_of_the_image_size_or_refuses_in_one_line(name):
    from imgclf.gradcam import GradCam, resize_map

    size = (48, 40)  # not square: the map comes back at the image's own height and width
    cfg = ModelConfig(filters=[8, 16], dense_units=8, hidden_units=[16])
    model = create_model(name, ModelSpec(input_shape=(*size, 3), num_classes=3, cfg=cfg))
    x = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    if get_entry(name).family == "mlp":
        with pytest.raises(ModelError, match="needs a convolutional layer"):
            GradCam(model)
        return
    maps, probs = GradCam(model).maps(x)
    assert probs.shape == (2, 3) and np.allclose(probs, model.predict(x, verbose=0), atol=1e-4)
    assert maps.ndim == 3 and len(maps) == 2 and maps.max() <= 1.0
    photo = np.zeros((300, 200, 3), np.uint8)
    heat = resize_map(maps[0], photo.shape[:2])
    assert heat.shape == (300, 200) and overlay(photo, heat).shape == (300, 200, 3)


def test_explain_writes_an_overlay_and_a_map_at_each_images_size(tmp_path):
    data = write_class_folder(tmp_path / "data", {"top": 16, "bottom": 16})
    run = train_run(tmp_path / "runs", "data.source=folder", f"data.path={data}", "data.image_size=[16,16]",
                    "output.gradcam=0")
    assert not (run / "gradcam.png").exists()  # output.gradcam=0: no section
    pics = tmp_path / "pics"
    (pics / "sub").mkdir(parents=True)
    Image.open(next((data / "top").glob("*.png"))).resize((40, 30)).save(pics / "a.png")
    Image.open(next((data / "bottom").glob("*.png"))).resize((20, 50)).save(pics / "sub" / "b.jpg")
    (pics / "broken.jpg").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["explain", str(run), str(pics), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip().splitlines()[-1])
    assert out.parent == run / "explain"
    assert np.load(out / "a.npy").shape == (2, 30, 40)
    assert np.load(out / "sub" / "b.npy").shape == (2, 50, 20)
    assert all((out / f).is_file() for f in ("a.png", "sub/b.png", "contact_sheet.png"))
    rows = list(csv.DictReader(open(out / "explain.csv")))
    assert [(r["file"], r["rank"]) for r in rows if not r["error"]] == [
        ("a.png", "1"), ("a.png", "2"), ("sub/b.jpg", "1"), ("sub/b.jpg", "2")]
    assert {r["class"] for r in rows if r["file"] == "a.png"} == {"top", "bottom"}
    assert [r["file"] for r in rows if r["error"]] == ["broken.jpg"]
    assert "broken.jpg" in result.output

    one = CliRunner().invoke(app, ["explain", str(run), str(pics / "a.png"), "--class", "bottom",
                                   "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    assert np.load(tmp_path / "one" / "a.npy").shape == (30, 40)
    assert Image.open(tmp_path / "one" / "a.png").size == (40, 30)  # the overlay at the image's size
    row = next(csv.DictReader(open(tmp_path / "one" / "explain.csv")))
    assert row["class"] == "bottom"

    bad = CliRunner().invoke(app, ["explain", str(run), str(pics), "--class", "botom"])
    assert bad.exit_code == 2 and "did you mean bottom" in bad.output


def test_explain_refuses_an_mlp_in_one_line(digits_runs, tmp_path):
    _, mlp = digits_runs
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "d.png")
    result = CliRunner().invoke(app, ["explain", str(mlp), str(tmp_path / "d.png")])
    assert result.exit_code != 0
    assert "needs a convolutional layer" in result.output and "Traceback" not in result.output
    assert not (mlp / "explain").exists() or not any((mlp / "explain").iterdir())


def test_runs_with_tta_mixed_precision_and_augmentation_in_the_model_get_their_overlays(tmp_path):
    run = train_run(tmp_path, "train.tta=flip", "train.mixed_precision=bfloat16", "augment_on=model",
                    "augment=[{name: flip, mode: horizontal}, {name: rotation, factor: 0.1}]",
                    "output.gradcam=1")
    assert (run / "gradcam.png").is_file()
    assert "gradcam.png is not drawn" not in (run / "report.html").read_text()
