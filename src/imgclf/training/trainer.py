"""`imgclf train`: config -> data -> model -> fit -> run directory -> reports.

Everything that can be wrong with the input is checked before the run directory is made,
so a bad config or a missing folder never leaves a half-made run behind. Every finished
epoch leaves a checkpoint (weights, optimizer state, the deciding callbacks' counters), so
`imgclf train --resume RUN_DIR` continues an interrupted run from its last finished epoch.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf import interrupts
from imgclf.config import SCHEDULE_PARAMS, Config, TrainConfig, dump_yaml, load_config
from imgclf.data import DataBundle, load_data
from imgclf.data.scan import skipped_summary
from imgclf.errors import ConfigError, TrainingError
from imgclf.reports import write_reports
from imgclf.reports.metrics import prob_columns
from imgclf.runs import (
    MANIFEST,
    Manifest,
    atomic_path,
    holding,
    new_run_dir,
    read_manifest,
    running_elsewhere,
    write_bad_files,
    write_json,
    write_text,
)
from imgclf.training.distribute import (
    Distribution,
    barrier,
    dtype_policy,
    fit_loop,
    make_distribution,
    mixed_policy,
)
from imgclf.training.phases import is_partial, is_phased, phase_after

DEFAULT_FOLDER_SIZE = (224, 224)
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")


@dataclass
class Prepared:
    cfg: Config  # with data.image_size and data.channels filled in
    bundle: DataBundle
    image_size: tuple[int, int]
    channels: int


def prepare(cfg: Config) -> Prepared:
    """Load the data and settle everything the config leaves open; raises before any work."""
    from imgclf.models import get_entry
    from imgclf.models.weights import check_weights

    t = cfg.train
    monitors = {"train.early_stopping.monitor": t.early_stopping.monitor}
    if t.schedule.monitor is not None:
        monitors["train.schedule.monitor"] = t.schedule.monitor
    for i, step in enumerate(t.batch_size_schedule):
        monitors[f"train.batch_size_schedule.{i}.monitor"] = step.monitor
    for key, monitor in monitors.items():
        if monitor not in MONITORS:
            raise ConfigError(f"{key}: unknown metric {monitor!r} (known: {', '.join(MONITORS)})")
    entry = get_entry(cfg.model.name)
    check_weights(cfg.model.weights, entry)
    bundle = load_data(cfg.data, cfg.seed)
    size = tuple(cfg.data.image_size or bundle.image_size or entry.default_size or DEFAULT_FOLDER_SIZE)
    channels = cfg.data.channels or entry.channels or bundle.channels
    resolved = cfg.model_copy(deep=True)
    resolved.data.image_size = list(size)
    resolved.data.channels = channels
    prep = Prepared(resolved, bundle, size, channels)
    class_weight_map(prep)  # an unknown class name in train.class_weight fails here
    return prep


def class_weight_map(prep: Prepared) -> dict[int, float] | None:
    from imgclf.training.losses import class_weights

    spec = prep.cfg.train.class_weight
    if spec is None:
        return None
    try:
        return class_weights(prep.bundle.splits["train"].y, prep.bundle.class_names, spec)
    except ValueError as exc:
        raise ConfigError(f"train.class_weight: {exc}") from None


def build_model(prep: Prepared):
    from imgclf.data.augment import split_steps
    from imgclf.models import ModelSpec, create_model
    from imgclf.models.weights import load_weights

    cfg = prep.cfg
    # per-image steps go into the model only with augment_on=model; mixup/cutmix never do
    in_model, _ = split_steps(cfg.augment, cfg.augment_on, (*prep.image_size, prep.channels))
    spec = ModelSpec(
        input_shape=(*prep.image_size, prep.channels),
        num_classes=prep.bundle.num_classes,
        cfg=cfg.model,
        augment=in_model,
    )
    # mixed_float16 (with a GPU) or mixed_bfloat16 layers; the head's output layer stays float32
    # (models/heads.py)
    with dtype_policy(mixed_policy(cfg.train.mixed_precision)):
        model = create_model(cfg.model.name, spec)
    if cfg.model.weights and cfg.model.weights != "imagenet":
        load_weights(model, cfg.model.weights)
    return model


def steps_per_epoch(prep: Prepared, batch_size: int | None = None) -> int:
    return max(1, math.ceil(len(prep.bundle.splits["train"]) / (batch_size or prep.cfg.data.batch_size)))


def compile_model(model, t: TrainConfig, steps: int, epochs: int | None = None) -> None:
    """Optimizer, schedule and loss from a train section; ``steps`` per epoch converts the
    schedule's epoch counts into optimizer steps, over ``epochs`` (default t.epochs)."""
    from imgclf.training.losses import make_loss
    from imgclf.training.optimizers import make_optimizer
    from imgclf.training.schedules import make_schedule

    lr = t.optimizer.lr
    if t.schedule.name not in ("constant", "plateau"):  # plateau is a callback on a constant rate
        try:
            lr = make_schedule(t.schedule.name, lr, steps_per_epoch=steps, epochs=epochs or t.epochs,
                               **t.schedule.params())
        except ValueError as exc:
            raise ConfigError(f"train.schedule: {exc}") from None
    try:
        optimizer = make_optimizer(t.optimizer.name, lr, **t.optimizer.params())
    except ValueError as exc:
        raise ConfigError(f"train.optimizer: {exc}") from None
    if t.optimizer.lr_multipliers:
        from imgclf.training.optimizers import qualified_paths

        optimizer.variable_paths = qualified_paths(model)
        _check_lr_multipliers(model, t.optimizer.lr_multipliers, optimizer.variable_paths)
    loss = make_loss(t.loss.name, label_smoothing=t.loss.label_smoothing, alpha=t.loss.alpha,
                     gamma=t.loss.gamma)
    # a mixed_float16 model gets Keras' LossScaleOptimizer around the optimizer (auto_scale_loss)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=t.jit_compile)


