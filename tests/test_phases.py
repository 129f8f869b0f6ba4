"""Two-phase transfer learning: what each phase trains, and what it must leave alone."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import interrupt_after
from imgclf.cli import app
from imgclf.config import ModelConfig, load_config
from imgclf.errors import ConfigError
from imgclf.models import ModelSpec, create_model, get_entry
from imgclf.models.backbone import backbone_blocks, backbone_layers
from imgclf.training.phases import enter_phase

runner = CliRunner()


def is_bn(layer) -> bool:
    return layer.__class__.__name__ == "BatchNormalization"


def snapshot(layers) -> dict:
    return {id(la): [w.copy() for w in la.get_weights()] for la in layers}


def changed(layer, before: dict) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before[id(layer)], layer.get_weights()))


def fit_a_few_steps(model, size):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, size, size, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(16) % 3]
    model.run_eagerly = True  # a couple of steps: tracing would cost more than running
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "name, unfreeze, n",
    [("resnet20", "blocks", 1), ("mobilenet_v3_small", "layers", 3), ("simple_cnn", "all", 1)],
)
def test_phase_one_trains_the_head_alone_and_phase_two_only_what_it_unfroze(name, unfreeze, n, tmp_path):
    """Phase 1 changes no backbone weight; phase 2 changes the unfrozen part and nothing
    else; no batch norm layer of the backbone (scale, offset, moving statistics) ever moves."""
    size = 32
    source = create_model(name, ModelSpec((size, size, 3), 5, ModelConfig(dense_units=8, filters=[8, 8])))
    (tmp_path / "run").mkdir()
    source.save(tmp_path / "run" / "model.keras")
    cfg = load_config(None, [f"model.name={name}", f"model.weights={tmp_path / 'run'}", "model.dense_units=8",
                             "model.filters=[8, 8]", "train.epochs=4", "train.phases.head_epochs=2",
                             f"train.phases.unfreeze={unfreeze}", f"train.phases.unfreeze_n={n}"])
    model = create_model(name, ModelSpec((size, size, 3), 3, cfg.model))
    pattern = get_entry(name).block_pattern
    layers = backbone_layers(model)
    head = [la for la in model.layers if la.name.startswith(("head_", "predictions")) and la.weights]

    enter_phase(model, cfg.train, 1, steps=2, block_pattern=pattern)
    before = snapshot(layers + head)
    fit_a_few_steps(model, size)
    assert not [la.name for la in layers if changed(la, before)]
    assert all(changed(la, before) for la in head if not is_bn(la))

    enter_phase(model, cfg.train, 2, steps=2, block_pattern=pattern)
    before = snapshot(layers)
    fit_a_few_steps(model, size)
    weighted = [la for la in layers if la.weights and not is_bn(la)]
    if unfreeze == "blocks":
        expected = {la.name for la in list(backbone_blocks(model, pattern).values())[-n] if not is_bn(la)}
        expected &= {la.name for la in weighted}
    elif unfreeze == "layers":
        expected = {la.name for la in weighted[-n:]}
    else:
        expected = {la.name for la in weighted}
    moved = {la.name for la in layers if changed(la, before)}
    assert moved == expected
    assert len(expected) >= n and not any(is_bn(la) for la in layers if la.name in moved)


def train(*args):
    return runner.invoke(app, ["train", *args])


def test_a_two_phase_run_continues_its_history_and_marks_the_boundary(tmp_path):
    small = ["model.filters=[8, 8]", "model.dense_units=8", "train.verbose=0", "data.batch_size=64"]
    sets = [a for o in small for a in ("--set", o)]
    first = train(*sets, "--set", "train.epochs=1", "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    run = Path(first.output.strip().splitlines()[-1])
    result = train(*sets, "--set", f"model.weights={run}", "--set", "train.epochs=4",
                   "--set", "train.phases.head_epochs=2", "--set", "train.phases.head_lr=0.002",
                   "--set", "train.phases.unfreeze=blocks", "--set", "train.optimizer.lr=0.0005",
                   "--set", "train.schedule.name=cosine", "--set", "train.early_stopping.enabled=false",
                   "--out", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert "phase 2: training the head and block block1 of the backbone" in result.output
    second = Path(result.output.strip().splitlines()[-1])
    history = pd.read_csv(second / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["phase"].tolist() == [1, 1, 2, 2]
    lr = history["lr"].tolist()
    # phase 1 at its warm-up rate; phase 2 recompiled: its cosine starts at its own rate
    assert lr[:2] == pytest.approx([0.002, 0.002]) and lr[2] == pytest.approx(0.0005) and lr[3] < lr[2]
    assert (second / "curves.png").stat().st_size > 0 and (second / "model.keras").exists()


def test_unfreezing_more_blocks_than_the_backbone_has_is_one_line(tmp_path):
    result = train("--set", "model.name=resnet20", "--set", "train.phases.head_epochs=1",
                   "--set", "train.phases.unfreeze=blocks", "--set", "train.phases.unfreeze_n=9",
                   "--set", "train.epochs=2", "--out", str(tmp_path))
    assert result.exit_code == 2
    line = result.output.strip()
    assert line == ("imgclf: error: train.phases.unfreeze_n: the backbone has 4 blocks (stem, stage1, "
                    "stage2, stage3). Received: train.phases.unfreeze_n=9")
    assert not any(tmp_path.iterdir())


def test_phases_need_a_backbone_and_epochs_left_for_phase_two():
    with pytest.raises(ConfigError, match="must be less than epochs"):
        load_config(None, ["train.epochs=3", "train.phases.head_epochs=3"])
    result = train("--set", "model.name=mlp", "--set", "train.phases.head_epochs=1")
    assert result.exit_code == 2 and "mlp has no backbone to freeze" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [2, 3])  # at the phase boundary; inside phase 2
def test_a_two_phase_run_resumes_in_the_right_phase(stop_after, tmp_path, monkeypatch):
    """Interrupted after epoch 2 (phase 1's last) or 3, `--resume` compiles for the phase of
    its checkpoint (the optimizer state fits) and finishes like an uninterrupted run."""
    recipe = ["model.filters=[8]", "model.dense_units=8", "train.verbose=0", "data.batch_size=64",
              "train.epochs=4", "train.phases.head_epochs=2", "train.phases.head_lr=0.002",
              "train.phases.unfreeze=blocks", "train.schedule.name=cosine",
              "train.early_stopping.enabled=false"]
    sets = [a for o in recipe for a in ("--set", o)]
    whole = pd.read_csv(Path(train(*sets, "--out", str(tmp_path / "whole")).output.strip().splitlines()[-1])
                        / "history.csv")
    restore = interrupt_after(monkeypatch, stop_after)
    assert train(*sets, "--out", str(tmp_path / "cut")).exit_code == 130
    restore()
    (run,) = (tmp_path / "cut").iterdir()
    result = train("--resume", str(run))
    assert result.exit_code == 0, result.output
    assert ("phase 2: training" in result.output) == (stop_after == 2)
    resumed = pd.read_csv(run / "history.csv")
    assert resumed["epoch"].tolist() == [1, 2, 3, 4] and resumed["phase"].tolist() == [1, 1, 2, 2]
    np.testing.assert_allclose(resumed["lr"], whole["lr"], rtol=1e-6)


def test_a_phase_one_divergence_names_phase_ones_rate(tmp_path):
    # phase 1 runs at train.phases.head_lr: that is the rate to lower, not train.optimizer.lr
    result = train("--set", "model.filters=[8]", "--set", "model.batch_norm=false",
                   "--set", "model.dense_units=8", "--set", "train.verbose=0",
                   "--set", "data.batch_size=64", "--set", "train.epochs=3",
                   "--set", "train.optimizer.name=sgd", "--set", "train.phases.head_epochs=2",
                   "--set", "train.phases.head_lr=1e30", "--out", str(tmp_path))
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("imgclf: error: training diverged") and "train.phases.head_lr (now 1e+30)" in line


def test_a_phase_two_schedule_that_cannot_be_fails_before_phase_one_trains(tmp_path):
    # the cosine schedule spans phase 2 alone (2 epochs here): a 3-epoch warm-up cannot fit,
    # and that must be said at once, not after phase 1 has trained into a run directory
    result = train("--set", "model.filters=[8]", "--set", "train.verbose=0", "--set", "train.epochs=4",
                   "--set", "train.phases.head_epochs=2", "--set", "train.schedule.name=cosine",
                   "--set", "train.schedule.warmup_epochs=3", "--out", str(tmp_path))
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("imgclf: error: train.schedule:") and "warmup_epochs=3" in line
    assert "phase 2" in line
    assert not any(tmp_path.iterdir())
