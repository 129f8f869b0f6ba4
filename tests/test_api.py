"""The Python API as a notebook calls it: train, load, predict, evaluate, export, compare, and
that it makes the same run and says the same errors as the command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import imgclf
from conftest import interrupt_after, write_class_folder
from imgclf.cli import app

runner = CliRunner()
CLASSES = {"ants": 10, "bees": 10, "wasps": 10}


def config_of(data: Path) -> dict:
    """A config as a mapping (the keys of a YAML file): 16x16 images of three classes, a tiny
    CNN, two deterministic epochs."""
    return {
        "data": {"source": "folder", "path": str(data), "image_size": [16, 16], "val_split": 0.4,
                 "batch_size": 8},
        "model": {"filters": [8], "dense_units": 8},
        "train": {"epochs": 2, "verbose": 0, "deterministic": True},
    }


OVERRIDES = {"train.optimizer.lr": 3e-3, "output.name": "tiny"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("api_data") / "data", CLASSES, exts=(".png",))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> "imgclf.Run":
    return imgclf.train(config_of(data), overrides=OVERRIDES, out=tmp_path_factory.mktemp("api_runs"),
                        echo=lambda text: None)


@pytest.fixture(scope="module")
def cli_run(data, tmp_path_factory) -> Path:
    """The same config as a YAML file and the same overrides as --set, through the CLI."""
    root = tmp_path_factory.mktemp("cli_runs")
    (root / "tiny.yaml").write_text(yaml.safe_dump(config_of(data)))
    result = runner.invoke(app, ["train", "--config", str(root / "tiny.yaml"), "--set",
                                 "train.optimizer.lr=3e-3", "--set", "output.name=tiny", "--out",
                                 str(root / "runs")])
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


def cli_error(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    return result.output.strip().splitlines()[-1].removeprefix("imgclf: error: ")


def test_import_imgclf_does_not_import_tensorflow():
    code = ("import sys, imgclf; assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert 'imgclf.api' not in sys.modules; "
            "assert issubclass(imgclf.ConfigError, imgclf.ImgclfError); print(imgclf.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == imgclf.__version__


def test_train_returns_the_finished_run(run, data):
    assert isinstance(run, imgclf.Run)
    assert run.status == "finished" and run.name.endswith("-tiny")
    assert run.class_names == list(CLASSES)
    assert run.config.train.optimizer.lr == pytest.approx(3e-3)
    assert run.config.data.path == str(data)
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    assert set(run.metrics["val"]) >= {"accuracy", "loss", "f1_macro"}
    assert isinstance(run.history, pd.DataFrame)
    assert run.history["epoch"].tolist() == [1, 2]
    assert run.manifest["status"] == "finished" and run.manifest["epochs"] == 2
    assert run.model.output_shape == (None, 3)


def test_load_reads_the_same_run(run):
    again = imgclf.load(run.path)
    assert again.path == run.path and again.status == "finished"
    assert again.metrics == run.metrics
    pd.testing.assert_frame_equal(again.history, run.history)
    accuracy = run.metrics["val"]["accuracy"]
    assert f"status=finished, model=simple_cnn, val_accuracy={accuracy:.4f})" in repr(again)


def test_a_run_shows_itself_in_a_notebook(run):
    page = run._repr_html_()
    assert run.name in page and "finished" in page and "simple_cnn" in page
    assert f"{run.metrics['val']['accuracy']:.4f}" in page and "f1_macro" in page
    assert page.count('<img src="data:image/png;base64,') == 2  # curves and confusion matrix


@pytest.fixture
def incoming(data, tmp_path) -> Path:
    """A few of the training images, nested, and a file that does not decode."""
    root = tmp_path / "incoming"
    (root / "deep").mkdir(parents=True)
    for name in CLASSES:
        for j in range(2):
            src = data / name / f"img_{j:03d}.png"
            (root / ("deep" if j else "") / f"{name}_{j}.png").write_bytes(src.read_bytes())
    (root / "zero.png").write_bytes(b"")
    return root


def test_predict_a_folder_gives_the_rows_of_imgclf_predict(run, incoming, tmp_path):
    with pytest.warns(UserWarning, match="zero.png: empty file"):
        frame = run.predict(incoming, batch_size=4)
    assert list(frame.columns) == ["file", "pred_label", "confidence", "prob_ants", "prob_bees",
                                   "prob_wasps", "error"]
    out = tmp_path / "cli.csv"
    result = runner.invoke(app, ["predict", str(run.path), str(incoming), "--top-k", "1",
                                 "--output", str(out)])
    assert result.exit_code == 0, result.output
    cli = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert frame["file"].tolist() == cli["file"].tolist()  # same files, same order, same paths
    good = cli["error"] == ""
    assert frame.loc[good, "pred_label"].tolist() == cli.loc[good, "top1_label"].tolist()
    np.testing.assert_allclose(frame.loc[good, "confidence"], cli.loc[good, "top1_prob"].astype(float),
                               rtol=1e-5)
    probs = frame.loc[good, ["prob_ants", "prob_bees", "prob_wasps"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    bad = frame[~good.to_numpy()]
    assert bad["file"].tolist() == ["zero.png"] and bad["error"].tolist() == ["empty file"]
    assert bad["pred_label"].isna().all() and bad["prob_ants"].isna().all()


def test_predict_files_and_arrays_agree(run, incoming):
    with pytest.warns(UserWarning):  # zero.png
        folder = run.predict(incoming).set_index("file")
    files = sorted(str(p) for p in incoming.rglob("*_*.png"))
    listed = run.predict(files)
    assert listed["file"].tolist() == files  # each path as it was given
    expect = folder.loc[[Path(f).relative_to(incoming).as_posix() for f in files]]
    cols = ["prob_ants", "prob_bees", "prob_wasps"]
    np.testing.assert_allclose(listed[cols].to_numpy(), expect[cols].to_numpy(), atol=1e-6)

    pixels = np.stack([np.asarray(Image.open(f)) for f in files])  # PNG: the same pixels as TF decodes
    arrays = run.predict(pixels)
    assert list(arrays.columns) == ["index", "pred_label", "confidence", *cols]
    assert arrays["index"].tolist() == list(range(len(files)))
    np.testing.assert_allclose(arrays[cols].to_numpy(), expect[cols].to_numpy(), atol=1e-6)
    assert arrays["pred_label"].tolist() == expect["pred_label"].tolist()
    one = run.predict(pixels[2])  # one H x W x C image
    np.testing.assert_allclose(one[cols].to_numpy(), arrays[cols].to_numpy()[2:3], atol=1e-6)
    listed_arrays = run.predict([pixels[0], pixels[1]])
    np.testing.assert_allclose(listed_arrays[cols].to_numpy(), arrays[cols].to_numpy()[:2], atol=1e-6)


def test_arrays_at_another_size_are_resized_as_the_pipeline_does(run):
    from imgclf.data import Split
    from imgclf.data.pipeline import make_dataset
    from imgclf.inference import predict_probs

    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, size=(5, 40, 24, 1), dtype=np.uint8)  # grey, another size and shape
    split = Split(y=np.zeros(5, dtype=np.int64), ids=list(range(5)), x=big)
    ds = make_dataset(split, image_size=(16, 16), channels=3, num_classes=3, batch_size=2, training=False,
                      seed=0, cache=False)
    expect = predict_probs(run.model, ds)
    got = run.predict(big, batch_size=2)[["prob_ants", "prob_bees", "prob_wasps"]].to_numpy()
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert len(run.predict(big[0, :, :, 0])) == 1  # one H x W grey image


def test_predict_refuses_what_is_not_images(run, tmp_path):
    with pytest.raises(imgclf.DataError, match=r"with 1 or 3 channels. Received: shape \(5, 7, 4\)"):
        run.predict(np.zeros((5, 7, 4), dtype=np.uint8))
    with pytest.raises(imgclf.DataError, match="input not found"):
        run.predict(tmp_path / "nothing-here")
    with pytest.raises(imgclf.ConfigError, match="Unknown `--tta` mode"):
        run.predict(np.zeros((16, 16, 3)), tta="rotate")
    with pytest.warns(UserWarning, match="raw 0..255 pixels"):
        run.predict(np.full((16, 16, 3), 0.5, dtype=np.float32))


def test_evaluate_recomputes_the_runs_numbers(run):
    ev = run.evaluate()
    assert ev.path == run.path / "eval" / "val"
    assert (ev.path / "report.html").is_file()
    assert ev.metrics == json.loads((ev.path / "metrics.json").read_text())
    assert ev.metrics["n"] == run.metrics["val"]["n"]
    assert ev.metrics["accuracy"] == pytest.approx(run.metrics["val"]["accuracy"])
    assert ev.metrics["loss"] == pytest.approx(run.metrics["val"]["loss"], abs=1e-6)


def test_export_writes_a_saved_model_and_its_record(run, tmp_path):
    out = run.export("saved_model", out=tmp_path / "exported")
    assert out == tmp_path / "exported"
    assert (out / "saved_model" / "saved_model.pb").is_file()
    record = json.loads((out / "export.json").read_text())
    assert record["source_run"] == str(run.path.resolve())
    assert record["class_names"] == list(CLASSES)
    assert record["input"]["shape"] == [16, 16, 3]
    assert record["files"]["saved_model"]["format"] == "saved_model"
    assert record["files"]["saved_model"]["parity"]["max_abs_diff"] < 1e-4


def test_cli_and_api_make_the_same_run(run, cli_run):
    made = {p.name for p in run.path.iterdir()} - {"eval"}  # eval/: test_evaluate's, if it ran first
    assert made == {p.name for p in cli_run.iterdir()}
    assert (run.path / "config.yaml").read_text() == (cli_run / "config.yaml").read_text()
    assert (run.path / "classes.json").read_text() == (cli_run / "classes.json").read_text()
    pd.testing.assert_frame_equal(run.history.drop(columns="time_s"),
                                  pd.read_csv(cli_run / "history.csv").drop(columns="time_s"))
    theirs = json.loads((cli_run / "metrics.json").read_text())
    for split, numbers in run.metrics.items():
        for key, value in numbers.items():
            assert value == pytest.approx(theirs[split][key], abs=1e-9), (split, key)
    pd.testing.assert_frame_equal(pd.read_csv(run.path / "predictions.csv"),
                                  pd.read_csv(cli_run / "predictions.csv"), atol=1e-9)


def test_compare_gives_one_row_per_run(run, cli_run, tmp_path):
    table = imgclf.compare([run, cli_run], sort="val_loss")
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert set(table["run"]) == {run.name, cli_run.name}
    row = table.set_index("run").loc[run.name]
    assert row["status"] == "finished" and row["model"] == "simple_cnn" and row["epochs"] == 2
    assert row["val_accuracy"] == pytest.approx(run.metrics["val"]["accuracy"])

    # a folder of runs stands for all of them; an unfinished one is warned about, without metrics
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "stopped").mkdir()
    manifest = {**run.manifest, "status": "interrupted"}
    (runs / "stopped" / "run.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="stopped is interrupted, not finished"):
        table = imgclf.compare(runs)
    assert table["run"].tolist() == ["stopped"] and pd.isna(table.loc[0, "val_accuracy"])
    # the names stay the API's after the CLI imported its jobs (imgclf.comparison, imgclf.tuning)
    assert runner.invoke(app, ["compare", str(run.path)]).exit_code == 0
    assert imgclf.compare is imgclf.api.compare and imgclf.tune is imgclf.api.tune


def test_errors_are_the_clis_one_line_messages(run, tmp_path):
    with pytest.raises(imgclf.ConfigError) as caught:
        imgclf.train(overrides={"train.epoch": 2}, out=tmp_path)
    assert str(caught.value) == cli_error("train", "--set", "train.epoch=2", "--out", tmp_path)
    assert "did you mean train.epochs?" in str(caught.value)

    with pytest.raises(imgclf.ConfigError) as caught:
        imgclf.train(tmp_path / "missing.yaml")
    assert str(caught.value) == cli_error("train", "--config", tmp_path / "missing.yaml")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(imgclf.ImgclfError) as caught:  # checked before any data loads
        imgclf.train(overrides=["train.epochs=1"], out=blocker / "runs")
    assert str(caught.value) == cli_error("train", "--set", "train.epochs=1", "--out", blocker / "runs")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # no run directory was made

    with pytest.raises(imgclf.ConfigError) as caught:
        run.evaluate(split="train")
    assert str(caught.value) == cli_error("evaluate", run.path, "--split", "train")

    with pytest.raises(imgclf.DataError) as caught:
        imgclf.load(tmp_path / "no-run")
    assert str(caught.value) == f"run directory not found: {tmp_path / 'no-run'}"


def test_resume_finishes_an_interrupted_run(data, tmp_path, monkeypatch):
    restore = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        imgclf.train(config_of(data), out=tmp_path, echo=lambda text: None)
    restore()
    (stopped,) = tmp_path.iterdir()
    assert imgclf.load(stopped).status == "interrupted"
    assert imgclf.load(stopped).history["epoch"].tolist() == [1]
    done = imgclf.resume(stopped, echo=lambda text: None)
    assert done.path == stopped and done.status == "finished"
    assert done.history["epoch"].tolist() == [1, 2]
