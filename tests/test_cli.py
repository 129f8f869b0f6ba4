"""End to end through the command line, as a user runs it (Typer's CliRunner)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import FAST, sklearn_metrics, write_class_folder
from imgclf.cli import app
from imgclf.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = {"config.yaml", "classes.json", "model.keras", "history.csv", "metrics.json",
             "per_class.csv", "predictions.csv", "confusion_matrix.csv", "confusion_matrix.png",
             "curves.png", "run.json"}
runner = CliRunner()


def train(*args):
    result = runner.invoke(app, ["train", *args])
    return result


def set_args(overrides):
    return [a for o in overrides for a in ("--set", o)]


def run_dir_of(result) -> Path:
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path.is_dir()
    return path


def test_train_on_a_folder_writes_a_complete_run(folder_data, tmp_path):
    out = tmp_path / "runs"
    result = train("--set", "data.source=folder", "--set", f"data.path={folder_data}",
                   "--set", "data.image_size=[16,16]", *set_args(FAST), "--out", str(out))
    run = run_dir_of(result)
    assert run.parent == out
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    # training and validation files are decoded into memory before the first epoch, and it says so
    assert re.search(r"^train: 19 images decoded into memory in [0-9.]+ s$", result.output, re.M)
    assert re.search(r"^val: 5 images decoded into memory in [0-9.]+ s$", result.output, re.M)

    saved = load_config(run / "config.yaml")  # the resolved config trains as it is
    assert saved.data.image_size == [16, 16] and saved.data.channels == 3
    assert json.loads((run / "classes.json").read_text()) == ["ants", "bees"]

    history = pd.read_csv(run / "history.csv")
    assert list(history.columns[:6]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert history["epoch"].tolist() == [1, 2]
    assert history["lr"].tolist() == pytest.approx([1e-3, 1e-3])

    metrics = json.loads((run / "metrics.json").read_text())
    assert "test" not in metrics
    assert set(metrics["val"]) >= {"accuracy", "loss", "precision_macro", "recall_macro", "f1_macro",
                                   "precision_weighted", "recall_weighted", "f1_weighted"}
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns) == ["split", "file", "true_label", "pred_label", "prob_ants", "prob_bees"]
    assert len(preds) == metrics["val"]["n"] == 5  # 20% of 24, stratified
    assert all((folder_data / f).is_file() for f in preds["file"])
    _, _, expected = sklearn_metrics(preds, ["ants", "bees"])
    for key, value in expected.items():
        assert metrics["val"][key] == pytest.approx(value, abs=1e-6), key

    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["epochs"] == 2


def test_each_run_gets_a_new_directory(tmp_path):
    args = ["--set", "model.name=mlp", "--set", "model.hidden_units=[8]", *set_args(FAST),
            "--set", "train.epochs=1", "--out", str(tmp_path)]
    first, second = run_dir_of(train(*args)), run_dir_of(train(*args))
    assert first != second and first.parent == second.parent == tmp_path
    assert (first / "model.keras").is_file() and (second / "model.keras").is_file()


def test_best_epoch_weights_are_the_saved_model(tmp_path):
    run = run_dir_of(train("--set", "train.epochs=6", "--set", "train.early_stopping.patience=10",
                           "--set", "model.filters=[8]", "--set", "train.verbose=0",
                           "--set", "train.optimizer.lr=0.02", "--out", str(tmp_path)))
    history = pd.read_csv(run / "history.csv")
    best = int(history["val_loss"].idxmin())
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["best_epoch"] == best + 1
    metrics = json.loads((run / "metrics.json").read_text())
    # the saved predictions come from the best epoch's weights, not the last epoch's
    assert metrics["val"]["loss"] == pytest.approx(history["val_loss"][best], rel=2e-3)


def test_early_stopping_ends_the_run(tmp_path):
    run = run_dir_of(train(*set_args(FAST), "--set", "train.epochs=20",
                           "--set", "train.early_stopping.patience=1",
                           "--set", "train.early_stopping.min_delta=100", "--out", str(tmp_path)))
    assert len(pd.read_csv(run / "history.csv")) == 2  # nothing counts as an improvement


def test_quickstart_reaches_its_promise(tmp_path):
    run = run_dir_of(train("--config", str(ROOT / "configs/quickstart.yaml"),
                           "--set", "train.verbose=0", "--out", str(tmp_path)))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.95 and metrics["test"]["accuracy"] >= 0.95


def test_idx_source_end_to_end(idx_dir, tmp_path):
    run = run_dir_of(train("--set", "data.source=idx", "--set", f"data.path={idx_dir}",
                           *set_args(FAST), "--out", str(tmp_path)))
    preds = pd.read_csv(run / "predictions.csv")
    assert (preds["split"] == "test").sum() == 15
    assert set(json.loads((run / "metrics.json").read_text())) == {"val", "test"}
    cm = pd.read_csv(run / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 15  # the confusion matrix shows the test split



def test_data_errors_from_a_folder(tmp_path):
    root = write_class_folder(tmp_path / "one", {"only": 4})
    result = train("--set", "data.source=folder", "--set", f"data.path={root}", "--out", str(tmp_path))
    assert result.exit_code == 2 and "at least 2" in result.output
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    result = train("--config", str(tmp_path / "bad.yaml"))
    assert result.exit_code == 2 and "malformed YAML" in result.output


def test_models_lists_the_registry():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split() for line in result.output.strip().splitlines()[1:]}
    assert set(rows) >= {"simple_cnn", "mlp", "resnet20", "inception_small", "vgg16", "vgg19", "resnet50",
                         "efficientnet_b0", "efficientnet_b4", "efficientnetv2_s", "mobilenet_v3_small",
                         "mobilenet_v3_large"}
    # name, family, default input size, backbone parameters, ImageNet weights
    assert rows["efficientnet_b4"][:5] == ["efficientnet_b4", "efficientnet", "380x380", "17,673,823", "yes"]
    assert rows["resnet20"][:5] == ["resnet20", "resnet", "32x32", "273,392", "no"]
    assert rows["simple_cnn"][2:6] == ["any", "by", "config", "no"]
    assert runner.invoke(app, ["models", "mobilenet*"]).output.count("mobilenetv3") == 2
    result = runner.invoke(app, ["models", "nothing*"])
    assert result.exit_code == 2
    assert result.output.strip() == ("imgclf: error: no model matches 'nothing*'; "
                                     "`imgclf models` lists them all")


def test_models_shows_whole_descriptions_without_building_or_importing_keras(monkeypatch):
    import imgclf.models.registry as registry

    def no_build(*_):
        raise AssertionError("imgclf models built a model")

    monkeypatch.setattr(registry, "create_model", no_build)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    for name in registry.list_models():
        description = " ".join(registry.get_entry(name).description.split())
        assert f"{name} " in shown and description in shown, name
    # resnet9's description goes on past "for 28-64 px:", where the table used to cut it
    assert "global max pooling" in registry.get_entry("resnet9").description
    # the table comes from the catalog, no Keras (whose import is most of the wait) behind it
    code = "import sys; from imgclf.cli import main; sys.argv = ['imgclf', 'models']\n" \
           "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'keras' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "simple_cnn" in out.stdout, out.stderr


def test_config_command_prints_the_resolved_config():
    result = runner.invoke(app, ["config", "--set", "train.epochs=7"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["train"]["epochs"] == 7


def test_python_dash_m_and_console_script_help():
    out = subprocess.run([sys.executable, "-m", "imgclf", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout
    script = Path(sys.executable).parent / "imgclf"  # installed beside the interpreter
    out = subprocess.run([str(script), "models"], capture_output=True, text=True)
    assert out.returncode == 0 and "simple_cnn" in out.stdout and out.stderr == ""
    err = subprocess.run([sys.executable, "-m", "imgclf", "train", "--set", "data.val_splt=1"],
                         capture_output=True, text=True)
    assert err.returncode == 2 and "Traceback" not in err.stderr
    expected = "imgclf: error: --set: unknown key data.val_splt (did you mean data.val_split?)"
    assert err.stderr.strip() == expected


def test_weights_from_a_previous_run(tmp_path):
    import keras
    import numpy as np

    from imgclf.training.setup import build_model, prepare

    base = ["model.filters=[8]", "model.dense_units=8", "train.verbose=0", "train.epochs=1"]
    first = run_dir_of(train(*set_args(base), "--out", str(tmp_path)))
    prep = prepare(load_config(None, [*base, f"model.weights={first}"]))
    model = build_model(prep)
    saved = keras.models.load_model(first / "model.keras")
    # the backbone comes from the run; the head starts fresh (the classes may differ)
    for layer in (la for la in model.layers if la.weights):
        twin = saved.get_layer(layer.name)
        same = [np.array_equal(a, b) for a, b in zip(layer.get_weights(), twin.get_weights())]
        if layer.name.startswith("block"):
            assert same and all(same)
        elif layer.name in ("head_dense0", "predictions"):
            assert not all(same)
    # weights that do not fit the model: one line, exit 2, no run directory
    out = tmp_path / "second"
    result = train(*set_args(base), "--set", "model.filters=[16]", "--set", f"model.weights={first}",
                   "--out", str(out))
    assert result.exit_code == 2 and "does not fit this model" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("weights, message", [("imagenet", "no pretrained weights"),
                                              ("/no/such.weights.h5", "no such file")])
def test_weights_errors(weights, message):
    result = train("--set", f"model.weights={weights}")
    assert result.exit_code == 2 and message in result.output


def test_recipe_settings_reach_the_model():
    from imgclf.training.compiling import compile_model
    from imgclf.training.setup import build_model, prepare, steps_per_epoch

    cfg = load_config(None, ["train.loss.label_smoothing=0.1", "train.optimizer.lr=0.01",
                             "data.image_size=12", "data.channels=3"])
    prep = prepare(cfg)
    model = build_model(prep)
    compile_model(model, prep.cfg.train, steps_per_epoch(prep))
    assert model.loss.label_smoothing == pytest.approx(0.1)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert tuple(model.input_shape) == (None, 12, 12, 3)


def test_divergence_from_the_start_is_one_line(tmp_path):
    result = train(*set_args(FAST), "--set", "train.optimizer.lr=1e30", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("imgclf: error: training diverged")
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"




def test_help_shows_flags_without_a_value_and_whole_sentences():
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    flags = [ln for ln in result.output.splitlines() if "--unsafe" in ln or "--help" in ln]
    assert len(flags) == 2 and not any("<bool>" in ln for ln in flags), flags
    # wide enough, every command's help is one line: the docstrings' line breaks are not kept
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "250"})
    lr_line = next(ln for ln in result.output.splitlines() if " lr-find " in ln)
    assert "the last line printed is the folder written." in lr_line
    explain_line = next(ln for ln in result.output.splitlines() if " explain " in ln)
    assert explain_line.rstrip(" │").endswith("the last line printed is the folder.")


@pytest.mark.parametrize("preset, expected", [(None, True), ("0", False)])
def test_onednn_kernels_are_on_unless_the_user_says_0(preset, expected):
    # TensorFlow leaves its oneDNN kernels off on AVX2 CPUs, where they train 1.4-1.9x faster;
    # imgclf turns them on before TensorFlow loads, and run.json records what TensorFlow ran
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if preset is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = preset
    code = "import imgclf; imgclf.Run; from imgclf.runs import versions; print(versions()['onednn'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == str(expected)
