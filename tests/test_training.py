"""The recipes wired into `imgclf train`: schedules in history.csv, plateau, batch growth,
determinism, TensorBoard, resume, and `imgclf lr-find` (interruptions: test_bad_inputs.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import FAST, interrupt_after
from imgclf.cli import app
from imgclf.config import load_config

runner = CliRunner()


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def train(*args):
    return runner.invoke(app, ["train", *args])


def run_dir_of(result) -> Path:
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


def history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv")


NO_STOP = ["train.early_stopping.enabled=false"]


def test_the_logged_rate_follows_the_schedule(tmp_path):
    # step: halve the rate every epoch; each row shows the rate its epoch started with
    run = run_dir_of(train(*sets(FAST + NO_STOP + ["train.epochs=3", "train.optimizer.lr=0.01",
                                                   "train.schedule.name=step",
                                                   "train.schedule.every_epochs=1",
                                                   "train.schedule.factor=0.5"]),
                           "--out", str(tmp_path)))
    lr = history(run)["lr"].to_numpy()
    np.testing.assert_allclose(lr, 0.01 * 0.5 ** np.arange(3), rtol=1e-6)


def test_plateau_cuts_the_rate_when_the_metric_stalls(tmp_path):
    # at lr 1e-9 nothing moves by Keras' min_delta, so every epoch after the first is a stall,
    # and the cut after epoch 2 is the rate of epoch 3
    run = run_dir_of(train(*sets(FAST + NO_STOP + ["train.epochs=4", "train.optimizer.lr=1e-9",
                                                   "train.schedule.name=plateau",
                                                   "train.schedule.patience=0",
                                                   "train.schedule.factor=0.5"]),
                           "--out", str(tmp_path)))
    lr = history(run)["lr"].to_numpy()
    np.testing.assert_allclose(lr, [1e-9, 1e-9, 5e-10, 2.5e-10], rtol=1e-5)


def test_the_batch_grows_when_the_metric_crosses_its_threshold(tmp_path):
    run = run_dir_of(train(*sets(FAST + NO_STOP + ["train.epochs=3"]),
                           "--set", "train.batch_size_schedule=[{monitor: val_accuracy, above: 0.0, "
                                    "batch_size: 32}]", "--out", str(tmp_path)))
    h = history(run)
    assert h["epoch"].tolist() == [1, 2, 3]
    assert h["batch_size"].tolist() == [8, 32, 32]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_batch_growth_on_a_folder_batches_its_decoded_files_again(folder_data, tmp_path, monkeypatch):
    """The grown batch reads the training split's cache: its files decode once a run."""
    from imgclf.data import pipeline

    decoded = []
    decode = pipeline.decode_files
    monkeypatch.setattr(pipeline, "decode_files", lambda files, *a, **k: decoded.append(len(files))
                        or decode(files, *a, **k))
    result = train(*sets(FAST + NO_STOP + ["train.epochs=3", "data.source=folder", f"data.path={folder_data}",
                                           "data.image_size=[16,16]"]),
                   "--set", "train.batch_size_schedule=[{monitor: val_accuracy, above: 0.0, batch_size: 16}]",
                   "--out", str(tmp_path))
    run = run_dir_of(result)
    assert "epoch 1: batch size 8 -> 16" in result.output
    assert history(run)["batch_size"].tolist() == [8, 16, 16]
    assert decoded.count(19) == 1, decoded  # the 19 training files, not again for the new batch


def test_deterministic_runs_repeat_exactly(tmp_path):
    args = sets(FAST + ["train.deterministic=true", "train.epochs=2"])
    a = history(run_dir_of(train(*args, "--out", str(tmp_path / "a"))))
    b = history(run_dir_of(train(*args, "--out", str(tmp_path / "b"))))
    pd.testing.assert_frame_equal(a.drop(columns="time_s"), b.drop(columns="time_s"))


def test_tensorboard_logs_land_in_the_run(tmp_path):
    run = run_dir_of(train(*sets(FAST + ["train.tensorboard=true", "train.epochs=1"]),
                           "--out", str(tmp_path)))
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event files"


