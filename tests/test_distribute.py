"""train.strategy (tf.distribute), train.mixed_precision and train.jit_compile.

The distributed runs each start Python processes of their own: logical CPU devices must be
set before TensorFlow starts, and MultiWorkerMirroredStrategy before its first op.

How close a distributed run comes to one device: with the same global batch, the same batch
order (shuffle_buffer=1) and a smooth model without batch norm or dropout (batch norm
normalizes each replica's part of a batch, dropout draws per replica; tanh and average pooling,
because a ReLU or max-pool switch flipped by a 1e-7 rounding difference moves a weight by 1e-4),
the replicas' gradients add up to the whole batch's and only the order of float additions
differs. val_split 0.2164 leaves 1408 training digits, 44 full batches of 32, each split
16 + 16. SGD (momentum 0.9, lr 0.3), whose steps scale with the gradient, unlike Adam's.
Measured here over 2 epochs, against one device: mirrored over two logical CPUs, two workers
on 127.0.0.1, and two workers interrupted after epoch 1 then resumed in one process, all gave
losses equal to 2.2e-7 relative and weights to 1.2e-6 absolute. The bound below is 1e-5, about
ten times that. A gradient off by a factor of 2 (one device at lr 0.15) is caught many times
over: losses apart by 2.4e-3 after epoch 1, weights by 0.66 after epoch 2. With a partial
last batch (val_split 0.2: 29 images split 16 + 13, each part's mean counting half; Adam,
ReLU) the runs drifted apart by 3e-4 in loss and 9e-3 in weights over 2 epochs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import FAST
from imgclf.cli import app

runner = CliRunner()

# python ENTRY N [--stop-after K] ARGS...: N logical CPUs, then `imgclf ARGS...`; with
# --stop-after, Ctrl-C right after epoch K's checkpoint (an interrupted run to resume)
ENTRY = '''
import sys
import tensorflow as tf
n = int(sys.argv[1])
args = sys.argv[2:]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
if args[0] == "--stop-after":
    from imgclf.training.callbacks import Checkpoint
    stop, save = int(args[1]), Checkpoint.on_epoch_end
    def interrupt(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch + 1 == stop:
            raise KeyboardInterrupt
    Checkpoint.on_epoch_end = interrupt
    args = args[2:]
from imgclf.cli import main
sys.argv = ["imgclf", *args]
main()
'''

COMPARABLE = ["train.epochs=2", "data.val_split=0.2164", "data.batch_size=32", "data.shuffle_buffer=1",
              "train.optimizer.name=sgd", "train.optimizer.momentum=0.9", "train.optimizer.lr=0.3",
              "model.filters=[8]", "model.dense_units=16", "model.batch_norm=false", "model.dropout=0",
              "model.activation=tanh", "model.pooling=avg",
              "train.early_stopping.enabled=false", "train.verbose=0", "train.deterministic=true"]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def entry(tmp: Path) -> str:
    path = tmp / "entry.py"
    if not path.exists():
        path.write_text(ENTRY)
    return str(path)


def start(tmp: Path, devices: int, args: list[str], env: dict | None = None, stop_after: int | None = None):
    stop = ["--stop-after", str(stop_after)] if stop_after else []
    return subprocess.Popen([sys.executable, entry(tmp), str(devices), *stop, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def finish(proc) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def run_dir_of(out: str) -> Path:
    return Path(out.strip().splitlines()[-1])


def weights(run: Path) -> list[np.ndarray]:
    from imgclf.inference import load_model

    return load_model(run / "model.keras").get_weights()


def assert_close_to(reference: Path, run: Path) -> None:
    """The tolerance measured and explained in the module's docstring."""
    ref, got = pd.read_csv(reference / "history.csv"), pd.read_csv(run / "history.csv")
    assert list(got["epoch"]) == list(ref["epoch"]) == [1, 2]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(got[column], ref[column], rtol=1e-5, err_msg=column)
    for a, b in zip(weights(reference), weights(run)):
        np.testing.assert_allclose(b, a, atol=1e-5)
    # and the runs did train: not two copies of an untouched model
    assert ref["loss"].iloc[-1] < ref["loss"].iloc[0] - 0.01


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("one_device")
    code, out = finish(start(tmp, 1, ["train", *sets(COMPARABLE), "--out", str(tmp / "runs")]))
    assert code == 0, out
    return run_dir_of(out)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_configs(n: int) -> list[str]:
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


def two_workers(tmp: Path, args: list[str], stop_after: int | None = None) -> list[tuple[int, str]]:
    """Both workers write under the same --out (as on a shared file system), each with its
    own temporary folder, so a worker's leftovers would show."""
    procs = []
    for i, conf in enumerate(tf_configs(2)):
        (tmp / f"tmp{i}").mkdir()
        procs.append(start(tmp, 1, args, {"TF_CONFIG": conf, "TMPDIR": str(tmp / f"tmp{i}")},
                           stop_after=stop_after))
    return [finish(p) for p in procs]