def _check_lr_multipliers(model, multipliers: dict, qualified: dict[str, str]) -> None:
    """Refuse a pattern that matches no variable of the model (frozen ones count: a phase may
    unfreeze them), which would otherwise leave every layer at the base rate in silence."""
    from imgclf.training.optimizers import multiplier_for

    paths = [qualified.get(v.path, v.path) for v in model.weights]
    for pattern in multipliers:
        if not any(multiplier_for(path, {pattern: 0.0}) == 0.0 for path in paths):
            layers = sorted({path.rsplit("/", 1)[0] for path in paths})
            shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
            raise ConfigError(
                f"train.optimizer.lr_multipliers: pattern {pattern!r} matches no layer of {model.name} "
                f"(layers: {shown}). Received: lr_multipliers[{pattern!r}]={multipliers[pattern]!r}"
            )


def enter_phase(model, prep: Prepared, phase: int, batch_size: int | None = None) -> str:
    """Freeze what ``phase`` keeps frozen (train.phases) and compile for it; returns a line
    for the log that says what trains."""
    from imgclf.models import get_entry
    from imgclf.training import phases

    return phases.enter_phase(model, prep.cfg.train, phase, steps_per_epoch(prep, batch_size),
                              get_entry(prep.cfg.model.name).block_pattern)


def _checkpoint_phase(t: TrainConfig, state: dict | None) -> int:
    if state is None:
        return phase_after(t, 0)
    return state.get("phase", phase_after(t, state["epoch"]))


def datasets(prep: Prepared, train_batch_size: int | None = None) -> dict:
    """One dataset per split; the training split's batch may differ from data.batch_size
    (train.batch_size_schedule), evaluation batches never change."""
    from imgclf.data.augment import split_steps
    from imgclf.data.pipeline import make_dataset

    d = prep.cfg.data
    # the training split alone gets the pipeline's steps (all of them with augment_on=pipeline,
    # else only mixup/cutmix); validation, test and predict data are never augmented
    _, in_pipeline = split_steps(prep.cfg.augment, prep.cfg.augment_on, (*prep.image_size, prep.channels))
    return {
        name: make_dataset(
            split, image_size=prep.image_size, channels=prep.channels,
            num_classes=prep.bundle.num_classes,
            batch_size=(train_batch_size or d.batch_size) if name == "train" else d.batch_size,
            training=name == "train", seed=prep.cfg.seed, cache=d.cache,
            shuffle_buffer=d.shuffle_buffer, augment=in_pipeline if name == "train" else (),
        )
        for name, split in prep.bundle.splits.items()
    }


