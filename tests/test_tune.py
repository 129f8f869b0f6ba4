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
        ("tune.space.train.optimizer.lr={float: [1.0e-4, 1.0e-2], step: 0.5, log: true}",
         "tune.space.train.optimizer.lr: with log: true, step is the factor between values and must be > 1"),
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


def test_a_stepped_float_range_tries_exactly_its_steps_both_ends_included():
    import keras_tuner

    from imgclf.tuning.space import declare, trial_values

    # the README's and configs/tune.yaml's model.dropout: {float: [0.0, 0.5], step: 0.1}
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tune.yaml",
                      ["tune.space.train.optimizer.lr={float: [1.0e-4, 1.0e-1], step: 10, log: true}"])
    hp = keras_tuner.HyperParameters()
    declare(hp, cfg.tune.space)
    declared = {p.name: p for p in hp.space}

    def tried(key):  # every value KerasTuner can draw, as the trial's config gets it
        return {trial_values(cfg.tune, {**hp.values, key: v})[key] for v in declared[key].values}

    assert tried("model.dropout") == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    assert tried("train.optimizer.lr") == {1e-4, 1e-3, 1e-2, 1e-1}


def _hand_made_sweep(tune_dir: Path, state: dict, *overrides: str) -> Path:
    """A tune directory as a search leaves it, without running one."""
    from imgclf.config import dump_yaml

    tune_dir.mkdir()
    (tune_dir / "config.yaml").write_text(dump_yaml(load_config(None, [*FAST, LR_SPACE, *overrides])))
    (tune_dir / "tune.json").write_text(json.dumps({"trials": 2, **state}))
    return tune_dir


def test_multi_worker_trials_are_refused_before_anything_changes(tmp_path):
    for override in ("train.strategy=multi_worker",
                     "tune.space.train.strategy={choice: [auto, multi_worker]}"):
        result = tune(*set_args(LR_SPACE, override), "--out", str(tmp_path / "new"))
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert "train.strategy: multi_worker cannot run as a trial" in result.output
    assert not (tmp_path / "new").exists()
    # --resume checks the config before tune.json goes back to running or config.yaml changes
    sweep = _hand_made_sweep(tmp_path / "sweep", {"status": "interrupted", "mode": "local"},
                             "train.strategy=multi_worker")
    before = {p.name: p.read_text() for p in sweep.iterdir()}
    result = tune("--resume", str(sweep), "--set", "tune.max_trials=5")
    assert result.exit_code == 2 and "multi_worker cannot run as a trial" in result.output
    assert {p.name: p.read_text() for p in sweep.iterdir()} == before


def test_a_search_resumes_only_in_the_mode_it_ran_in(tmp_path):
    local = _hand_made_sweep(tmp_path / "local", {"status": "interrupted", "mode": "local"})
    before = (local / "tune.json").read_text()
    result = tune("--resume", str(local), "--chief", f"127.0.0.1:{_free_port()}")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert (f"--resume {local}: this search ran in one process (no --chief); resume it the same way: "
            f"imgclf tune --resume {local}") in result.output
    assert (local / "tune.json").read_text() == before
    chief = _hand_made_sweep(tmp_path / "chief", {"status": "interrupted", "mode": "chief"})
    result = tune("--resume", str(chief))
    assert result.exit_code == 2
    assert (f"this search ran with a chief (--chief); resume it the same way: imgclf tune --resume "
            f"{chief} --chief HOST:PORT") in result.output
    # a directory from before tune.json recorded the mode: KerasTuner's tuner file tells
    older = _hand_made_sweep(tmp_path / "older", {"status": "interrupted"})
    (older / "keras_tuner").mkdir()
    (older / "keras_tuner" / "chief.json").write_text("{}")
    result = tune("--resume", str(older))
    assert result.exit_code == 2 and "this search ran with a chief" in result.output


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
    # each trial is a normal run whose config holds the trial's values, stepped ones exactly
    # (not 0.30000000000000004, and not the default dropout 0.3)
    for _, row in trials.iterrows():
        run = Path(row["run_dir"])
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        run_cfg = load_config(run / "config.yaml")
        assert run_cfg.train.optimizer.lr == pytest.approx(row["train.optimizer.lr"])
        assert run_cfg.data.batch_size == row["data.batch_size"]
        assert run_cfg.model.dropout in {0.0, 0.2, 0.4}
        assert records(tune_dir)[str(row["trial"])]["values"]["model.dropout"] == run_cfg.model.dropout
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
        (["--worker", "oracle", "--chief", "h:1", "--dir", "x"], "--worker: oracle is taken"),
        (["--worker", "tuner0", "--chief", "h:1", "--dir", "x"], "--worker: tuner0 is taken"),
        (["--resume", "x", "--set", "train.epochs=3"], "--resume takes only --set tune.max_trials=N"),
    ]:
        result = tune(*args)
        assert result.exit_code == 2 and expected in result.output, (args, result.output)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_chiefs_hint_names_an_address_workers_can_dial():
    from imgclf.tuning.distributed import _dial_address, parse_endpoint

    assert _dial_address("0.0.0.0", 8000) == f"{socket.getfqdn()}:8000"  # not the bind-all address
    assert _dial_address(*parse_endpoint("[::]:8000")) == f"{socket.getfqdn()}:8000"
    assert _dial_address(*parse_endpoint("[::1]:8000")) == "[::1]:8000"
    assert _dial_address("10.1.2.3", 8000) == "10.1.2.3:8000"


