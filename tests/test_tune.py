"""`imgclf tune`: KerasTuner searches whose trials are ordinary training runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import FAST
from imgclf.cli import app
from imgclf.config import load_config

runner = CliRunner()
LR_SPACE = "tune.space.train.optimizer.lr={float: [1.0e-3, 3.0e-2], log: true}"
DROPOUT_SPACE = "tune.space.model.dropout={float: [0.0, 0.4], step: 0.2}"


def set_args(*overrides: str) -> list[str]:
    return [a for o in (*FAST, *overrides) for a in ("--set", o)]


def tune(*args: str):
    return runner.invoke(app, ["tune", *args])


def tune_dir_of(result) -> Path:
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert (path / "tune.json").is_file()
    return path


def records(tune_dir: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["trial"]: json.loads(p.read_text())
            for p in (tune_dir / "trials").glob("trial_*.json")}


def run_dirs(tune_dir: Path) -> list[Path]:
    return sorted(p for p in (tune_dir / "trials").iterdir() if p.is_dir())


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "override, expected",
    [
        ("tune.space.train.optimizer.lrr={float: [0.001, 0.1]}",
         "tune.space: unknown key train.optimizer.lrr (did you mean train.optimizer.lr?)"),
        ("tune.space.model.dropout={float: [0.4, 0.1]}",
         "tune.space.model.dropout: float must be [low, high] with low < high, got [0.4, 0.1]"),
        ("tune.space.model.dropout={float: [0.1, 1.5]}",
         "tune.space.model.dropout: float value 1.5 does not fit: Input should be less than 1"),
        ("tune.space.train.optimizer.lr={float: [0, 0.1], log: true}",
         "tune.space.train.optimizer.lr: log sampling needs low > 0"),
        ("tune.space.model.activation={choice: [relu, rleu]}",
         "tune.space.model.activation: choice value 'rleu' does not fit"),
        ("tune.space.data.batch_size={float: [8, 64]}",
         "data.batch_size takes whole numbers; use {int: [8, 64]}"),
        ("tune.space.model.dropout={flaot: [0.1, 0.2]}",
         "tune.space.model.dropout: unknown key 'flaot' (did you mean float?)"),
        ("tune.algorithm=grid", "tune.algorithm: Input should be 'random', 'bayesian' or 'hyperband'"),
    ],
)
def test_a_bad_space_is_one_line_and_exit_2(override, expected):
    result = tune("--set", override)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("imgclf: error: --set: ") and expected in lines[0]


def test_a_bad_space_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("tune:\n  space:\n    model.dense_unit: {int: [8, 64]}\n")
    result = tune("--config", str(path))
    assert result.exit_code == 2
    assert result.output.strip() == (f"imgclf: error: {path}: tune.space: unknown key model.dense_unit "
                                     f"(did you mean model.dense_units?)")


def test_an_empty_space_and_an_unknown_objective_are_refused(tmp_path):
    result = tune(*set_args(), "--out", str(tmp_path))
    assert result.exit_code == 2 and "tune.space is empty" in result.output
    result = tune(*set_args(LR_SPACE, "tune.objective=val_acc"), "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "tune.objective: unknown metric 'val_acc' (did you mean val_accuracy?)" in result.output
    assert not list(tmp_path.iterdir())  # nothing made before the checks


def test_space_keys_are_typed_like_their_config_keys():
    cfg = load_config(None, ["tune.space.train.optimizer.lr={choice: [1.0e6, 0.01]}",
                             "tune.space.model.filters={choice: [[8], [8, 16]]}"])
    assert cfg.tune.space["train.optimizer.lr"].choice == [1e6, 0.01]  # "1.0e6" is text to YAML
    assert cfg.tune.space["model.filters"].choice == [[8], [8, 16]]
    assert load_config(None, []).tune.space == {}


def test_train_ignores_a_tune_section(tmp_path):
    result = runner.invoke(app, ["train", *set_args(LR_SPACE), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "trial" not in result.output


# ------------------------------------------------------------------ searches
@pytest.mark.slow
def test_random_search_writes_a_row_per_trial_and_a_best_config_train_takes(tmp_path):
    result = tune(*set_args(LR_SPACE, DROPOUT_SPACE, "tune.space.data.batch_size={choice: [8, 16]}",
                            "tune.max_trials=4"), "--out", str(tmp_path / "runs"))
    tune_dir = tune_dir_of(result)
    trials = pd.read_csv(tune_dir / "trials.csv")
    assert list(trials["trial"]) == [0, 1, 2, 3]
    assert set(trials["status"]) == {"completed"}
    for key in ("train.optimizer.lr", "model.dropout", "data.batch_size", "val_accuracy", "run_dir",
                "duration_s"):
        assert key in trials
    assert trials["train.optimizer.lr"].between(1e-3, 3e-2).all()
    assert set(trials["model.dropout"].round(6)) <= {0.0, 0.2, 0.4}
    # each trial is a normal run whose config holds the trial's values
    for _, row in trials.iterrows():
        run = Path(row["run_dir"])
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        run_cfg = load_config(run / "config.yaml")
        assert run_cfg.train.optimizer.lr == pytest.approx(row["train.optimizer.lr"])
        assert run_cfg.data.batch_size == row["data.batch_size"]
        assert run_cfg.tune.space == {}  # a trial's config is a plain training config
    assert len(run_dirs(tune_dir)) == 4
    assert (tune_dir / "tune.png").stat().st_size > 0
    manifest = json.loads((tune_dir / "tune.json").read_text())
    best = trials.loc[trials["val_accuracy"].idxmax()]
    assert manifest["status"] == "finished" and manifest["best_trial"] == str(best["trial"])

    best_cfg_text = (tune_dir / "best_config.yaml").read_text()
    assert "tune" not in yaml.safe_load(best_cfg_text)
    best_cfg = load_config(tune_dir / "best_config.yaml")
    assert best_cfg.train.optimizer.lr == pytest.approx(best["train.optimizer.lr"])
    assert best_cfg.data.batch_size == best["data.batch_size"]
    trained = runner.invoke(app, ["train", "--config", str(tune_dir / "best_config.yaml"),
                                  "--out", str(tmp_path / "final")])
    assert trained.exit_code == 0, trained.output
    final = Path(trained.output.strip().splitlines()[-1])
    assert load_config(final / "config.yaml").model.dropout == pytest.approx(best["model.dropout"])


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_failed_and_the_search_goes_on(tmp_path):
    # adam at 1e30 turns the loss into NaN in the first epoch: our TrainingError "diverged"
    result = tune(*set_args("tune.space.train.optimizer.lr={choice: [1.0e+30, 0.01]}",
                            "tune.max_trials=2"), "--out", str(tmp_path))
    tune_dir = tune_dir_of(result)
    trials = pd.read_csv(tune_dir / "trials.csv").set_index("train.optimizer.lr")
    assert len(trials) == 2
    failed, ok = trials.loc[1e30], trials.loc[0.01]
    assert failed["status"] == "failed" and "training diverged" in failed["reason"]
    assert pd.isna(failed["val_accuracy"])
    assert ok["status"] == "completed" and ok["val_accuracy"] > 0
    assert "1 failed" in result.output
    assert load_config(tune_dir / "best_config.yaml").train.optimizer.lr == 0.01


@pytest.mark.slow
def test_when_every_trial_fails_the_search_says_so(tmp_path):
    result = tune(*set_args("tune.space.train.optimizer.lr={choice: [1.0e+30]}", "tune.max_trials=1"),
                  "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "imgclf: error: all 1 trials failed (trial 0: training diverged" in result.output
    (tune_dir,) = tmp_path.iterdir()
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "failed"
    assert not (tune_dir / "best_config.yaml").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "imgclf", *args]


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_repeating_finished_trials(tmp_path):
    tune_dir = tmp_path / "sweep"
    cmd = _cli("tune", *set_args(LR_SPACE, DROPOUT_SPACE, "tune.max_trials=4", "train.epochs=1"),
               "--dir", str(tune_dir))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a speed target
        while time.monotonic() < deadline and proc.poll() is None:
            if len(records(tune_dir)) >= 2 if (tune_dir / "trials").is_dir() else False:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"resume with: imgclf tune --resume {tune_dir}" in out
    assert "imgclf train --resume" not in out  # a trial's own hint would mislead
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "interrupted"
    before = records(tune_dir)
    assert 2 <= len(before) < 4
    runs_before = {p.name for p in run_dirs(tune_dir)}

    result = tune("--resume", str(tune_dir))
    assert tune_dir_of(result) == tune_dir
    after = records(tune_dir)
    assert sorted(after) == ["0", "1", "2", "3"]
    for trial_id, record in before.items():
        assert after[trial_id] == record  # neither rerun nor rewritten
    finished = [d for d in run_dirs(tune_dir)
                if json.loads((d / "run.json").read_text())["status"] == "finished"]
    assert len(finished) == 4  # one finished run per trial; an interrupted one was rerun
    assert runs_before <= {p.name for p in run_dirs(tune_dir)}
    assert len(pd.read_csv(tune_dir / "trials.csv")) == 4

    # a finished search continues only when asked for more trials
    again = tune("--resume", str(tune_dir))
    assert again.exit_code == 2 and "already finished (4 trials)" in again.output
    more = tune("--resume", str(tune_dir), "--set", "tune.max_trials=5")
    assert tune_dir_of(more) == tune_dir
    assert sorted(records(tune_dir), key=int) == ["0", "1", "2", "3", "4"]
    assert all(records(tune_dir)[k] == after[k] for k in after)


@pytest.mark.slow
def test_bayesian_search_runs(tmp_path):
    result = tune(*set_args(LR_SPACE, "tune.algorithm=bayesian", "tune.max_trials=3",
                            "tune.objective=val_loss"), "--out", str(tmp_path))
    tune_dir = tune_dir_of(result)
    trials = pd.read_csv(tune_dir / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert trials["train.optimizer.lr"].nunique() == 3
    best = trials.loc[trials["val_loss"].idxmin()]  # val_loss: lower is better
    assert load_config(tune_dir / "best_config.yaml").train.optimizer.lr == pytest.approx(
        best["train.optimizer.lr"])


@pytest.mark.slow
def test_hyperband_sets_each_trials_epochs(tmp_path):
    result = tune(*set_args(LR_SPACE, "tune.algorithm=hyperband", "tune.hyperband_factor=2",
                            "train.epochs=4", "tune.max_trials=3"), "--out", str(tmp_path))
    tune_dir = tune_dir_of(result)
    trials = pd.read_csv(tune_dir / "trials.csv")
    assert len(trials) == 3 and "train.epochs" in trials
    assert trials["train.epochs"].between(1, 4).all()
    for _, row in trials.iterrows():
        history = pd.read_csv(Path(row["run_dir"]) / "history.csv")
        assert len(history) == row["train.epochs"]  # the epochs hyperband gave the trial
    # the best config keeps the full budget
    assert load_config(tune_dir / "best_config.yaml").train.epochs == 4


def test_hyperband_refuses_a_tuned_epoch_count():
    result = tune("--set", "tune.algorithm=hyperband", "--set", "tune.space.train.epochs={int: [1, 5]}")
    assert result.exit_code == 2 and "hyperband sets train.epochs itself" in result.output


# ------------------------------------------------------------------ distributed
def test_distributed_options_are_checked():
    for args, expected in [
        (["--worker", "w1"], "--worker NAME needs --chief HOST:PORT and --dir TUNE_DIR"),
        (["--chief", "127.0.0.1:9"], "--chief needs --dir TUNE_DIR"),
        (["--worker", "w1", "--chief", "localhost", "--dir", "x"], "--chief expects HOST:PORT"),
        (["--worker", "chief2", "--chief", "h:1", "--dir", "x"], "without 'chief'"),
        (["--resume", "x", "--set", "train.epochs=3"], "--resume takes only --set tune.max_trials=N"),
    ]:
        result = tune(*args)
        assert result.exit_code == 2 and expected in result.output, (args, result.output)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_chief_and_two_workers_run_each_trial_once_and_all_exit(tmp_path):
    tune_dir = tmp_path / "shared"
    endpoint = f"127.0.0.1:{_free_port()}"
    config = tmp_path / "sweep.yaml"
    config.write_text("tune:\n  max_trials: 3\n  space:\n"
                      "    train.optimizer.lr: {float: [1.0e-3, 3.0e-2], log: true}\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {"chief": subprocess.Popen(
        _cli("tune", "--config", str(config), *set_args("train.epochs=1"), "--dir", str(tune_dir),
             "--chief", endpoint),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)}
    for name in ("w1", "w2"):
        procs[name] = subprocess.Popen(
            _cli("tune", "--worker", name, "--chief", endpoint, "--dir", str(tune_dir)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outputs = {}
    try:
        deadline = time.monotonic() + 480  # a guard against hanging, not a speed target
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs.values():
            proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outputs[name][1][-3000:])
        assert outputs[name][0].strip().splitlines()[-1] == str(tune_dir)
    found = records(tune_dir)
    assert sorted(found, key=int) == ["0", "1", "2"]
    assert {r["worker"] for r in found.values()} <= {"w1", "w2"}
    assert len(run_dirs(tune_dir)) == 3  # each trial ran once
    trials = pd.read_csv(tune_dir / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert (tune_dir / "best_config.yaml").is_file()
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "finished"
    assert "chief: trial" in outputs["chief"][0]