# ------------------------------------------------------------------------ mirrored
@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path, one_device):
    code, out = finish(start(tmp_path, 2, ["train", *sets(COMPARABLE + ["train.strategy=mirrored"]),
                                           "--out", str(tmp_path / "runs")]))
    assert code == 0, out
    assert "strategy: mirrored over 2 replicas" in out
    run = run_dir_of(out)
    manifest = json.loads((run / "run.json").read_text())
    assert (manifest["strategy"], manifest["replicas"], manifest["status"]) == ("mirrored", 2, "finished")
    assert_close_to(one_device, run)


@pytest.mark.slow
def test_a_global_batch_smaller_than_the_replicas_is_refused(tmp_path):
    code, out = finish(start(tmp_path, 2, ["train", *sets(FAST + ["train.strategy=mirrored",
                                                                  "data.batch_size=1"]),
                                           "--out", str(tmp_path / "runs")]))
    assert code == 2, out
    assert "imgclf: error: data.batch_size is the global batch, split over 2 replicas" in out
    assert "Traceback" not in out
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- multi_worker
@pytest.mark.slow
def test_two_workers_match_one_device_and_only_the_chief_writes(tmp_path, one_device):
    runs = tmp_path / "runs"
    (code0, out0), (code1, out1) = two_workers(
        tmp_path, ["train", *sets(COMPARABLE + ["train.strategy=multi_worker"]), "--out", str(runs)])
    assert (code0, code1) == (0, 0), out0 + out1
    assert "worker 0 of 2 (the chief, writes the run)" in out0
    assert "worker 1: training done; the chief writes the run directory" in out1
    (run,) = runs.iterdir()  # one run directory, the chief's
    assert run_dir_of(out0) == run
    assert str(runs) not in out1
    for name in ("model.keras", "history.csv", "predictions.csv", "metrics.json", "report.html"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint").exists()
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2]
    assert json.loads((run / "run.json").read_text())["strategy"] == "multi_worker"
    assert not list((tmp_path / "tmp1").iterdir())  # worker 1's scratch run directory is gone
    assert_close_to(one_device, run)


@pytest.mark.slow
def test_an_interrupted_multi_worker_run_resumes_in_one_process(tmp_path, one_device):
    runs = tmp_path / "runs"
    results = two_workers(tmp_path, ["train", *sets(COMPARABLE + ["train.strategy=multi_worker"]),
                                     "--out", str(runs)], stop_after=1)
    assert [code for code, _ in results] == [130, 130], results
    (run,) = runs.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"

    code, out = finish(start(tmp_path, 1, ["train", "--resume", str(run)]))
    assert code == 0, out
    assert "resuming a multi_worker run in this one process" in out
    assert f"resuming {run} after epoch 1 of 2" in out
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    # epoch 1 on two workers, epoch 2 here: still the one-device run, within the tolerance
    assert_close_to(one_device, run)