def test_a_busy_chief_port_is_refused_before_the_directory_is_made(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = f"127.0.0.1:{busy.getsockname()[1]}"
        result = tune(*set_args(LR_SPACE), "--dir", str(tmp_path / "sweep"), "--chief", endpoint)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--chief {endpoint}: cannot listen there" in result.output
    assert not (tmp_path / "sweep").exists()


def test_keras_tuners_chief_misses_a_held_ctrl_c(tmp_path, monkeypatch):
    """Why the chief serves KerasTuner's servicer in imgclf's own loop: a Ctrl-C that comes while
    the oracle writes its state is held, and KerasTuner's start_server (1.4) never raises it."""
    from types import SimpleNamespace

    import keras_tuner
    from keras_tuner.src.distribute import oracle_chief

    from imgclf import interrupts
    from imgclf.tuning.distributed import _serve

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # the interrupt silences it
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("val_loss", "min"),
                                                    max_trials=2)
    naps: list[float] = []

    def nap(seconds):  # KerasTuner's loop sleeps between looks; the third look ends the test
        naps.append(seconds)
        if len(naps) == 1:
            with interrupts.held():  # as during an oracle write on a gRPC thread
                signal.raise_signal(signal.SIGINT)
        elif len(naps) == 3:
            raise RuntimeError("still serving")

    monkeypatch.setattr(oracle_chief, "time", SimpleNamespace(sleep=nap))
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(_free_port()))
    lines: list[str] = []
    with interrupts.installed():
        with pytest.raises(RuntimeError, match="still serving"):
            oracle_chief.start_server(oracle)  # two looks after the Ctrl-C, and it serves on
        with pytest.raises(KeyboardInterrupt):
            _serve(oracle, "127.0.0.1", _free_port(), tmp_path, lines.append, poll_s=0)
    assert lines and lines[0].startswith("chief: serving the oracle on 127.0.0.1:")


def test_a_worker_stops_with_one_line_on_a_finished_search(tmp_path):
    sweep = _hand_made_sweep(tmp_path / "sweep", {"status": "finished", "mode": "chief"})
    result = tune("--worker", "w1", "--chief", f"127.0.0.1:{_free_port()}", "--dir", str(sweep))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"worker w1: the search in {sweep} has finished; nothing to run" in result.output
    assert not (sweep / "keras_tuner").exists()  # it never joined


def test_a_worker_without_a_chief_stops_with_one_line(tmp_path, monkeypatch):
    from keras_tuner.src.distribute import oracle_client

    monkeypatch.setattr(oracle_client, "TIMEOUT", 1)  # KerasTuner's client waits an hour for a chief
    sweep = _hand_made_sweep(tmp_path / "sweep", {"status": "running", "mode": "chief"})
    endpoint = f"127.0.0.1:{_free_port()}"
    result = tune("--worker", "w1", "--chief", endpoint, "--dir", str(sweep))
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (f"imgclf: error: worker w1: no chief at {endpoint} "
                                                      f"(DEADLINE_EXCEEDED)")


@pytest.mark.slow
def test_ctrl_c_stops_a_worker_waiting_for_its_chief(tmp_path):
    import threading

    sweep = _hand_made_sweep(tmp_path / "sweep", {"status": "running", "mode": "chief"})
    proc = subprocess.Popen(_cli("tune", "--worker", "w1", "--chief", f"127.0.0.1:{_free_port()}",
                                 "--dir", str(sweep)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines: list[str] = []

    def read():
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a speed target
        while not any("asking" in line for line in lines) and proc.poll() is None:
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)
        time.sleep(1.0)  # now inside KerasTuner's call that waits (up to an hour) for the chief
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(lines)[-3000:]
    assert "worker w1 interrupted" in "".join(lines)


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
    # each trial ran exactly once, on the worker its record names: one start line among both
    # workers' outputs and one run directory. (Which worker gets which trial is a race: one that
    # starts faster may take all three, so the test does not require both to have run one.)
    started = [(name, line.split(":")[0].split()[1]) for name in ("w1", "w2")
               for line in outputs[name][0].splitlines() if line.startswith("trial ") and "lr=" in line]
    assert sorted(trial for _, trial in started) == ["0", "1", "2"], started
    assert all(found[trial]["worker"] == name for name, trial in started)
    recorded = sorted(d for r in found.values() for d in r["run_dirs"])
    assert recorded == sorted(p.name for p in run_dirs(tune_dir)) and len(recorded) == 3
    trials = pd.read_csv(tune_dir / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert (tune_dir / "best_config.yaml").is_file()
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "finished"
    assert "chief: trial" in outputs["chief"][0]
