"""`imgclf train`: config -> data -> model -> fit -> run directory -> reports.

Everything that can be wrong with the input is checked before the run directory is made,
so a bad config or a missing folder never leaves a half-made run behind.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf.config import Config, dump_yaml
from imgclf.data import DataBundle, load_data
from imgclf.errors import ConfigError, ModelError, TrainingError
from imgclf.reports import write_reports
from imgclf.reports.metrics import prob_columns
from imgclf.runs import Manifest, atomic_path, new_run_dir, write_json, write_text

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

    es = cfg.train.early_stopping
    if es.monitor not in MONITORS:
        raise ConfigError(
            f"train.early_stopping.monitor: unknown metric {es.monitor!r} (known: {', '.join(MONITORS)})"
        )
    entry = get_entry(cfg.model.name)
    check_weights_setting(cfg.model.weights, entry.pretrained)
    bundle = load_data(cfg.data, cfg.seed)
    size = cfg.data.image_size or bundle.image_size or entry.default_size or DEFAULT_FOLDER_SIZE
    size = tuple(size)
    channels = cfg.data.channels or entry.channels or bundle.channels
    resolved = cfg.model_copy(deep=True)
    resolved.data.image_size = list(size)
    resolved.data.channels = channels
    return Prepared(resolved, bundle, size, channels)


def check_weights_setting(weights: str | None, pretrained: bool) -> None:
    if weights is None:
        return
    if weights == "imagenet" and not pretrained:
        raise ConfigError("model.weights=imagenet: this model has no pretrained weights; use null")
    if weights != "imagenet" and not Path(weights).exists():
        raise ConfigError(f"model.weights: no such file or run directory: {weights}")


def load_initial_weights(model, weights: str) -> None:
    """Weights from a .weights.h5 / .keras file or a previous run directory (same model)."""
    import keras

    path = Path(weights)
    if path.is_dir():
        path = path / "model.keras"
    try:
        if path.suffix == ".keras":
            source = keras.models.load_model(path, compile=False)
            model.set_weights(source.get_weights())
        else:
            model.load_weights(path)
    except (ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model.weights={weights}: does not fit this model: {first}") from None


def build_model(prep: Prepared):
    import keras

    from imgclf.data.augment import split_steps
    from imgclf.models import ModelSpec, create_model

    cfg = prep.cfg
    # per-image steps go into the model only with augment_on=model; mixup/cutmix never do
    in_model, _ = split_steps(cfg.augment, cfg.augment_on, (*prep.image_size, prep.channels))
    spec = ModelSpec(
        input_shape=(*prep.image_size, prep.channels),
        num_classes=prep.bundle.num_classes,
        cfg=cfg.model,
        augment=in_model,
    )
    model = create_model(cfg.model.name, spec)
    if cfg.model.weights and cfg.model.weights != "imagenet":
        load_initial_weights(model, cfg.model.weights)
    opt = cfg.train.optimizer
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=opt.lr, beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.loss.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def datasets(prep: Prepared) -> dict:
    from imgclf.data.augment import split_steps
    from imgclf.data.pipeline import make_dataset

    d = prep.cfg.data
    # the training split alone gets the pipeline's steps (all of them with augment_on=pipeline,
    # else only mixup/cutmix); validation, test and predict data are never augmented
    _, in_pipeline = split_steps(prep.cfg.augment, prep.cfg.augment_on, (*prep.image_size, prep.channels))
    return {
        name: make_dataset(
            split, image_size=prep.image_size, channels=prep.channels,
            num_classes=prep.bundle.num_classes, batch_size=d.batch_size,
            training=name == "train", seed=prep.cfg.seed, cache=d.cache,
            shuffle_buffer=d.shuffle_buffer, augment=in_pipeline if name == "train" else (),
        )
        for name, split in prep.bundle.splits.items()
    }


def write_predictions(model, data: dict, bundle: DataBundle, path: Path) -> None:
    """One row per val/test item, in split order: split, id, true and predicted class,
    and one probability column per class."""
    frames = []
    names = np.array(bundle.class_names)
    for name in ("val", "test"):
        if name not in data:
            continue
        probs = model.predict(data[name], verbose=0).astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)  # exact in float64, before CSV rounding
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


def train(cfg: Config, out: str | None = None, echo=print) -> Path:
    """Train one model as ``cfg`` says; returns the new run directory."""
    import keras

    prep = prepare(cfg)
    cfg = prep.cfg
    keras.utils.set_random_seed(cfg.seed)
    # a model that cannot be built, or weights that do not fit, fail before a run directory exists
    model = build_model(prep)
    name = cfg.output.name or f"{cfg.model.name}-{cfg.data.source}"
    run_dir = new_run_dir(out or cfg.output.dir, name)
    manifest = Manifest(run_dir, "train")
    try:
        return _train_in(run_dir, prep, model, manifest, echo)
    except KeyboardInterrupt:
        manifest.close("interrupted")
        echo(f"interrupted; what finished is in {run_dir}")
        raise
    except BaseException as exc:
        manifest.close("failed", error=f"{type(exc).__name__}: {exc}")
        raise


def _train_in(run_dir: Path, prep: Prepared, model, manifest: Manifest, echo) -> Path:
    import keras

    from imgclf.training.callbacks import BestModel, HistoryCSV, resolve_mode

    cfg, bundle = prep.cfg, prep.bundle
    write_text(run_dir / "config.yaml", dump_yaml(cfg))
    write_json(run_dir / "classes.json", bundle.class_names)
    if bundle.bad_files:
        listing = run_dir / "bad_files.txt"
        write_text(listing, "".join(f"{p}\t{r}\n" for p, r in bundle.bad_files))
        echo(f"skipped {len(bundle.bad_files)} unreadable file(s), listed in {listing}:")
        for p, r in bundle.bad_files[:5]:
            echo(f"  {p}: {r}")
    echo(f"data: {cfg.data.source} {bundle.summary()}; images {prep.image_size[0]}x"
         f"{prep.image_size[1]}x{prep.channels}")

    data = datasets(prep)
    params = int(model.count_params())
    echo(f"model: {cfg.model.name}, {params:,} parameters")
    manifest.update(model=cfg.model.name, params=params, classes=bundle.num_classes,
                    sizes={k: len(v) for k, v in bundle.splits.items()})

    es = cfg.train.early_stopping
    mode = resolve_mode(es.monitor, es.mode)
    best = BestModel(run_dir / "model.keras", es.monitor, mode, es.min_delta)
    callbacks = [HistoryCSV(run_dir / "history.csv"), keras.callbacks.TerminateOnNaN(), best]
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, mode=mode,
            restore_best_weights=False,  # BestModel restores, with or without early stopping
        ))
    t0 = time.perf_counter()
    history = model.fit(data["train"], validation_data=data["val"], epochs=cfg.train.epochs,
                        callbacks=callbacks, verbose=_verbosity(cfg.train.verbose),
                        shuffle=False)  # the pipeline shuffles, with the seed
    train_time = time.perf_counter() - t0
    losses = history.history.get("loss", [])
    epochs_run = len(losses)
    if losses and not np.isfinite(losses[-1]):
        if best.best_epoch is None:
            raise TrainingError(
                f"training diverged (loss {losses[-1]} in epoch {epochs_run}) before any epoch "
                f"finished with a finite {es.monitor}: lower train.optimizer.lr "
                f"(now {cfg.train.optimizer.lr:g})"
            )
        echo(f"warning: training diverged in epoch {epochs_run} (loss {losses[-1]}); "
             f"keeping epoch {best.best_epoch}, the best before it")

    manifest.update(epochs=epochs_run, best_epoch=best.best_epoch, monitor=es.monitor,
                    best_value=best.best if best.best_epoch else None,
                    train_time_s=round(train_time, 3))
    # the best epoch's weights are back in the model; save them as the run's model
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    write_predictions(model, data, bundle, run_dir / "predictions.csv")
    metrics = write_reports(run_dir)
    manifest.close("finished")

    parts = [f"{s} accuracy {metrics[s]['accuracy']:.4f}" for s in ("val", "test") if s in metrics]
    echo(f"done in {train_time:.1f}s, {epochs_run} epochs (best {best.best_epoch}): " + ", ".join(parts))
    return run_dir
