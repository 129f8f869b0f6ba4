"""tf.distribute for `imgclf train` (train.strategy), mixed precision and the multi-worker loop.

``auto``, ``one_device`` and ``mirrored`` train with Keras' own ``fit``. ``multi_worker``
(MultiWorkerMirroredStrategy, the cluster from TF_CONFIG) trains with `fit_loop`, an epoch
loop of our own: Keras 3's ``fit`` does not run under that strategy (keras-team/keras#20585,
"Attempt to convert a value (PerReplica...)"), while a step through ``strategy.run`` on the
same model, optimizer and loss does. `fit_loop` drives the trainer's callbacks with the logs
``fit`` gives (loss, accuracy, val_loss, val_accuracy), so history.csv, checkpoints, early
stopping and the best model behave the same.

data.batch_size is always the global batch: each step splits it over every replica (GPU,
logical device or worker), and the gradients of the parts add up to the gradient of the
whole batch.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf.errors import ConfigError
from imgclf.runs import new_run_dir
from imgclf.training.cluster import tf_config

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


@dataclass
class Distribution:
    """The strategy a run trains under, and this process's part in it."""

    strategy: object  # a tf.distribute.Strategy
    kind: str  # one_device | mirrored | multi_worker (auto resolved)
    worker: int = 0
    workers: int = 1
    is_chief: bool = True
    scratch: Path | None = field(default=None)  # a non-chief worker's throwaway run directory

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        if self.kind == "one_device":
            return "strategy: one_device"
        if self.kind == "mirrored":
            devices = ", ".join(self.strategy.extended.worker_devices)
            return f"strategy: mirrored over {self.replicas} replicas ({devices})"
        role = "the chief, writes the run" if self.is_chief else "writes nothing; the chief writes the run"
        return (f"strategy: multi_worker, worker {self.worker} of {self.workers} ({role}), "
                f"{self.replicas} replicas in all")

    def scratch_dir(self) -> Path:
        """A temporary run directory for a non-chief worker: its callbacks write there, never
        into the chief's run (the usual MultiWorker pattern); `cleanup` removes it."""
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix=f"imgclf-worker{self.worker}-"))
        return self.scratch

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def run_dir(self, parent: str | Path, name: str) -> Path:
        """The chief's new run directory, or a non-chief worker's scratch directory."""
        return new_run_dir(parent, name) if self.is_chief else self.scratch_dir()

    def fit_function(self, model):
        """``model.fit``, or `fit_loop` with the same arguments where Keras' fit does not run."""
        if self.kind != "multi_worker":
            return model.fit
        return functools.partial(fit_loop, model, self.strategy)

    def worker_done(self, echo) -> None:
        """A non-chief worker's end: it waits until the chief has written the run."""
        barrier(self)
        echo(f"worker {self.worker}: training done; the chief writes the run directory")


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


_MULTI_WORKER: list = []  # the process's one MultiWorkerMirroredStrategy, made at start


def start_multi_worker():
    """Make the MultiWorkerMirroredStrategy (TF_CONFIG's cluster): TensorFlow accepts it only
    before its first op, so `imgclf train` calls this right after importing TensorFlow. It
    waits until every worker has started."""
    if not _MULTI_WORKER:
        tf_config()
        try:
            _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
        except RuntimeError as exc:  # "Collective ops must be configured at program startup"
            raise ConfigError(f"train.strategy=multi_worker must be set up before TensorFlow runs anything "
                              f"in the process ({exc}): run it as `imgclf train` in a process of its own"
                              ) from None
    return _MULTI_WORKER[0]


