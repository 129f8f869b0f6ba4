"""compare: runs side by side, unfinished ones flagged; inspect: what a data set holds."""

import csv
import io
import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import write_class_folder
from imgclf.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


@pytest.fixture
def three_runs(digits_runs, tmp_path):
    """The two finished digits runs and a copy of one marked interrupted, without metrics."""
    halfway = tmp_path / "halfway"
    shutil.copytree(digits_runs[0], halfway, ignore=shutil.ignore_patterns("eval"))
    (halfway / "metrics.json").unlink()
    manifest = json.loads((halfway / "run.json").read_text())
    for key in ("epochs", "train_time_s"):
        manifest.pop(key)
    (halfway / "run.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    return [*digits_runs, halfway]


def test_compare_table_csv_and_markdown(three_runs, tmp_path):
    plot = tmp_path / "curves.png"
    result = invoke("compare", *three_runs, "--format", "csv", "--sort", "val_accuracy", "--plot", plot)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["run"] for r in rows if r["status"] == "finished"] == sorted(
        [r.name for r in three_runs[:2]],
        key=lambda n: -json.loads((three_runs[0].parent / n / "metrics.json").read_text())["val"]["accuracy"])
    assert rows[-1]["run"] == "halfway"  # no metrics: sorted last
    for r in rows[:2]:
        run = three_runs[0].parent / r["run"]
        metrics = json.loads((run / "metrics.json").read_text())
        manifest = json.loads((run / "run.json").read_text())
        for split in ("val", "test"):
            for key in ("accuracy", "loss", "f1_macro"):
                assert float(r[f"{split}_{key}"]) == pytest.approx(metrics[split][key], abs=1e-4)
        assert int(r["params"]) == manifest["params"] and r["model"] == manifest["model"]
        assert int(r["epochs"]) == manifest["epochs"]
    # the unfinished run is flagged, never read as a result
    half = rows[-1]
    assert half["status"] == "interrupted" and half["val_accuracy"] == half["test_f1_macro"] == ""
    assert half["epochs"] == "2"  # from its history.csv
    assert "warning: halfway is interrupted, not finished (2 epoch(s) in history.csv)" in result.output
    assert plot.read_bytes()[:8] == PNG

    table = invoke("compare", *three_runs).stdout.splitlines()
    assert table[0].split()[:4] == ["run", "status", "model", "params"] and len(table) == 4
    assert "interrupted" in table[3] and table[3].split()[-1] == "-"
    md = invoke("compare", three_runs[0].parent, "--format", "markdown").stdout.splitlines()
    assert md[0].startswith("| run | status | model |") and md[1].startswith("| --- |")
    assert len(md) == 4  # header, rule, the two runs found in their parent folder


@pytest.mark.parametrize("args, message", [
    (["--sort", "val_acuracy"],
     "Unknown `--sort` column. Received: sort=val_acuracy (did you mean val_accuracy?)"),
    (["--format", "xml"], "Unknown `--format`. Received: format=xml"),
])
def test_compare_bad_arguments(digits_runs, args, message):
    result = invoke("compare", *digits_runs, *args)
    assert result.exit_code == 2 and message in result.output


def test_compare_refuses_a_folder_without_runs(tmp_path):
    result = invoke("compare", tmp_path)
    assert result.exit_code == 2 and "is not a run directory" in result.output


