"""Files written by imgclf before issue 14's restructuring (tests/fixtures/legacy, see make.py
there) still load and predict the same through today's code: a finished run's model.keras, and
an interrupted run's resume checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import imgclf
from imgclf.cli import app
from imgclf.config import load_config
from imgclf.inference import load_model
from imgclf.training.callbacks import CHECKPOINT_DIR, CHECKPOINT_WEIGHTS, read_checkpoint
from imgclf.training.loop import checkpoint_phase
from imgclf.training.setup import build_model, enter_phase, prepare

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
runner = CliRunner()


def _listing(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))}


def test_legacy_model_predicts_as_it_did():
    expected = np.load(LEGACY / "expected.npz")
    model = load_model(LEGACY / "finished" / "model.keras")
    np.testing.assert_allclose(model.predict(expected["inputs"], verbose=0), expected["finished"], atol=1e-5)


def test_predict_and_evaluate_run_on_a_legacy_run(tmp_path):
    before = _listing(LEGACY / "finished")
    run = shutil.copytree(LEGACY / "finished", tmp_path / "finished")
    image = tmp_path / "image.png"
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(image)

    result = runner.invoke(app, ["predict", str(run), str(image)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "eval" / "val" / "predictions.csv").exists()
    assert _listing(LEGACY / "finished") == before  # the fixture itself is untouched


def test_loading_a_model_needs_neither_training_nor_data():
    code = (
        "import json, sys\n"
        "from imgclf.inference import load_model\n"
        f"load_model({str(LEGACY / 'finished' / 'model.keras')!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('imgclf'))))\n"
    )
    src = str(Path(imgclf.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "imgclf.layers" in loaded
    assert [m for m in loaded if m.startswith(("imgclf.training", "imgclf.data"))] == []


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
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "after epoch 1 of 2" in result.output
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (run / "predictions.csv").is_file() and not (run / CHECKPOINT_DIR).exists()