def write_predictions(model, data: dict, bundle: DataBundle, path: Path, tta: str | None = None) -> None:
    """One row per val/test item, in split order: split, id, true and predicted class,
    and one probability column per class (averaged over ``tta``'s views, train.tta)."""
    from imgclf.evaluate import predict_probs

    frames = []
    names = np.array(bundle.class_names)
    for name in ("val", "test"):
        if name not in data:
            continue
        probs = predict_probs(model, data[name], tta)  # float64, rows summing to 1
        split = bundle.splits[name]
        frame = pd.DataFrame(
            {
                "split": name,
                bundle.id_column: split.ids,
                "true_label": names[split.y],
                "pred_label": names[probs.argmax(axis=1)],
            }
        )
        frame[prob_columns(bundle.class_names)] = probs
        frames.append(frame)
    with atomic_path(path) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, float_format="%.10g")


def _verbosity(setting) -> int:
    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(setting)


def _seed(cfg: Config) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)  # Python, NumPy and the backend
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()


def distribution(prep: Prepared, echo=print) -> Distribution:
    """train.strategy made, checked against the batch size, and announced (with the
    mixed-precision fallback on a machine without a GPU)."""
    t = prep.cfg.train
    dist = make_distribution(t.strategy)
    if dist.replicas > 1:
        echo(dist.describe())
        batch = min([prep.cfg.data.batch_size] + [s.batch_size for s in t.batch_size_schedule])
        if batch < dist.replicas:
            raise ConfigError(f"data.batch_size is the global batch, split over {dist.replicas} replicas: it "
                              f"must be at least {dist.replicas}. Received: batch_size={batch}")
    if t.mixed_precision and not mixed_policy(t.mixed_precision):
        echo("warning: train.mixed_precision needs a GPU (float16 is slower on a CPU); training in float32")
    return dist


def train(cfg: Config, out: str | None = None, echo=print, *, on_run_dir=None,
          resume_hint: bool = True) -> Path | None:
    """Train one model as ``cfg`` says; returns the new run directory (None on a
    multi_worker worker other than the chief, which writes no run directory).
    ``on_run_dir(path)`` hears of the run directory as soon as it exists (a sweep keeps its
    trials' directories, failed ones too); ``resume_hint=False`` leaves out the line that says
    how to resume an interrupted run (a sweep resumes its own way)."""
    prep = prepare(cfg)
    cfg = prep.cfg
    dist = distribution(prep, echo)
    _seed(cfg)
    # a model that cannot be built, weights that do not fit, or a recipe the optimizer
    # refuses all fail before a run directory exists; variables and optimizer are made in
    # the strategy's scope, so they are mirrored over its replicas
    with dist.strategy.scope():
        model = build_model(prep)
        entered = enter_phase(model, prep, phase_after(cfg.train, 0))
    if is_partial(cfg.train) and not is_phased(cfg.train):
        echo(entered)  # phased runs say so as each phase starts
    name = cfg.output.name or f"{cfg.model.name}-{cfg.data.source}"
    run_dir = new_run_dir(out or cfg.output.dir, name) if dist.is_chief else dist.scratch_dir()
    if on_run_dir is not None and dist.is_chief:
        on_run_dir(run_dir)
    try:
        with holding(run_dir):
            manifest = Manifest(run_dir, "train")
            write_text(run_dir / "config.yaml", dump_yaml(cfg))
            return _guarded(run_dir, manifest, echo, lambda: _train_in(run_dir, prep, model, manifest, echo,
                                                                       entered=entered, dist=dist),
                            own_run=dist.is_chief, resume_hint=resume_hint)
    finally:
        dist.cleanup()  # a non-chief worker's scratch directory


