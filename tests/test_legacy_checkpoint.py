"""A resume checkpoint written by imgclf before the restructuring of issue 14 (made by
tests/fixtures/legacy/make.py at b7a8d01) still loads into the model the code builds now,
predicts the same, and resumes to a finished run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from imgclf.cli import app
from imgclf.config import load_config
from imgclf.training.callbacks import CHECKPOINT_DIR, CHECKPOINT_WEIGHTS, read_checkpoint
from imgclf.training.loop import checkpoint_phase
from imgclf.training.setup import build_model, enter_phase, prepare

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def test_a_legacy_checkpoint_loads_and_predicts_the_same():
    run = LEGACY / "interrupted"
    expected = np.load(LEGACY / "expected.npz")
    state = read_checkpoint(run)
    assert state["epoch"] == 1
    prep = prepare(load_config(run / "config.yaml"))
    model = build_model(prep)
    enter_phase(model, prep, checkpoint_phase(prep.cfg.train, state))
    model.optimizer.build(model.trainable_variables)
    model.load_weights(run / CHECKPOINT_DIR / CHECKPOINT_WEIGHTS)
    probs = model.predict(expected["inputs"], verbose=0)
    np.testing.assert_allclose(probs, expected["resumed"], atol=1e-5)


def test_a_legacy_interrupted_run_resumes_to_the_end(tmp_path):
    run = tmp_path / "interrupted"
    shutil.copytree(LEGACY / "interrupted", run)
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "after epoch 1 of 2" in result.output
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (run / "predictions.csv").is_file() and not (run / CHECKPOINT_DIR).exists()