def make_distribution(name: str) -> Distribution:
    """The strategy ``train.strategy`` names. auto: mirrored over the GPUs when more than one
    is visible, else one_device (TensorFlow's default placement: the first GPU, else the CPU).
    mirrored: every visible GPU, else every logical CPU device."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown `train.strategy`. Received: strategy={name} "
                          f"(known: {', '.join(STRATEGIES)})")
    if name == "auto":
        name = "mirrored" if len(gpus()) > 1 else "one_device"
    if name == "one_device":
        return Distribution(tf.distribute.get_strategy(), "one_device")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return Distribution(tf.distribute.MirroredStrategy(devices), "mirrored")
    conf = tf_config()
    cluster, task = conf["cluster"], conf["task"]
    # the chief is task "chief", or worker 0 in a cluster without one
    is_chief = task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0
                                           and "chief" not in cluster)
    order = cluster.get("chief", []) + cluster.get("worker", [])
    worker = (0 if task["type"] == "chief" else len(cluster.get("chief", [])) + task["index"])
    strategy = start_multi_worker()
    return Distribution(strategy, "multi_worker", worker=worker, workers=len(order), is_chief=is_chief)


def barrier(dist: Distribution) -> None:
    """Every worker waits here until all have come: the chief after writing the run, the
    others after training, so none exits while another still runs."""
    if dist.kind != "multi_worker":
        return

    @tf.function
    def meet():
        ones = dist.strategy.run(lambda: tf.constant(1.0))
        return dist.strategy.reduce("SUM", ones, axis=None)

    meet()


# ----------------------------------------------------------------- mixed precision
def mixed_policy(mixed_precision: bool | str) -> str | None:
    """The Keras dtype policy train.mixed_precision asks for on this machine, None for float32.

    true / float16: mixed_float16, only with a GPU (on a CPU float16 is emulated and slower,
    so the run trains in float32; the trainer says so in one line). bfloat16: mixed_bfloat16
    anywhere: on CPUs with bfloat16 instructions (AVX512-BF16, AMX) oneDNN runs convolutions
    and matrix products in it, and it needs no loss scaling."""
    if mixed_precision == "bfloat16":
        return "mixed_bfloat16"
    if mixed_precision in (True, "float16") and gpus():
        return "mixed_float16"
    return None


@contextmanager
def dtype_policy(name: str | None):
    """Keras' global dtype policy set to ``name`` while layers are made, then restored: a
    model keeps the policy it was built with (and saves it in model.keras)."""

    if name is None:
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


# ----------------------------------------------------------------- multi-worker loop
def _distributed(strategy, dataset):
    options = tf.data.Options()
    # every worker reads the whole (seeded, identically shuffled) data and keeps its share of
    # each global batch: no files to split, and the same batches as on one device
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _step_functions(model, strategy, class_weight: dict | None):
    """(train_step, eval_step): one global batch each, through ``strategy.run``, returning the
    batch's summed [loss * n, correct, n] over the replicas."""
    replicas = float(strategy.num_replicas_in_sync)
    weights = None
    if class_weight:
        weights = tf.constant([float(class_weight.get(i, 1.0)) for i in range(max(class_weight) + 1)])
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    trainable = model.trainable_variables  # fixed at compile time, as in fit

    def sums(loss, y, y_pred):
        n = tf.cast(tf.shape(y)[0], tf.float32)
        correct = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(y_pred, -1)), tf.float32)
        # the loss Keras returns is already divided by the replicas (their gradients add up)
        return tf.stack([tf.cast(loss, tf.float32) * replicas * n, tf.reduce_sum(correct), n])

    def replica_train(images, y):
        sample_weight = None if weights is None else tf.gather(weights, tf.argmax(y, -1))
        with tf.GradientTape() as tape:
            y_pred = model(images, training=True)
            loss = model.compute_loss(x=images, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                      training=True)
            scaled = model.optimizer.scale_loss(loss)  # a LossScaleOptimizer's scale (mixed precision)
        grads = tape.gradient(scaled, trainable)
        model.optimizer.apply_gradients(zip(grads, trainable))
        return sums(loss, y, y_pred)

    def replica_eval(images, y):
        y_pred = model(images, training=False)
        loss = model.compute_loss(x=images, y=y, y_pred=y_pred, training=False)
        return sums(loss, y, y_pred)

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_train, args=batch), axis=None)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_eval, args=batch), axis=None)

    return train_step, eval_step


def _logs_of(total: np.ndarray, prefix: str = "") -> dict:
    loss_sum, correct, n = (float(v) for v in total)
    return {f"{prefix}loss": loss_sum / max(n, 1.0), f"{prefix}accuracy": correct / max(n, 1.0)}


def fit_loop(model, strategy, x, validation_data=None, initial_epoch: int = 0, epochs: int = 1,
             callbacks=(), verbose: int = 0, class_weight: dict | None = None, shuffle: bool = False):
    """``model.fit`` for MultiWorkerMirroredStrategy: the same arguments (``x`` a dataset of
    (images, one-hot labels) in global batches), callbacks and logs; returns the History.

    Loss and accuracy follow ``fit``'s definitions: the epoch's loss is the mean of the batch
    losses (class-weighted, as the gradient) weighted by batch size; accuracy counts every
    image alike (Keras weighs only ``weighted_metrics``, and we compile ``metrics``)."""
    del shuffle  # the pipeline shuffles, with the seed
    train_step, eval_step = _step_functions(model, strategy, class_weight)
    train_data = _distributed(strategy, x)
    val_data = _distributed(strategy, validation_data) if validation_data is not None else None
    history = keras.callbacks.History()
    steps = int(x.cardinality()) if int(x.cardinality()) > 0 else None
    cbs = keras.callbacks.CallbackList(list(callbacks) + [history], add_progbar=verbose != 0, model=model,
                                       verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    cbs.on_train_begin()
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        total = np.zeros(3)
        for step, batch in enumerate(train_data):
            cbs.on_train_batch_begin(step)
            total += train_step(batch).numpy()
            cbs.on_train_batch_end(step, _logs_of(total))
            if model.stop_training:  # TerminateOnNaN: the same reduced loss on every worker
                break
        logs = _logs_of(total)
        if val_data is not None:
            cbs.on_test_begin()
            val_total = np.zeros(3)
            for batch in val_data:
                val_total += eval_step(batch).numpy()
            cbs.on_test_end(_logs_of(val_total))
            logs.update(_logs_of(val_total, "val_"))
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    if epochs > initial_epoch:  # as Keras' fit ends: with use_ema, the weights become their average
        model.optimizer.finalize_variable_values(model.trainable_variables)
    cbs.on_train_end(logs)
    return history