def resume(run_dir: str | Path, echo=print) -> Path:
    """Continue an interrupted run in its own directory, from its last finished epoch, with
    its saved config, optimizer state and schedule position."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / MANIFEST).is_file():
        raise ConfigError(f"--resume {run_dir}: not an imgclf run directory (no config.yaml / {MANIFEST})")
    with holding(run_dir):  # from the first check to the end: two resumes cannot both pass it
        return _resume(run_dir, echo)


def _resume(run_dir: Path, echo) -> Path:
    from imgclf.training.callbacks import CHECKPOINT_DIR, CHECKPOINT_WEIGHTS, read_checkpoint

    recorded = read_manifest(run_dir / MANIFEST)
    status = recorded.get("status")
    busy = running_elsewhere(recorded)
    if busy:
        raise ConfigError(f"--resume {run_dir}: {busy}; stop it first (Ctrl-C, or kill -INT "
                          f"{recorded['pid']}), or let it finish")
    if status == "finished":
        raise ConfigError(f"--resume {run_dir}: this run already finished; start a new one with --config "
                          f"{run_dir / 'config.yaml'}")
    state = read_checkpoint(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if state is not None:
        # the checkpoint holds every weight: the starting weights (a download, another run's
        # directory) need not be there any more
        cfg.model.weights = None
    if cfg.train.strategy == "multi_worker":
        # the run directory and its checkpoint are the chief's alone: the run continues here, in
        # one process, with the same global batch (the checkpoint holds plain, unmirrored values)
        echo("resuming a multi_worker run in this one process (train.strategy auto); "
             f"the global batch stays {cfg.data.batch_size}")
        cfg.train.strategy = "auto"
    prep = prepare(cfg)
    cfg = prep.cfg
    dist = distribution(prep, echo)
    _seed(cfg)
    batch = (state or {}).get("callbacks", {}).get("batch_size", {}).get("batch_size")
    with dist.strategy.scope():
        model = build_model(prep)
        # compiled for the phase the checkpoint was taken in, so its optimizer state fits
        entered = enter_phase(model, prep, _checkpoint_phase(cfg.train, state))
        if state is not None:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(run_dir / CHECKPOINT_DIR / CHECKPOINT_WEIGHTS)
    if state is not None:
        echo(f"resuming {run_dir} after epoch {state['epoch']} of {cfg.train.epochs}"
             + (f" (batch size {batch})" if batch else ""))
    else:
        echo(f"resuming {run_dir}: no epoch had finished, starting again from epoch 1")
    manifest = Manifest.reopen(run_dir)
    return _guarded(run_dir, manifest, echo,
                    lambda: _train_in(run_dir, prep, model, manifest, echo, state, entered, dist))


def _guarded(run_dir: Path, manifest: Manifest, echo, work, own_run: bool = True,
             resume_hint: bool = True) -> Path:
    """``own_run``: False on a multi_worker worker other than the chief, whose ``run_dir`` is
    a scratch directory: the chief's run directory is the one to resume."""
    try:
        return work()
    except KeyboardInterrupt:
        interrupts.acted_on()
        manifest.close("interrupted")
        if own_run:
            echo(f"interrupted; every finished epoch is saved in {run_dir}")
            if resume_hint:
                echo(f"resume with: imgclf train --resume {run_dir}")
        else:
            echo("interrupted; the chief's run directory holds every finished epoch")
        raise
    except BaseException as exc:
        manifest.close("failed", error=f"{type(exc).__name__}: {exc}")
        raise


def _callbacks(run_dir: Path, cfg: Config, history_rows: list[dict], extra_state=None):
    """The callback list and the callbacks whose state a checkpoint keeps, by name."""
    import keras

    from imgclf.training.callbacks import (
        CHECKPOINT_DIR,
        BatchGrowth,
        BestModel,
        Checkpoint,
        EarlyStop,
        HistoryCSV,
        Plateau,
        RaisePendingInterrupt,
    )

    t = cfg.train
    es = t.early_stopping
    history = HistoryCSV(run_dir / "history.csv", rows=history_rows)
    best = BestModel(run_dir / "model.keras", es.monitor, es.mode, es.min_delta,
                     checkpoint_dir=run_dir / CHECKPOINT_DIR)
    stateful: dict = {"best": best}
    callbacks = [history, keras.callbacks.TerminateOnNaN(), best, RaisePendingInterrupt()]
    if es.enabled:
        stateful["early_stopping"] = EarlyStop(es.monitor, es.mode, es.patience, es.min_delta)
    if t.schedule.name == "plateau":
        p = {**SCHEDULE_PARAMS["plateau"], **t.schedule.params()}
        stateful["plateau"] = Plateau(monitor=p["monitor"], factor=p["factor"], patience=p["patience"],
                                      min_lr=p["min_lr"], verbose=0)
    if t.batch_size_schedule:
        stateful["batch_size"] = BatchGrowth(t.batch_size_schedule, cfg.data.batch_size)
    callbacks += [cb for name, cb in stateful.items() if name != "best"]
    if t.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    callbacks.append(Checkpoint(run_dir, stateful, extra_state))
    return callbacks, history, stateful


