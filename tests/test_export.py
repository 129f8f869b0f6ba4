"""Models that leave imgclf: model.keras in plain Keras, and `imgclf export` to SavedModel,
TFLite and ONNX, each loaded in a fresh Python that cannot import imgclf and compared with
model.keras on real photos (../shared/datasets/hymenoptera, pattern images where absent)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import train_run, write_class_folder
from imgclf import export as export_job
from imgclf.cli import app
from imgclf.config import load_config
from imgclf.inference import inference_model, load_model
from imgclf.layers import AUGMENTATION_LAYERS, CaffePreprocess, caffe_preprocess_conv
from imgclf.models import create_model
from test_models import registry_params, spec

runner = CliRunner()
HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera" / "train"
SIZE = 32
IN_MODEL = ("augment=[{name: flip}, {name: rotation, factor: 0.1}, {name: crop, padding: 2}, "
            "{name: color_jitter, brightness: 0.2, saturation: 0.2}]")


def photo_folder(root: Path, per_class: int = 14) -> Path:
    """Real photos, a few per class, or pattern images where the shared data sets are absent."""
    if not HYMENOPTERA.is_dir():
        return write_class_folder(root, {"ants": per_class, "bees": per_class})
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for f in sorted((HYMENOPTERA / cls).glob("*.jpg"))[:per_class]:
            shutil.copy(f, root / cls / f.name)
    return root


def images_of(folder: Path, n: int = 6) -> np.ndarray:
    """float32 raw pixels at the run's input size, as `imgclf predict` feeds them."""
    files = sorted(folder.rglob("*.jpg"))[:n] or sorted(folder.rglob("*.png"))[:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE)), np.float32)
                     for f in files])


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished run with augmentation in the model, batch norm, AdamW and a cosine schedule."""
    root = tmp_path_factory.mktemp("export")
    data = photo_folder(root / "data")
    run = train_run(root / "runs", "data.source=folder", f"data.path={data}",
                    f"data.image_size=[{SIZE},{SIZE}]", "data.val_split=0.3", "augment_on=model", IN_MODEL,
                    "model.filters=[16,32]", "model.dense_units=32",
                    "train.optimizer.name=adamw", "train.schedule.name=cosine", "model.batch_norm=true")
    return run, data


@pytest.fixture(scope="module")
def pipeline_run(photo_run, tmp_path_factory) -> tuple[Path, Path]:
    """The same data with the augmentation in the pipeline: a model that never had any."""
    _, data = photo_run
    run = train_run(tmp_path_factory.mktemp("pipeline"), "data.source=folder", f"data.path={data}",
                    f"data.image_size=[{SIZE},{SIZE}]", "data.val_split=0.3", "augment_on=pipeline", IN_MODEL)
    return run, data


def run_plain(code: str, tmp_path: Path) -> dict:
    """``code`` in a fresh Python where `import imgclf` fails; it leaves its answers in out.json."""
    script = tmp_path / "plain.py"
    script.write_text("import sys\nsys.modules['imgclf'] = None  # this Python cannot import imgclf\n"
                      + textwrap.dedent(code), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


# ------------------------------------------------------------ model.keras in plain Keras
def test_the_run_trained_with_augmentation_in_the_model_and_saved_without_it(photo_run):
    run, _ = photo_run
    config = (run / "config.yaml").read_text()
    assert "augment_on: model" in config and "adamw" in config and "cosine" in config
    saved = load_model(run / "model.keras")
    assert not [la for la in saved.layers if isinstance(la, AUGMENTATION_LAYERS)]


@pytest.mark.parametrize("which, compile_", [("photo_run", True), ("photo_run", False),
                                             ("pipeline_run", True)])
def test_model_keras_loads_in_plain_keras_and_predicts_the_same(request, tmp_path, which, compile_):
    run, data = request.getfixturevalue(which)
    x = images_of(data)
    np.save(tmp_path / "x.npy", x)
    got = run_plain(f"""
        import json, keras, numpy as np
        model = keras.models.load_model({str(run / "model.keras")!r}, compile={compile_})
        x = np.load("x.npy")
        before = [w.copy() for w in model.get_weights()]
        first, second = np.asarray(model(x)), np.asarray(model(x))
        after = model.get_weights()
        json.dump({{"probs": model.predict(x, verbose=0).tolist(), "first": first.tolist(),
                   "second": second.tolist(), "optimizer": getattr(model, "optimizer", None) is not None,
                   "unchanged": all(np.array_equal(a, b) for a, b in zip(before, after))}},
                  open("out.json", "w"))
    """, tmp_path)
    expected = load_model(run / "model.keras").predict(x, verbose=0)
    np.testing.assert_allclose(got["probs"], expected, atol=1e-6)
    # model(x) with no training argument: deterministic, equal to predict, no statistic moved
    np.testing.assert_array_equal(got["first"], got["second"])
    np.testing.assert_allclose(got["first"], got["probs"], atol=1e-6)
    assert got["unchanged"] and not got["optimizer"]


def test_a_model_that_still_needs_imgclf_fails_in_plain_keras_naming_the_class(tmp_path):
    inputs = keras.Input((8, 8, 3))
    old = keras.Model(inputs, CaffePreprocess(name="preprocess")(inputs))  # an older run's file
    old.save(tmp_path / "old.keras")
    script = tmp_path / "old.py"
    script.write_text("import sys\nsys.modules['imgclf'] = None\nimport keras\n"
                      f"keras.models.load_model({str(tmp_path / 'old.keras')!r})\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "CaffePreprocess" in done.stderr


def test_the_inference_model_replaces_caffe_preprocess_exactly():
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(caffe_preprocess_conv("p")(x)),
                                  np.asarray(CaffePreprocess()(x)))
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.RandomFlip()(inputs)
    h = CaffePreprocess(name="preprocess")(h)
    h = keras.layers.Conv2D(4, 3, name="conv")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    served = inference_model(model)
    assert [type(la).__name__ for la in served.layers] == ["InputLayer", "Conv2D", "Conv2D",
                                                            "GlobalAveragePooling2D", "Dense"]
    np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("name", registry_params())
def test_every_models_inference_model_is_plain_keras_and_predicts_the_same(name):
    steps = load_config(None, [IN_MODEL]).augment
    model = create_model(name, dataclasses.replace(spec(32), augment=tuple(steps)))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    for float32 in (False, True):
        served = inference_model(model, float32=float32)
        assert "imgclf>" not in json.dumps(served.get_config())  # no class of ours: loads without imgclf
        np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_a_mixed_precision_model_serves_in_float32():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(4, 3)(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32")(h))
    finally:
        keras.config.set_dtype_policy("float32")
    served = inference_model(model, float32=True)
    assert {la.dtype_policy.name for la in served.layers} == {"float32"}
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2)


# ------------------------------------------------------------------- imgclf export
@pytest.fixture(scope="module")
def exported(photo_run) -> Path:
    run, _ = photo_run
    result = runner.invoke(app, ["export", str(run), "-f", "saved_model", "-f", "tflite", "-f", "onnx"])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip().splitlines()[-1])
    assert out == run / "export"
    return out


def test_every_format_loads_without_imgclf_and_agrees_with_model_keras(photo_run, exported, tmp_path):
    run, data = photo_run
    x = images_of(data)
    np.save(tmp_path / "x.npy", x)
    got = run_plain(f"""
        import json, numpy as np, onnxruntime, tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter
        x = np.load("x.npy")
        saved = tf.saved_model.load({str(exported / "saved_model")!r})
        lite = Interpreter(model_path={str(exported / "model.tflite")!r})
        lite.resize_tensor_input(lite.get_input_details()[0]["index"], list(x.shape))
        lite.allocate_tensors()
        lite.set_tensor(lite.get_input_details()[0]["index"], x)
        lite.invoke()
        session = onnxruntime.InferenceSession({str(exported / "model.onnx")!r})
        json.dump({{"saved_model": np.asarray(saved.serve(x)).tolist(),
                   "tflite": lite.get_tensor(lite.get_output_details()[0]["index"]).tolist(),
                   "onnx": session.run(None, {{session.get_inputs()[0].name: x}})[0].tolist()}},
                  open("out.json", "w"))
    """, tmp_path)
    expected = load_model(run / "model.keras").predict(x, verbose=0)
    for fmt in ("saved_model", "tflite", "onnx"):
        np.testing.assert_allclose(got[fmt], expected, atol=1e-4, err_msg=fmt)


def test_export_json_says_what_each_file_is_and_how_close_it_came(photo_run, exported):
    run, _ = photo_run
    meta = json.loads((exported / "export.json").read_text())
    assert meta["source_run"] == str(run.resolve())
    assert meta["input"]["shape"] == [SIZE, SIZE, 3] and meta["class_names"] == ["ants", "bees"]
    assert json.loads((exported / "classes.json").read_text()) == ["ants", "bees"]
    assert set(meta["files"]) == {"saved_model", "model.tflite", "model.onnx"}
    val = pd.read_csv(run / "predictions.csv").query("split == 'val'")
    for entry in meta["files"].values():
        assert entry["size_bytes"] > 0 and entry["quantize"] is None
        parity = entry["parity"]
        assert parity["split"] == "val" and parity["n"] == len(val)
        assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
        assert parity["accuracy"] == pytest.approx((val.true_label == val.pred_label).mean())
    assert not [p for p in exported.iterdir() if p.name.startswith(".partial")]


@pytest.mark.parametrize("fmt", ["saved_model", "model.tflite", "model.onnx"])
def test_predict_takes_an_export_and_gives_the_runs_rows(photo_run, exported, tmp_path, fmt):
    run, data = photo_run
    rows = {}
    for name, model in (("run", run), ("export", exported / fmt)):
        result = runner.invoke(app, ["predict", str(model), str(data), "-o", str(tmp_path / f"{name}.csv")])
        assert result.exit_code == 0, result.output
        rows[name] = pd.read_csv(tmp_path / f"{name}.csv")
    assert len(rows["run"]) == len(list(data.rglob("*.*")))
    assert rows["export"].file.tolist() == rows["run"].file.tolist()
    assert rows["export"].top1_label.tolist() == rows["run"].top1_label.tolist()
    np.testing.assert_allclose(rows["export"].top1_prob, rows["run"].top1_prob, atol=1e-4)


def test_quantized_exports_are_smaller_and_report_their_agreement(photo_run, exported, tmp_path):
    run, _ = photo_run
    out = tmp_path / "q"
    for q in ("int8", "float16"):
        result = runner.invoke(app, ["export", str(run), "-f", "tflite", "-f", "onnx", "-q", q,
                                     "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert f"tflite {q}: model_{q}.tflite" in result.output
    meta = json.loads((out / "export.json").read_text())
    float_size = json.loads((exported / "export.json").read_text())["files"]["model.tflite"]["size_bytes"]
    for name in ("model_int8.tflite", "model_int8.onnx", "model_float16.tflite", "model_float16.onnx"):
        entry = meta["files"][name]
        assert entry["quantize"] in name and entry["size_bytes"] < float_size
        parity = entry["parity"]
        assert 0.0 <= parity["top1_agreement"] <= 1.0 and 0.0 < parity["max_abs_diff"] < 0.5
        assert {"accuracy", "accuracy_model_keras"} <= set(parity)


# ------------------------------------------------------------ what cannot be exported
def no_files_left(out: Path) -> bool:
    return not out.exists() or not [p for p in out.iterdir() if p.name not in ("classes.json", "export.json")]


@pytest.mark.parametrize("args, fragment", [
    (["-f", "coreml"], "Unknown `--format`"),
    (["-q", "int4", "-f", "tflite"], "Unknown `--quantize`"),
    (["-q", "int8"], "--quantize applies to tflite and onnx"),
])
def test_bad_export_requests_are_one_line(photo_run, tmp_path, args, fragment):
    run, _ = photo_run
    result = runner.invoke(app, ["export", str(run), *args, "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_a_missing_package_is_named(photo_run, tmp_path, monkeypatch):
    run, _ = photo_run
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    result = runner.invoke(app, ["export", str(run), "-f", "onnx", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "pip install tf2onnx" in result.output
    assert not (tmp_path / "x").exists()


def test_a_converter_that_fails_leaves_nothing_half_written(photo_run, tmp_path, monkeypatch):
    run, _ = photo_run

    def refuse(self, path, format, **kwargs):
        Path(path).write_bytes(b"half")  # a converter that dies midway
        raise ValueError("'tf.SomeOp' op is neither a custom op nor a flex op (layer conv_0)")

    monkeypatch.setattr(keras.Model, "export", refuse)
    result = runner.invoke(app, ["export", str(run), "-f", "tflite", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "cannot export to tflite" in result.output and "conv_0" in result.output
    assert no_files_left(tmp_path / "x")


def test_a_float_export_that_disagrees_is_a_conversion_fault_unless_forced(photo_run, tmp_path, monkeypatch):
    run, _ = photo_run
    opened = export_job.open_exported

    def drifting(path):
        real = opened(path)
        real.predict_on_batch = lambda x, f=real.predict_on_batch: f(x) + 1e-3
        return real

    monkeypatch.setattr(export_job, "open_exported", drifting)
    out = tmp_path / "x"
    result = runner.invoke(app, ["export", str(run), "-f", "onnx", "-o", str(out)])
    assert result.exit_code == 2 and "conversion fault" in result.output
    assert no_files_left(out)
    result = runner.invoke(app, ["export", str(run), "-f", "onnx", "-o", str(out), "--force"])
    assert result.exit_code == 0 and (out / "model.onnx").is_file()
