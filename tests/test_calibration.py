"""Temperature scaling (train.calibration: temperature)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from conftest import train_run
from imgclf.inference import load_model
from imgclf.training.calibration import calibrate, nll


def overconfident_model(seed: int = 0):
    """A random linear classifier whose logits are blown up 20 times: confidently wrong often."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(inputs))
    layer = model.get_layer("predictions")
    layer.set_weights([w * 20 for w in layer.get_weights()])
    return model


def test_the_temperature_lowers_the_val_log_loss_of_an_overconfident_model_and_keeps_every_argmax():
    model = overconfident_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype("float32")
    before = model.predict(x, verbose=0)
    y = np.where(rng.random(300) < 0.6, before.argmax(1), rng.integers(0, 3, 300))  # 60% agree
    record = calibrate(model, y, x)
    after = model.predict(x, verbose=0)
    assert record["temperature"] > 1.5  # over-confident: it softens
    assert nll(y, after) < nll(y, before) and record["val_loss"] < record["val_loss_uncalibrated"]
    assert np.isclose(record["val_loss"], nll(y, after), atol=1e-3)
    assert np.array_equal(after.argmax(1), before.argmax(1))
    assert record["val_ece"] < record["val_ece_uncalibrated"]


def test_a_calibrated_run_saves_the_temperature_in_its_model_and_keeps_both_numbers(tmp_path):
    run = train_run(tmp_path, "data.test_split=0.2", "train.calibration=temperature")
    record = json.loads((run / "calibration.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert metrics[split]["loss_uncalibrated"] == record[f"{split}_before"]["loss"]
        assert metrics[split]["ece_uncalibrated"] == record[f"{split}_before"]["ece"]
    assert metrics["val"]["loss"] <= metrics["val"]["loss_uncalibrated"] + 1e-9
    # predictions.csv came from the calibrated model.keras: evaluate and predict see the same
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    assert Path(run / "model.keras").is_file() and len(preds) == metrics["test"]["n"]
    assert load_model(run / "model.keras").get_layer("predictions") is not None