def test_inspect_a_folder(tmp_path):
    data = write_class_folder(tmp_path / "data", {"cats": 12, "dogs": 4})
    (data / "dogs" / "bad.jpg").write_bytes(b"")
    result = invoke("inspect", data, "--out", tmp_path / "look", "--per-class", "3")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(tmp_path / "look")  # the folder, last
    grid = tmp_path / "look" / "samples.png"
    assert (tmp_path / "look" / "duplicates.csv").read_text().startswith("group,kind,scope,split,class,file")
    out = result.output
    assert "imbalance: 3.00 (largest class cats 12, smallest dogs 4)" in out
    assert "modes: RGB 16" in out and "PNG 8" in out and "JPEG 8" in out
    assert "most common sizes (WxH): 16x16 (16)" in out
    assert "skipped: 1 unreadable file(s):" in out and "dogs/bad.jpg: empty file" in out
    assert grid.read_bytes()[:8] == PNG
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith(("cats", "dogs"))}
    assert lines["cats"][-1] == "12" and lines["dogs"][-1] == "4"

    result = invoke("inspect", data, "--augment", "--out", tmp_path / "again")
    assert result.exit_code == 2 and not (tmp_path / "again").exists()
    assert "--augment: the config has no augment steps" in result.output


def test_inspect_a_config_with_augmentation(tmp_path):
    config = tmp_path / "aug.yaml"
    config.write_text("data: {test_split: 0.2}\n"
                      "augment:\n  - {name: flip}\n  - {name: rotation, factor: 0.2}\n")
    grid = tmp_path / "s.png"
    result = invoke("inspect", config, "--augment", "--grid", grid, "--per-class", "2",
                    "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "o" / "samples.png").exists()  # --grid puts the grid elsewhere
    assert "images: all 8x8 (WxH), mode L (grayscale), uint8" in result.output
    assert "test" in result.output.splitlines()[1]  # the split columns
    augmented = tmp_path / "s_augmented.png"
    assert grid.read_bytes()[:8] == PNG and augmented.read_bytes()[:8] == PNG
    assert augmented.read_bytes() != grid.read_bytes()


def test_inspect_augmentation_changes_the_images():
    import numpy as np

    from imgclf.config import load_config
    from imgclf.inspect import _augmented

    cfg = load_config(None, ["augment=[{name: rotation, factor: 0.25}]"])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (8, 8, 1), dtype=np.uint8) for _ in range(3)]
    out = _augmented(images, cfg, (8, 8))
    assert [o.shape for o in out] == [(8, 8, 1)] * 3 and out[0].dtype == np.uint8
    assert not all(np.array_equal(a, b) for a, b in zip(images, out))


def test_plot_and_grid_files_must_be_png(digits_runs, tmp_path):
    result = invoke("compare", *digits_runs, "--plot", tmp_path / "curves.pdf")
    assert result.exit_code == 2 and "--plot must end in .png. Received: plot=" in result.output
    data = write_class_folder(tmp_path / "data", {"cats": 2, "dogs": 2})
    result = invoke("inspect", data, "--grid", tmp_path / "grid.jpg", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--grid must end in .png. Received: grid=" in result.output


def test_inspect_augment_with_only_mixing_steps(tmp_path):
    data = write_class_folder(tmp_path / "data", {"cats": 3, "dogs": 3})
    config = tmp_path / "mix.yaml"
    config.write_text(f"data: {{source: folder, path: {data}}}\naugment:\n  - {{name: mixup, alpha: 0.2}}\n")
    result = invoke("inspect", config, "--augment", "--grid", tmp_path / "s.png", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "mix pairs of images" in result.output
    assert not (tmp_path / "s_augmented.png").exists()


def test_inspect_warns_when_its_classes_look_like_data_sets(tmp_path):
    parent = tmp_path / "datasets"
    for name in ("hymenoptera", "flowers"):
        write_class_folder(parent / name / "train", {"a": 2, "b": 2})
        write_class_folder(parent / name / "val", {"a": 1, "b": 1})
    result = invoke("inspect", parent, "--grid", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, result.output
    assert "flowers, hymenoptera" in warnings[0] and "train/" in warnings[0]
    assert "data sets" in warnings[0]
    # a plain folder of class folders gets no such warning
    plain = write_class_folder(tmp_path / "plain", {"a": 2, "b": 2})
    assert "warning:" not in invoke("inspect", plain, "--grid", tmp_path / "g2.png").output
