"""Every finished run is diagnosed: the findings from hand-built histories and predictions,
and a run that does not learn printing them, keeping them in run.json and report.html."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from conftest import FAST
from imgclf.cli import app
from imgclf.config.schema import valid_keys
from imgclf.reports.diagnose import (
    CHANCE_SE,
    MAX_VAL_SE,
    MIN_EPOCHS_FIRST_BEST,
    MIN_EPOCHS_RISING,
    OVERFIT_GAP,
    diagnose,
)

CLASSES = ["cat", "dog", "fox"]


def history(loss, val_loss=None, accuracy=None, val_accuracy=None) -> pd.DataFrame:
    """history.csv's rows; a healthy run's curves for what is not given."""
    n = len(loss)
    val_loss = val_loss if val_loss is not None else [v * 1.05 for v in loss]
    accuracy = accuracy if accuracy is not None else list(np.linspace(0.6, 0.95, n))
    val_accuracy = val_accuracy if val_accuracy is not None else [a - 0.02 for a in accuracy]
    return pd.DataFrame({"epoch": range(1, n + 1), "loss": loss, "accuracy": accuracy,
                         "val_loss": val_loss, "val_accuracy": val_accuracy})


def predictions(n: int = 900, right: float = 0.95, seed: int = 0):
    """Balanced val labels over CLASSES, the first ``right`` share predicted right, the rest
    shifted to the next class (so every class is predicted)."""
    y_true = np.arange(n) % len(CLASSES)
    y_pred = y_true.copy()
    wrong = np.random.default_rng(seed).permutation(n)[: round(n * (1 - right))]
    y_pred[wrong] = (y_true[wrong] + 1) % len(CLASSES)
    return y_true, y_pred


FALLING = [1.2, 0.8, 0.6, 0.5, 0.45]


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def test_a_healthy_run_says_nothing():
    assert diagnose(history(FALLING), *predictions(), CLASSES, best_epoch=5) == []


def test_best_first_epoch_is_reported_only_with_later_epochs_to_beat_it():
    later = history(FALLING, val_loss=[0.9, 1.0, 0.95, 1.1, 1.05])
    found = diagnose(later, *predictions(), CLASSES, best_epoch=1)
    assert codes(found) == ["first_epoch_best"]
    assert "train.optimizer.lr" in found[0].keys
    short = history(FALLING[: MIN_EPOCHS_FIRST_BEST - 1])
    assert diagnose(short, *predictions(), CLASSES, best_epoch=1) == []
    assert diagnose(later, *predictions(), CLASSES, best_epoch=3) == []


def test_a_rising_training_loss_points_at_the_learning_rate_and_lr_find():
    found = diagnose(history([1.0, 1.4, 2.0, 2.5]), *predictions(), CLASSES, best_epoch=1)
    assert codes(found) == ["loss_rising"]  # it also says why epoch 1 stayed best: one finding
    assert "imgclf lr-find" in found[0].message and found[0].keys == ("train.optimizer.lr",)


def test_a_loss_that_is_not_finite_is_reported_from_its_epoch():
    found = diagnose(history([2.3, 1.9, math.nan, math.nan]), *predictions(), CLASSES, best_epoch=2)
    assert codes(found) == ["loss_rising"]
    assert "epoch 3" in found[0].message


def test_a_val_loss_rising_at_every_epoch_from_the_first_is_reported():
    rising = [0.5 + 0.1 * i for i in range(MIN_EPOCHS_RISING)]
    found = diagnose(history(FALLING[:MIN_EPOCHS_RISING], val_loss=rising), *predictions(), CLASSES,
                     best_epoch=1)
    assert codes(found) == ["loss_rising"]
    dip = [*rising[:-1], rising[0] - 0.05]  # it came down once: not rising from the start
    assert "loss_rising" not in codes(diagnose(history(FALLING[:MIN_EPOCHS_RISING], val_loss=dip),
                                               *predictions(), CLASSES, best_epoch=3))


def test_overfitting_states_the_gap_at_the_best_or_last_epoch():
    acc = [0.7, 0.8, 0.9, 0.95, 0.99]
    wide = history(FALLING, accuracy=acc, val_accuracy=[a - OVERFIT_GAP - 0.05 for a in acc])
    found = diagnose(wide, *predictions(), CLASSES, best_epoch=5)
    assert codes(found) == ["overfitting"]
    assert f"{OVERFIT_GAP + 0.05:.3f}" in found[0].message and "epoch 5" in found[0].message
    assert set(found[0].keys) == {"augment", "model.dropout"}
    narrow = history(FALLING, accuracy=acc, val_accuracy=[a - OVERFIT_GAP + 0.05 for a in acc])
    assert diagnose(narrow, *predictions(), CLASSES, best_epoch=5) == []


def test_overfitting_looks_at_the_kept_epoch_too_not_at_the_others():
    acc = [0.7, 0.8, 0.9, 0.95, 0.99]
    at_best = [a - (0.3 if i == 2 else 0.02) for i, a in enumerate(acc)]
    found = diagnose(history(FALLING, accuracy=acc, val_accuracy=at_best), *predictions(), CLASSES,
                     best_epoch=3)
    assert codes(found) == ["overfitting"] and "epoch 3" in found[0].message
    # the same gap at an epoch that is neither kept nor last says nothing
    assert diagnose(history(FALLING, accuracy=acc, val_accuracy=at_best), *predictions(), CLASSES,
                    best_epoch=4) == []


def test_val_accuracy_at_chance_is_reported_within_its_noise():
    n = 900
    chance = 1 / len(CLASSES)
    bar = chance + CHANCE_SE * math.sqrt(chance * (1 - chance) / n)
    just_below = predictions(n, right=bar - 0.01)
    found = diagnose(history(FALLING), *just_below, CLASSES, best_epoch=5)
    assert codes(found) == ["at_chance"]
    assert diagnose(history(FALLING), *predictions(n, right=bar + 0.01), CLASSES, best_epoch=5) == []


def test_always_naming_the_largest_class_is_chance_too():
    y_true = np.array([0] * 800 + [1] * 100 + [2] * 100)
    found = diagnose(history(FALLING), y_true, np.zeros_like(y_true), CLASSES, best_epoch=5)
    assert codes(found) == ["at_chance"]  # 0.8 right, far above 1/3, and still nothing learned


def test_classes_never_predicted_are_named():
    y_true, y_pred = predictions()
    y_pred[y_pred == 2] = 0
    found = diagnose(history(FALLING), y_true, y_pred, CLASSES, best_epoch=5)
    assert codes(found) == ["class_never_predicted"]
    assert "fox" in found[0].message and "cat" not in found[0].message
    assert found[0].keys == ("train.class_weight",)
    # a class absent from val is no finding
    keep = y_true != 2
    assert diagnose(history(FALLING), y_true[keep], y_pred[keep], CLASSES, best_epoch=5) == []


def test_a_small_val_split_shows_its_standard_error():
    y_true, y_pred = predictions(153, right=0.73)
    accuracy = float(np.mean(y_true == y_pred))
    se = math.sqrt(accuracy * (1 - accuracy) / 153)
    assert se > MAX_VAL_SE
    found = diagnose(history(FALLING), y_true, y_pred, CLASSES, best_epoch=5)
    assert codes(found) == ["val_too_small"]
    assert f"{accuracy:.3f} +- {se:.3f} (n=153)" in found[0].message
    assert found[0].keys == ("data.val_split",)
    assert diagnose(history(FALLING), *predictions(4000, right=0.73), CLASSES, best_epoch=5) == []


def test_every_named_key_is_a_config_key():
    y_true = np.array([0] * 80 + [1] * 10 + [2] * 10)
    worst = [
        diagnose(history([1.0, 2.0, 3.0], accuracy=[0.9] * 3, val_accuracy=[0.1] * 3), y_true,
                 np.zeros_like(y_true), CLASSES, best_epoch=1),
        diagnose(history(FALLING, val_loss=[0.9, 1.0, 0.95, 1.1, 1.05]), *predictions(60, right=0.8),
                 CLASSES, best_epoch=1),
        diagnose(history(FALLING), y_true, np.where(y_true == 2, 0, y_true), CLASSES, best_epoch=5),
    ]
    found = [f for findings in worst for f in findings]
    assert {f.code for f in found} == {"loss_rising", "overfitting", "at_chance", "first_epoch_best",
                                       "class_never_predicted", "val_too_small"}
    keys = set(valid_keys())
    assert [k for f in found for k in f.keys if k not in keys] == []


# ------------------------------------------------------------------- a run, end to end
def train_output(out, *overrides) -> list[str]:
    args = ["train", "--out", str(out)]
    for o in [*FAST, *overrides]:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()


def test_a_run_that_does_not_learn_says_so(tmp_path):
    lines = train_output(tmp_path, "train.optimizer.lr=5", "train.epochs=4")
    run_dir = Path(lines[-1])
    printed = [line for line in lines if line.startswith("diagnosis: ")]
    recorded = json.loads((run_dir / "run.json").read_text())["diagnosis"]
    assert "at_chance" in [d["code"] for d in recorded]
    assert printed == [f"diagnosis: {d['message']} (see {', '.join(d['keys'])})" for d in recorded]
    assert lines.index(printed[0]) > [i for i, line in enumerate(lines) if line.startswith("done in")][0]
    page = (run_dir / "report.html").read_text()
    assert "Diagnosis: " in page and "not above chance" in page


def test_a_run_that_learns_says_nothing(tmp_path):
    # the quickstart's model (not FAST's tiny one), long enough to learn the digits
    lines = train_output(tmp_path, "model.filters=[32,64]", "model.dense_units=128", "data.batch_size=32",
                         "train.epochs=6")
    run_dir = Path(lines[-1])
    assert [line for line in lines if line.startswith("diagnosis")] == []
    assert json.loads((run_dir / "run.json").read_text())["diagnosis"] == []
    assert "Diagnosis: " not in (run_dir / "report.html").read_text()