def _train_in(run_dir: Path, prep: Prepared, model, manifest: Manifest, echo,
              state: dict | None = None, entered: str = "", dist: Distribution | None = None) -> Path | None:
    """``entered``: enter_phase's line for the phase the model was compiled for. Under
    multi_worker every worker trains; only the chief's ``run_dir`` is the run (the others'
    is a scratch directory, removed at the end)."""
    dist = dist or make_distribution("one_device")
    with dist.strategy.scope():
        best, data, epoch, train_time = _fit_all(run_dir, prep, model, manifest, echo, state, entered, dist)
    if not dist.is_chief:
        barrier(dist)  # until the chief has written the run
        echo(f"worker {dist.worker}: training done; the chief writes the run directory")
        return None
    return _finish(run_dir, prep, model, manifest, echo, dist, best, data, epoch, train_time)


def _fit_all(run_dir: Path, prep: Prepared, model, manifest: Manifest, echo, state, entered: str,
             dist: Distribution):
    """Every epoch of the run (phases, batch growth); returns what `_finish` needs."""
    from imgclf.training.callbacks import HistoryCSV

    cfg, bundle, t = prep.cfg, prep.bundle, prep.cfg.train
    write_json(run_dir / "classes.json", bundle.class_names)
    if bundle.bad_files:
        listing = write_bad_files(run_dir, bundle.bad_files)
        echo(f"skipped {skipped_summary(bundle.bad_files)}, listed in {listing}:")
        for p, r in bundle.bad_files[:5]:
            echo(f"  {p}: {r}")
    echo(f"data: {cfg.data.source} {bundle.summary()}; images {prep.image_size[0]}x"
         f"{prep.image_size[1]}x{prep.channels}")
    params = int(model.count_params())
    echo(f"model: {cfg.model.name}, {params:,} parameters")
    manifest.update(model=cfg.model.name, params=params, classes=bundle.num_classes,
                    sizes={k: len(v) for k, v in bundle.splits.items()})

    epoch = state["epoch"] if state else 0
    rows = HistoryCSV.read(run_dir / "history.csv", epoch)  # drops rows past the checkpoint
    phase = _checkpoint_phase(t, state)  # the phase train() / resume() compiled the model for
    phased = is_phased(t)
    callbacks, history, stateful = _callbacks(run_dir, cfg, rows, lambda: {"phase": phase})
    for name, cb_state in (state or {}).get("callbacks", {}).items():
        if name in stateful:
            stateful[name].load_state(cb_state)
    if state and "plateau" in stateful:
        model.optimizer.learning_rate = state["lr"]
    grower = stateful.get("batch_size")
    stopper = stateful.get("early_stopping")
    batch_size = grower.batch_size if grower else cfg.data.batch_size
    data = datasets(prep, batch_size)
    class_weight = class_weight_map(prep)

    if dist.kind == "multi_worker":  # Keras' fit does not run there (training/distribute.py)
        def fit(data, **kwargs):
            return fit_loop(model, dist.strategy, data, **kwargs)
    else:
        fit = model.fit
    t0 = time.perf_counter()
    losses: list[float] = []
    if phased and epoch < t.phases.head_epochs:  # phase 1: the head alone, no early stop
        echo(entered)
        history.extra = {"phase": 1, "batch_size": batch_size}
        deciding = {id(cb) for name, cb in stateful.items() if name != "best"}
        fitted = fit(
            data["train"], validation_data=data.get("val"), initial_epoch=epoch,
            epochs=t.phases.head_epochs, callbacks=[cb for cb in callbacks if id(cb) not in deciding],
            verbose=_verbosity(t.verbose), class_weight=class_weight, shuffle=False,
        )
        losses = fitted.history.get("loss", [])
        epoch += len(losses)
    if phase == 1 and epoch >= t.phases.head_epochs and (not losses or np.isfinite(losses[-1])):
        phase = 2
        echo(enter_phase(model, prep, 2, batch_size) + f", from epoch {epoch + 1}")
    while (epoch < t.epochs and not (stopper and stopper.stopped_epoch)
           and (not losses or np.isfinite(losses[-1]))):
        history.extra = {"batch_size": batch_size, **({"phase": 2} if phased else {})}
        fitted = fit(
            data["train"], validation_data=data.get("val"), initial_epoch=epoch, epochs=t.epochs,
            callbacks=callbacks, verbose=_verbosity(t.verbose), class_weight=class_weight,
            shuffle=False,  # the pipeline shuffles, with the seed
        )
        losses = fitted.history.get("loss", [])
        epoch += len(losses)
        if losses and not np.isfinite(losses[-1]):
            break
        if grower is None or grower.pending is None:
            break
        echo(f"epoch {epoch}: batch size {batch_size} -> {grower.pending}")
        batch_size = grower.batch_size = grower.pending
        grower.pending = None
        data["train"] = datasets(prep, batch_size)["train"]
    # this session's time, plus the epochs that finished before a resume
    train_time = time.perf_counter() - t0 + sum(float(r.get("time_s", 0.0)) for r in rows)
    best = stateful["best"]
    if losses and not np.isfinite(losses[-1]):  # every worker sees the same reduced loss
        if best.best_epoch is None:
            # the rate of the phase it diverged in: phase 1 runs at phases.head_lr
            key, rate = (("train.phases.head_lr", t.phases.head_lr) if phase == 1
                         else ("train.optimizer.lr", t.optimizer.lr))
            raise TrainingError(
                f"training diverged (loss {losses[-1]} in epoch {epoch}) before any epoch "
                f"finished with a finite {t.early_stopping.monitor}: lower {key} (now {rate:g})"
            )
        echo(f"warning: training diverged in epoch {epoch} (loss {losses[-1]}); "
             f"keeping epoch {best.best_epoch}, the best before it")
    return best, data, epoch, train_time


