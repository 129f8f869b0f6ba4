"""Starting weights: ImageNet through keras' download (refused offline in one line), local
weights files, and the backbone of a previous run whatever its classes. No network: the
tests make the weights they load."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgclf.cli import app
from imgclf.config import ModelConfig
from imgclf.errors import ConfigError, ModelError
from imgclf.models import ModelSpec, create_model, get_entry, list_models
from imgclf.models.weights import check_weights, load_weights

PRETRAINED = [n for n in list_models() if get_entry(n).pretrained]
runner = CliRunner()


def build(name, size=32, classes=3, **kw):
    cfg = ModelConfig(dense_units=8, filters=[8], **kw)
    return create_model(name, ModelSpec((size, size, 3), classes, cfg))


def save_run(model, root: Path) -> Path:
    """A directory shaped like a finished run, as far as model.weights cares."""
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    return root


def equal(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def test_caffe_preprocessing_matches_keras_applications():
    import keras

    from imgclf.layers import CaffePreprocess

    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(CaffePreprocess()(x), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.slow
def test_imagenet_file_names_are_the_ones_keras_applications_fetches(monkeypatch):
    """The one-line error names the file keras would download: record what each
    keras.applications builder asks keras.utils.get_file for."""
    from keras.src.utils import file_utils

    asked = []

    def record(fname, origin, **kw):
        asked.append((fname, origin))
        raise RuntimeError("stop before any download")

    monkeypatch.setattr(file_utils, "get_file", record)
    for name in PRETRAINED:
        with pytest.raises(RuntimeError, match="stop before any download"):
            build(name, weights="imagenet")
        entry = get_entry(name)
        assert asked[-1] == (entry.weights_file, entry.weights_url), name


def test_imagenet_needs_a_pretrained_entry_and_local_paths_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="resnet20 has no pretrained weights"):
        check_weights("imagenet", get_entry("resnet20"))
    with pytest.raises(ConfigError, match="Received: model.weights=/no/such/run"):
        check_weights("/no/such/run", get_entry("resnet20"))
    with pytest.raises(ConfigError, match="without model.keras"):
        check_weights(str(tmp_path), get_entry("resnet20"))


def offline_download(*args, **kwargs):
    # what keras.utils.get_file raises when the host cannot be reached
    raise Exception("URL fetch failure on https://storage.googleapis.com/x: None -- [Errno 101] "
                    "Network is unreachable")


def test_imagenet_offline_is_one_line_before_any_work(monkeypatch, tmp_path):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras.utils, "get_file", offline_download)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--set", "model.name=mobilenet_v3_small",
                                 "--set", "model.weights=imagenet", "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    target = tmp_path / "keras" / "models" / get_entry("mobilenet_v3_small").weights_file
    assert len(lines) == 1 and lines[0].startswith("imgclf: error: model.weights=imagenet: cannot download")
    assert "Network is unreachable" in lines[0] and f"place it at {target}" in lines[0]
    assert not out.exists()


def test_imagenet_in_the_cache_needs_no_network(monkeypatch, tmp_path):
    import keras

    from imgclf.models.weights import ensure_imagenet

    entry = get_entry("efficientnet_b0")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", offline_download)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / entry.weights_file).write_bytes(b"placed by hand")
    assert ensure_imagenet(entry) == tmp_path / "models" / entry.weights_file


@pytest.mark.slow
def test_imagenet_without_network_for_real(tmp_path):
    """keras' real download, through a proxy that refuses every connection: one line, exit 2."""
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "PYTHONPATH": os.pathsep.join(sys.path)}
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        env[var] = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    out = subprocess.run(
        [sys.executable, "-m", "imgclf", "train", "--set", "model.name=mobilenet_v3_small",
         "--set", "model.weights=imagenet", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download weights_mobilenet_v3_small" in lines[0], out.stderr
    assert str(tmp_path / "keras" / "models") in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["resnet20", "simple_cnn"])
def test_a_run_directory_gives_its_backbone_whatever_its_classes(name, tmp_path):
    source = build(name, size=16, classes=5)
    run = save_run(source, tmp_path / "run")
    target = build(name, size=24, classes=3, weights=str(run))  # another size, other classes
    load_weights(target, str(run))
    for layer in target.layers:
        if layer.weights and not layer.name.startswith(("head_", "predictions")):
            assert equal(layer, source.get_layer(layer.name)), layer.name
    fresh = build(name, size=24, classes=3)
    assert not equal(target.get_layer("head_dense0"), source.get_layer("head_dense0"))
    assert fresh.get_layer("predictions").get_weights()[0].shape == (8, 3)


def test_a_run_of_another_model_does_not_fit(tmp_path):
    run = save_run(build("resnet20", size=16), tmp_path / "run")
    with pytest.raises(ModelError, match="no backbone layer"):
        load_weights(build("simple_cnn", size=16), str(run))
    with pytest.raises(ModelError, match="does not fit this model: layer 'backbone'"):
        load_weights(build("inception_small", size=16), str(run))


def test_a_weights_file_of_the_backbone_alone(tmp_path):
    """How a hand-placed keras.applications *_notop file is used: into the backbone."""
    donor = build("mobilenet_v3_small")
    path = tmp_path / "backbone.weights.h5"
    donor.get_layer("backbone").save_weights(path)
    model = build("mobilenet_v3_small", weights=str(path))
    assert not equal(model.get_layer("backbone"), donor.get_layer("backbone"))
    load_weights(model, str(path))
    assert equal(model.get_layer("backbone"), donor.get_layer("backbone"))
    whole = tmp_path / "whole.weights.h5"
    donor.save_weights(whole)
    load_weights(model, str(whole))  # a whole model's weights file fits too
    assert equal(model, donor)
