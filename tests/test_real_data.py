"""Real photos from ../shared/datasets (beside the project in CI); skipped where absent."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from imgclf.cli import app

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


@pytest.mark.slow
@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"{HYMENOPTERA} not present")
@pytest.mark.parametrize("config", ["folder.yaml", "photos.yaml"])
def test_folder_config_on_real_photos(tmp_path, config):
    result = CliRunner().invoke(app, [
        "train", "--config", str(ROOT / "configs" / config),
        "--set", f"data.path={HYMENOPTERA}", "--set", "train.epochs=2",
        "--set", "data.image_size=[64,64]", "--set", "train.verbose=0", "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    # the set has its own train/ and val/ folders: they are used as they are
    assert "train 245, val 153" in result.output
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == 153 and set(preds["true_label"]) == {"ants", "bees"}
    assert preds["file"].str.startswith("val/").all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["val"]["accuracy"] <= 1.0 and metrics["val"]["n"] == 153


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="apt-get install dataset-fashion-mnist provides it")
def test_fashion_mnist_idx_config(tmp_path):
    result = CliRunner().invoke(app, [
        "train", "--config", str(ROOT / "configs/fashion_mnist.yaml"), "--set", "train.epochs=1",
        "--set", "model.filters=[16,32]", "--set", "train.schedule.warmup_epochs=0",  # 1 epoch: no warm-up
        "--set", "train.optimizer.lr=0.003", "--set", "train.verbose=0", "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 10_000 and metrics["val"]["n"] == 6_000
    assert metrics["test"]["accuracy"] > 0.7  # one epoch; chance is 0.1
    preds = pd.read_csv(run / "predictions.csv")
    assert "prob_Ankle boot" in preds.columns