def test_an_unknown_class_in_class_weight_is_one_line(tmp_path):
    result = train(*sets(FAST), "--set", "train.class_weight={cat: 2.0}", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("imgclf: error: train.class_weight:")
    assert "cat" in result.output
    assert not list(tmp_path.iterdir())


def test_balanced_class_weights_train(folder_data, tmp_path):
    run = run_dir_of(train(*sets(FAST + ["data.source=folder", f"data.path={folder_data}",
                                         "data.image_size=16", "train.class_weight=balanced"]),
                           "--out", str(tmp_path)))
    assert len(history(run)) == 2


def _wait_for(predicate, timeout=240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False




def test_resume_refuses_a_finished_run_and_extra_settings(tmp_path):
    run = run_dir_of(train(*sets(FAST + ["train.epochs=1"]), "--out", str(tmp_path)))
    result = train("--resume", str(run))
    assert result.exit_code == 2 and "already finished" in result.output
    result = train("--resume", str(run), "--set", "train.epochs=3")
    assert result.exit_code == 2 and "cannot be combined" in result.output
    result = train("--resume", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "not an imgclf run directory" in result.output


def test_lr_find_writes_the_curve_and_a_usable_suggestion(tmp_path):
    result = runner.invoke(app, ["lr-find", *sets(["model.filters=[8]", "model.dense_units=8"]),
                                 "--steps", "80", "--start-lr", "1e-5", "--end-lr", "1", "--out",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    out_dir = Path(result.output.strip().splitlines()[-1])
    curve = pd.read_csv(out_dir / "lr_find.csv")
    assert curve["lr"].iloc[0] == pytest.approx(1e-5)
    ratios = curve["lr"].to_numpy()[1:] / curve["lr"].to_numpy()[:-1]
    np.testing.assert_allclose(ratios, (1 / 1e-5) ** (1 / 79), rtol=1e-6)  # exponential steps
    assert (out_dir / "lr_find.png").stat().st_size > 0
    suggested = json.loads((out_dir / "lr_find.json").read_text())["suggested_lr"]
    assert 1e-5 < suggested < 1
    override = next(ln.strip() for ln in result.output.splitlines() if "--set train.optimizer.lr=" in ln)
    cfg = load_config(None, [override.split(" ", 1)[1]])
    assert cfg.train.optimizer.lr == pytest.approx(suggested, rel=1e-2)


def test_lr_find_prints_its_folder_last_even_when_the_loss_diverges(tmp_path):
    shown = " ".join(runner.invoke(app, ["lr-find", "--help"]).output.split())
    assert "the last line printed is the folder" in shown
    result = runner.invoke(app, ["lr-find", *sets(["model.filters=[8]", "model.dense_units=8"]),
                                 "--steps", "12", "--start-lr", "1e3", "--end-lr", "1e9",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "diverged" in lines[-2] or "never fell" in lines[-2]
    assert Path(lines[-1]).parent == tmp_path and (Path(lines[-1]) / "lr_find.csv").is_file()


def test_lr_find_suggests_where_the_loss_falls_fastest():
    from imgclf.training.lr_find import suggest

    lrs = np.logspace(-6, 0, 121)
    x = np.log10(lrs)
    loss = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 4)) + np.where(x > -1, (x + 1) ** 2 * 10, 0)
    assert np.log10(suggest(lrs, loss)) == pytest.approx(-3, abs=0.1)  # the sigmoid's midpoint
    assert suggest(lrs, np.linspace(1, 2, 121)) is None  # never falls


def test_a_resume_right_after_the_batch_grew_trains_at_the_new_size(tmp_path, monkeypatch):
    # the threshold is crossed in epoch 1; the checkpoint of epoch 1 must carry the growth,
    # so the resumed epoch 2 trains at 32 as the uninterrupted run does
    args = [*sets(FAST + NO_STOP + ["train.epochs=3"]), "--set",
            "train.batch_size_schedule=[{monitor: val_accuracy, above: 0.0, batch_size: 32}]"]
    restore = interrupt_after(monkeypatch, 1)
    assert train(*args, "--out", str(tmp_path)).exit_code == 130
    restore()
    (run,) = tmp_path.iterdir()
    result = train("--resume", str(run))
    assert run_dir_of(result) == run
    assert history(run)["batch_size"].tolist() == [8, 32, 32]


@pytest.mark.parametrize("key", ["lr_multipliers", "weight_decay_multipliers"])
def test_an_lr_multiplier_pattern_that_matches_no_layer_is_one_line(tmp_path, key):
    # a typo would otherwise train every layer at the base rate without a word
    result = train(*sets(FAST), "--set", f"train.optimizer.{key}={{'haed_*': 0.5}}",
                   "--out", str(tmp_path))
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"imgclf: error: train.optimizer.{key}:") and "haed_*" in line
    assert "head_dense0" in line  # the names it could have meant
    assert not list(tmp_path.iterdir())


def test_resume_restores_the_best_epoch_its_checkpoint_knows(tmp_path):
    """Killed after model.keras took a new best epoch but before that epoch's checkpoint:
    the resumed run's best epoch is the checkpoint's, and so are the weights it restores."""
    import keras

    from imgclf.training.callbacks import CHECKPOINT_DIR, BestModel, Checkpoint, read_checkpoint

    def tiny():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    model = tiny()
    best = BestModel(tmp_path / "model.keras", "val_loss", "min", checkpoint_dir=tmp_path / CHECKPOINT_DIR)
    ckpt = Checkpoint(tmp_path, {"best": best})
    for cb in (best, ckpt):
        cb.set_model(model)
    epoch1 = [w.copy() for w in model.get_weights()]
    best.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    ckpt.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    model.set_weights([w + 1.0 for w in epoch1])  # epoch 2 trains on ...
    best.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.5})  # ... saves a better model.keras, and dies

    state = read_checkpoint(tmp_path)
    assert state["epoch"] == 1 and state["callbacks"]["best"]["best_epoch"] == 1
    resumed = BestModel(tmp_path / "model.keras", "val_loss", "min", checkpoint_dir=tmp_path / CHECKPOINT_DIR)
    resumed.load_state(state["callbacks"]["best"])
    fresh = tiny()
    resumed.restore(fresh)
    for got, want in zip(fresh.get_weights(), epoch1):
        np.testing.assert_array_equal(got, want)


def test_resume_does_not_need_the_starting_weights_any_more(tmp_path):
    source = run_dir_of(train(*sets(FAST + ["train.epochs=1"]), "--out", str(tmp_path / "src")))
    cmd = [sys.executable, "-m", "imgclf", "train",
           *sets(["train.epochs=500", "train.verbose=2", "model.filters=[8]", "model.dense_units=8",
                  f"model.weights={source}"] + NO_STOP), "--out", str(tmp_path / "tuned")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: bool(list((tmp_path / "tuned").glob("*/checkpoint/state.json"))))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = (tmp_path / "tuned").iterdir()
    import shutil

    shutil.rmtree(source)  # the run the weights came from is gone; the checkpoint has them all
    # a shorter run, so the resume ends at once: edit the saved config's epoch count
    cfg = (run / "config.yaml").read_text().replace("epochs: 500", "epochs: 2")
    (run / "config.yaml").write_text(cfg)
    result = train("--resume", str(run))
    assert run_dir_of(result) == run
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_train_tta_flip_averages_each_image_with_its_mirror(tmp_path):
    """train.tta=flip: the run's own predictions.csv (and so its metrics) hold the mean of
    the saved model's probabilities for each image and its left-right mirror."""
    import keras

    from imgclf.data import load_data

    run = run_dir_of(train(*sets(FAST + ["data.test_split=0.2", "train.tta=flip"]), "--out", str(tmp_path)))
    cfg = load_config(run / "config.yaml")
    model = keras.models.load_model(run / "model.keras")
    x = load_data(cfg.data, cfg.seed).splits["test"].x.astype("float32")
    want = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    plain = model.predict(x, verbose=0)
    rows = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    got = rows[[c for c in rows.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(got, want / want.sum(1, keepdims=True), atol=1e-5)
    assert np.abs(got - plain).max() > 1e-4  # the mirror changed something: not a plain pass
    names = [c[len("prob_"):] for c in rows.columns if c.startswith("prob_")]
    assert list(rows["pred_label"].astype(str)) == [names[i] for i in got.argmax(1)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx((rows["pred_label"] == rows["true_label"]).mean())


def test_a_long_epoch_logged_a_line_at_a_time_says_where_it_is_every_minute():
    from imgclf.training.callbacks import Heartbeat

    now = [0.0]
    lines = []
    beat = Heartbeat(every=60, echo=lines.append, clock=lambda: now[0])
    beat.set_params({"steps": 200})
    beat.on_epoch_begin(2)
    for step in range(200):
        now[0] += 1.0  # a second a step: 200 s in all
        beat.on_train_batch_end(step, {"loss": 1.5})
    assert lines == ["epoch 3: step 60/200, loss 1.5000, 60s in, ~140s left",
                     "epoch 3: step 120/200, loss 1.5000, 120s in, ~80s left",
                     "epoch 3: step 180/200, loss 1.5000, 180s in, ~20s left"]
    lines.clear()
    beat.on_epoch_begin(3)
    for step in range(30):
        now[0] += 1.0
        beat.on_train_batch_end(step, {"loss": 1.0})
    assert lines == []  # a short epoch: only Keras' own line at its end


def test_weight_averaging_validates_and_keeps_the_average_while_training_goes_on():
    """use_ema: each epoch is validated and judged by the weights' moving average, the model
    ends as that average, and the trained weights go on undisturbed underneath."""
    import keras

    from imgclf.training.callbacks import AverageIn, AverageOut
    from imgclf.training.optimizers import make_optimizer

    rng = np.random.default_rng(0)
    x, xv = rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=(16, 3)).astype("float32")
    y, yv = (np.eye(2, dtype="float32")[(a[:, 0] > 0).astype(int)] for a in (x, xv))

    class Weights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append([w.copy() for w in self.model.get_weights()])

    def fit(callbacks):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(make_optimizer("sgd", 0.5, use_ema=True, ema_momentum=0.8), "categorical_crossentropy")
        logs = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks,
                         validation_data=(xv, yv)).history
        return model, logs

    plain = Weights()
    fit([plain])
    average = AverageIn()
    judged, trained = Weights(), Weights()
    model, logs = fit([average, judged, AverageOut(average), trained])
    for epoch in range(3):
        for raw, under in zip(plain.seen[epoch], trained.seen[epoch]):
            np.testing.assert_allclose(under, raw, rtol=1e-5, atol=1e-7)  # training is not disturbed
        assert not np.allclose(judged.seen[epoch][0], trained.seen[epoch][0])  # the average differs
    for final, avg in zip(model.get_weights(), judged.seen[-1]):
        np.testing.assert_allclose(final, avg, rtol=1e-5, atol=1e-7)
    assert logs["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv, verbose=0), rel=1e-5)


def test_train_with_use_ema_saves_the_average_it_validated(tmp_path):
    run = run_dir_of(train(*sets(FAST + NO_STOP + ["train.optimizer.use_ema=true",
                                                   "train.optimizer.ema_momentum=0.5"]),
                           "--out", str(tmp_path)))
    h = history(run)
    best = h.loc[h["val_loss"].idxmin()]
    # the run's own val figures come from model.keras: the average of the best epoch
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert val["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    bad = train(*sets(FAST + ["train.optimizer.ema_momentum=0.9"]), "--out", str(tmp_path / "bad"))
    assert bad.exit_code != 0
    assert "ema_momentum applies only with use_ema: true" in bad.output
    assert "Traceback" not in bad.output


def test_a_checkpoint_under_use_ema_keeps_the_trained_weights_and_their_average(tmp_path):
    """The checkpoint holds the weights training goes on from, and the average beside them, as
    a resume loads them (optimizer built, then load_weights)."""
    import keras

    from imgclf.training.callbacks import (
        CHECKPOINT_DIR,
        CHECKPOINT_WEIGHTS,
        AverageIn,
        AverageOut,
        Checkpoint,
    )
    from imgclf.training.optimizers import make_optimizer

    def tiny():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(make_optimizer("sgd", 0.3, use_ema=True, ema_momentum=0.7), "mse")
        return model

    class Seen(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = [w.copy() for w in self.model.get_weights()]
            self.average = [keras.ops.convert_to_numpy(v).copy()
                            for v in self.model.optimizer._model_variables_moving_average]

    x = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")
    model, seen, average = tiny(), Seen(), AverageIn()
    model.fit(x, x[:, :2] * 2.0, batch_size=4, epochs=2, verbose=0,
              callbacks=[average, AverageOut(average), seen, Checkpoint(tmp_path, {})])
    assert not np.allclose(seen.weights[0], seen.average[0])
    resumed = tiny()
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(tmp_path / CHECKPOINT_DIR / CHECKPOINT_WEIGHTS)
    for got, want in zip(resumed.get_weights(), seen.weights):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(resumed.optimizer._model_variables_moving_average, seen.average):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