def test_multi_worker_needs_a_tf_config(tmp_path, monkeypatch):
    args = ["train", *sets(FAST + ["train.strategy=multi_worker"]), "--out", str(tmp_path)]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "TF_CONFIG environment variable, which is not set" in result.output
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 3}}))
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Received: TF_CONFIG=" in result.output and '"index": 3' in result.output
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------- mixed precision, jit_compile
@pytest.mark.parametrize("override, fragment", [
    ("train.strategy=two_gpus", "train.strategy: Input should be 'auto', 'one_device', 'mirrored' or"),
    ("train.jit_compile=maybe", "train.jit_compile: expected auto, true or false, got 'maybe'"),
    ("train.mixed_precision=sometimes", "train.mixed_precision"),
])
def test_distribution_keys_are_checked(tmp_path, override, fragment):
    result = runner.invoke(app, ["train", "--set", override, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert fragment in result.output
    assert not list(tmp_path.iterdir())


def test_multi_worker_refuses_jit_compile_true(tmp_path):
    result = runner.invoke(app, ["train", *sets(["train.strategy=multi_worker", "train.jit_compile=true"])])
    assert result.exit_code == 2
    assert "jit_compile=true does not apply to strategy multi_worker" in result.output


def test_mixed_precision_is_float16_on_a_gpu_and_a_warning_without_one(tmp_path):
    """The GPU check too: on a machine with a GPU this trains in mixed_float16 with XLA."""
    from imgclf.inference import load_model
    from imgclf.training.distribute import gpus

    recipe = FAST + ["train.mixed_precision=true", "train.jit_compile=true"]
    result = runner.invoke(app, ["train", *sets(recipe), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    warning = "warning: train.mixed_precision needs a GPU (float16 is slower on a CPU); training in float32"
    run = Path(result.output.strip().splitlines()[-1])
    model = load_model(run / "model.keras")
    on_gpu = bool(gpus())
    assert (warning in result.output) is not on_gpu
    assert json.loads((run / "run.json").read_text())["mixed_precision"] is on_gpu
    assert model.get_layer("rescale").dtype_policy.name == ("mixed_float16" if on_gpu else "float32")
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert np.isfinite(pd.read_csv(run / "history.csv")["loss"]).all()


def test_mixed_precision_with_a_gpu_builds_float16_layers_and_a_float32_output(monkeypatch):
    """What a GPU gets, built here with the GPU check faked: float16 compute, float32
    weights and softmax output, Keras' loss scaling; the global policy is left as it was."""
    import keras

    from imgclf.config import load_config
    from imgclf.training import distribute
    from imgclf.training import setup as trainer

    monkeypatch.setattr(distribute, "gpus", lambda: ["GPU:0"])
    prep = trainer.prepare(load_config([], [*FAST, "train.mixed_precision=true", "train.jit_compile=false"]))
    model = trainer.build_model(prep)
    trainer.enter_phase(model, prep, 2)
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer("rescale").compute_dtype == "float16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.jit_compile is False
    x = np.random.default_rng(0).uniform(0, 255, (4, *prep.image_size, prep.channels)).astype("float32")
    assert keras.ops.convert_to_numpy(model(x)).dtype == np.float32



def test_bfloat16_trains_on_any_device_with_a_float32_output(tmp_path):
    """mixed_precision=bfloat16 needs no GPU: bfloat16 layers, float32 weights and softmax,
    no loss scaling, finite losses, and the policy recorded in run.json."""
    from imgclf.inference import load_model

    recipe = FAST + ["train.mixed_precision=bfloat16"]
    result = runner.invoke(app, ["train", *sets(recipe), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    run = Path(result.output.strip().splitlines()[-1])
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["dtype_policy"] == "mixed_bfloat16" and manifest["mixed_precision"] is True
    model = load_model(run / "model.keras")
    assert model.get_layer("rescale").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    assert np.isfinite(pd.read_csv(run / "history.csv")["loss"]).all()

# ---------------------------------------------- the multi-worker loop against fit
class StopAfter(__import__("keras").callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


@pytest.mark.parametrize("use_ema", [False, True])
def test_the_multi_worker_loop_gives_what_fit_gives(use_ema):
    """fit_loop under the default strategy, against Keras' fit on the same model, data and
    class weights: the same logs (keys and values), weights, and a stop_training honoured;
    with use_ema, validated with the weight average and ending with it as fit does."""
    import keras
    import tensorflow as tf

    from imgclf.config import load_config
    from imgclf.training import setup as trainer
    from imgclf.training.callbacks import with_average
    from imgclf.training.distribute import fit_loop

    recipe = [*FAST, "data.shuffle_buffer=1", "model.dropout=0", "train.class_weight={'0': 3.0, '1': 0.5}",
              "train.epochs=3", *(["train.optimizer.use_ema=true", "train.optimizer.ema_momentum=0.5"]
                                  if use_ema else [])]
    prep = trainer.prepare(load_config([], recipe))
    data = trainer.datasets(prep)
    class_weight = trainer.class_weight_map(prep)
    histories, models = [], []
    for loop in ("fit", "fit_loop"):
        trainer.seed_everything(prep.cfg)
        model = trainer.build_model(prep)
        trainer.enter_phase(model, prep, 2)
        callbacks = with_average([StopAfter(2)]) if use_ema else [StopAfter(2)]
        kwargs = dict(validation_data=data["val"], epochs=3, callbacks=callbacks, verbose=0,
                      class_weight=class_weight)
        if loop == "fit":
            history = model.fit(data["train"], **kwargs)
        else:
            history = fit_loop(model, tf.distribute.get_strategy(), data["train"], **kwargs)
        histories.append(history.history)
        models.append(model)
    fitted, looped = histories
    assert sorted(looped) == sorted(fitted) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for key in fitted:
        assert len(looped[key]) == len(fitted[key]) == 2  # stopped after epoch 2 of 3
        np.testing.assert_allclose(looped[key], fitted[key], rtol=1e-5, err_msg=key)
    for a, b in zip(*(m.get_weights() for m in models)):
        np.testing.assert_allclose(b, a, atol=1e-5)
    steps = [int(keras.ops.convert_to_numpy(m.optimizer.iterations)) for m in models]
    assert steps[0] == steps[1] == 2 * trainer.steps_per_epoch(prep)