def _finish(run_dir: Path, prep: Prepared, model, manifest: Manifest, echo, dist: Distribution,
            best, data: dict, epoch: int, train_time: float) -> Path:
    """The chief's part after training: the best model, predictions, reports, the manifest."""
    from imgclf.saved import load_model
    from imgclf.training.callbacks import CHECKPOINT_DIR

    interrupts.raise_if_pending()  # a stop asked for in the last batches: the run stays resumable
    bundle, es = prep.bundle, prep.cfg.train.early_stopping
    manifest.update(epochs=epoch, best_epoch=best.best_epoch, monitor=es.monitor,
                    best_value=best.best, train_time_s=round(train_time, 3), strategy=dist.kind,
                    replicas=dist.replicas,
                    mixed_precision=model.dtype_policy.name.startswith("mixed"),
                    dtype_policy=model.dtype_policy.name)
    if dist.kind == "multi_worker":
        # model.keras holds the best epoch (BestModel saved it); predictions come from a copy
        # of it outside the strategy, on this machine alone
        if not (run_dir / "model.keras").exists():  # no epoch had a finite monitor
            with atomic_path(run_dir / "model.keras") as tmp:
                model.save(tmp)
        model = load_model(run_dir / "model.keras")
    else:
        best.restore(model)  # the best epoch's weights are back; save them as the run's model
        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)
    write_predictions(model, data, bundle, run_dir / "predictions.csv", prep.cfg.train.tta)
    metrics = write_reports(run_dir)
    manifest.close("finished")
    barrier(dist)  # the other workers wait for this
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # a finished run needs no resume

    parts = [f"{s} accuracy {metrics[s]['accuracy']:.4f}" for s in ("val", "test") if s in metrics]
    echo(f"done in {train_time:.1f}s, {epoch} epochs (best {best.best_epoch}): " + ", ".join(parts))
    return run_dir
