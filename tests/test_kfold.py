"""k-fold cross-validation: `imgclf train --folds K`, its summary run, compare, resume, tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import FAST
from imgclf.cli import app
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.training.callbacks import Checkpoint

runner = CliRunner()
DIGITS = [*FAST, "data.test_split=0.2"]


def train(tmp_path: Path, *args: str):
    sets = [a for o in DIGITS for a in ("--set", o)]
    return runner.invoke(app, ["train", *sets, *args, "--out", str(tmp_path / "runs")])


def folds_of(parent: Path) -> dict[int, Path]:
    found = {}
    for child in parent.iterdir():
        if (child / "config.yaml").is_file():
            found[load_config(child / "config.yaml").data.fold] = child
    return dict(sorted(found.items()))


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory) -> Path:
    result = train(tmp_path_factory.mktemp("kfold"), "--folds", "3")
    assert result.exit_code == 0, result.output
    assert "done: 3 folds, val accuracy" in result.output
    return Path(result.output.strip().splitlines()[-1])


def test_out_of_fold_predictions_cover_every_training_item_once(kfold_run):
    folds = folds_of(kfold_run)
    assert sorted(folds) == [1, 2, 3]
    whole = load_data(load_config(None, DIGITS).data, 42)  # the same data without folds
    pool = sorted(whole.splits["train"].ids + whole.splits["val"].ids)
    preds = pd.read_csv(kfold_run / "predictions.csv")
    oof = preds[preds.split == "val"]
    assert sorted(oof["index"]) == pool  # each training item exactly once
    for fold, run in folds.items():  # ... predicted by the model that did not train on it
        rows = pd.read_csv(run / "predictions.csv").query("split == 'val'")
        mine = oof[oof["index"].isin(rows["index"])].set_index("index").loc[rows["index"]]
        np.testing.assert_allclose(mine.filter(like="prob_").to_numpy(),
                                   rows.filter(like="prob_").to_numpy(), atol=1e-9)
        assert load_config(run / "config.yaml").data.fold == fold
    test = preds[preds.split == "test"]
    assert sorted(test["index"]) == sorted(whole.splits["test"].ids)  # the test set as it was


def test_the_summary_is_the_mean_and_spread_of_the_fold_metrics(kfold_run):
    cv = json.loads((kfold_run / "cv.json").read_text())
    fold_metrics = [json.loads((run / "metrics.json").read_text()) for run in folds_of(kfold_run).values()]
    assert cv["folds"] == 3
    for split in ("val", "test"):
        for key in ("accuracy", "loss", "f1_macro"):
            values = [m[split][key] for m in fold_metrics]
            assert cv["mean"][split][key] == pytest.approx(np.mean(values))
            assert cv["std"][split][key] == pytest.approx(np.std(values, ddof=1))
    table = pd.read_csv(kfold_run / "folds.csv")
    assert table["fold"].tolist() == [1, 2, 3]
    expected = [m["val"]["accuracy"] for m in fold_metrics]
    assert table["val_accuracy"].tolist() == pytest.approx(expected, abs=1e-6)
    metrics = json.loads((kfold_run / "metrics.json").read_text())  # the reports of the out-of-fold rows
    assert metrics["val"]["n"] == sum(m["val"]["n"] for m in fold_metrics)
    assert {"report.html", "confusion_matrix.png", "per_class.csv"} <= {p.name for p in kfold_run.iterdir()}
    report = (kfold_run / "report.html").read_text()
    assert "k-fold cross-validation over 3 folds" in report
    assert f"val accuracy {cv['mean']['val']['accuracy']:.4f} +- {cv['std']['val']['accuracy']:.4f}" in report
    assert load_config(kfold_run / "config.yaml").data.image_size == [8, 8]  # the settled config
    assert json.loads((kfold_run / "run.json").read_text())["status"] == "finished"


def test_compare_shows_a_kfold_run_as_one_row_with_mean_and_std(kfold_run):
    result = runner.invoke(app, ["compare", str(kfold_run.parent), "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(pd.io.common.StringIO(result.output))
    assert table["run"].tolist() == [kfold_run.name]
    cv = json.loads((kfold_run / "cv.json").read_text())
    row = table.iloc[0]
    assert row["folds"] == 3
    assert row["val_accuracy"] == pytest.approx(cv["mean"]["val"]["accuracy"], abs=1e-4)
    assert row["val_accuracy_std"] == pytest.approx(cv["std"]["val"]["accuracy"], abs=1e-4)


def test_an_interrupted_kfold_run_resumes_at_the_fold_it_was_in(tmp_path, monkeypatch):
    save, ends = Checkpoint.on_epoch_end, []

    def interrupt(self, epoch, logs=None):  # the first epoch of fold 2 (FAST: 2 epochs a fold)
        save(self, epoch, logs)
        ends.append(epoch)
        if len(ends) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "on_epoch_end", interrupt)
    result = train(tmp_path, "--folds", "2")
    assert result.exit_code == 130
    parent = next((tmp_path / "runs").iterdir())
    assert f"resume with: imgclf train --resume {parent}" in result.output
    first = folds_of(parent)[1]
    kept = (first / "model.keras").stat().st_mtime_ns
    monkeypatch.setattr(Checkpoint, "on_epoch_end", save)
    result = runner.invoke(app, ["train", "--resume", str(parent)])
    assert result.exit_code == 0, result.output
    assert "fold 2 of 2: resuming" in result.output and "fold 1 of 2" not in result.output
    folds = folds_of(parent)
    assert (folds[1] / "model.keras").stat().st_mtime_ns == kept  # the finished fold was left alone
    second = json.loads((folds[2] / "run.json").read_text())
    assert second["status"] == "finished" and second["resumed"] == 1
    assert len(pd.read_csv(folds[2] / "history.csv")) == 2
    assert (parent / "cv.json").is_file()


@pytest.mark.parametrize("args, fragment", [
    (["--set", "data.folds=1"], "folds: 0 (off) or at least 2 folds"),
    (["--set", "data.fold=2"], "set data.folds too"),
    (["--folds", "200"], "every class needs at least one per fold"),
])
def test_bad_fold_settings_are_one_line_before_anything_is_made(tmp_path, args, fragment):
    result = train(tmp_path, *args)
    assert result.exit_code == 2 and fragment in result.output
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_tune_scores_a_trial_by_the_mean_over_its_folds(tmp_path):
    sets = [a for o in [*DIGITS, "tune.folds=2", "tune.max_trials=1",
                        "tune.space={model.dropout: {choice: [0.1]}}"] for a in ("--set", o)]
    result = runner.invoke(app, ["tune", *sets, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    tune_dir = Path(result.output.strip().splitlines()[-1])
    record = json.loads(next((tune_dir / "trials").glob("trial_*.json")).read_text())
    parent = tune_dir / "trials" / record["run_dirs"][0]
    scores = []
    for run in folds_of(parent).values():
        history = pd.read_csv(run / "history.csv")
        best = json.loads((run / "run.json").read_text())["best_epoch"]
        scores.append(float(history.loc[history.epoch == best, "val_accuracy"].iloc[-1]))
    assert len(scores) == 2 and record["objective"] == pytest.approx(np.mean(scores))


def test_the_python_api_loads_a_kfold_run_with_its_spread(kfold_run):
    import imgclf

    run = imgclf.load(kfold_run)
    assert run.cv == json.loads((kfold_run / "cv.json").read_text())
    assert run.metrics["val"]["n"] == len(pd.read_csv(kfold_run / "predictions.csv").query("split == 'val'"))
