"""Setting a run up: the data, the model and the strategy, each settled and checked before a
run directory exists, so a bad config or a missing folder never leaves a half-made run."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from imgclf.config import Config
from imgclf.data import DataBundle, load_data
from imgclf.data.augment import split_steps
from imgclf.data.pipeline import make_dataset, split_source
from imgclf.errors import ConfigError
from imgclf.layers import PatchWhitening
from imgclf.models import ModelSpec, create_model, get_entry
from imgclf.models.weights import check_weights, load_weights
from imgclf.monitors import MONITORS
from imgclf.training import phases
from imgclf.training.distribute import Distribution, dtype_policy, make_distribution, mixed_policy
from imgclf.training.losses import class_weights

DEFAULT_FOLDER_SIZE = (224, 224)


@dataclass
class Prepared:
    cfg: Config  # with data.image_size and data.channels filled in
    bundle: DataBundle
    image_size: tuple[int, int]
    channels: int


def check_monitors(cfg: Config) -> None:
    """Every metric the recipe watches is one a run logs."""
    t = cfg.train
    monitors = {"train.early_stopping.monitor": t.early_stopping.monitor}
    if t.schedule.monitor is not None:
        monitors["train.schedule.monitor"] = t.schedule.monitor
    for i, step in enumerate(t.batch_size_schedule):
        monitors[f"train.batch_size_schedule.{i}.monitor"] = step.monitor
    for key, monitor in monitors.items():
        if monitor not in MONITORS:
            raise ConfigError(f"{key}: unknown metric {monitor!r} (known: {', '.join(MONITORS)})")


def prepare(cfg: Config) -> Prepared:
    """Load the data and settle everything the config leaves open; raises before any work."""
    check_monitors(cfg)
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
    spec = prep.cfg.train.class_weight
    if spec is None:
        return None
    try:
        return class_weights(prep.bundle.splits["train"].y, prep.bundle.class_names, spec)
    except ValueError as exc:
        raise ConfigError(f"train.class_weight: {exc}") from None


def build_model(prep: Prepared, adapt: bool = True):
    """The config's model; with ``adapt``, layers that set themselves from data see a sample
    of the training images first (``adapt_layers``). A resumed run loads its weights instead."""
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
    if adapt:
        adapt_layers(model, prep)
    return model


ADAPT_IMAGES = 5000  # the patch covariance of 5,000 images is as good as that of all


def whitening_layers(model) -> list[PatchWhitening]:
    return [la for la in model._flatten_layers() if isinstance(la, PatchWhitening)]


def adapt_layers(model, prep: Prepared, count: int = ADAPT_IMAGES) -> None:
    """Each PatchWhitening layer adapts to ``count`` training images drawn with the run's seed,
    as they reach it at inference (after the model's own rescaling, without augmentation)."""
    targets = whitening_layers(model)
    if not targets:
        return
    split = prep.bundle.splits["train"]
    picked = np.sort(np.random.default_rng(prep.cfg.seed).permutation(len(split))[:count])
    ds = make_dataset(split.take(picked), image_size=prep.image_size, channels=prep.channels,
                      num_classes=prep.bundle.num_classes, batch_size=500, training=False,
                      seed=prep.cfg.seed, cache=False)
    images = np.concatenate([x for x, _ in ds.as_numpy_iterator()])
    for layer in targets:
        layer.adapt(keras.Model(model.inputs, layer.input).predict(images, batch_size=500, verbose=0))


def noise_into_whitening(cfg: Config, model) -> str | None:
    """A warning for random erasing that fills its boxes with noise in front of a patch-whitening
    layer: whitening scales such noise far above real patches (11x their RMS on CIFAR-10, README,
    Performance), and the runs it unsettles swing by 20 points of validation accuracy."""
    if not any(step.name == "erasing" and step.value is None for step in cfg.augment):
        return None
    if not whitening_layers(model):
        return None
    return (f"warning: augment: erasing without a value fills its boxes with noise, which {cfg.model.name}'s "
            "patch-whitening layer magnifies about 11x over real patches and which unsettles training; "
            "give it a grey value, e.g. {name: erasing, value: 120}")


def steps_per_epoch(prep: Prepared, batch_size: int | None = None) -> int:
    return max(1, math.ceil(len(prep.bundle.splits["train"]) / (batch_size or prep.cfg.data.batch_size)))


def enter_phase(model, prep: Prepared, phase: int, batch_size: int | None = None) -> str:
    """Freeze what ``phase`` keeps frozen (train.phases) and compile for it; returns a line
    for the log that says what trains."""
    return phases.enter_phase(model, prep.cfg.train, phase, steps_per_epoch(prep, batch_size),
                              get_entry(prep.cfg.model.name).block_pattern)


def datasets(prep: Prepared, train_batch_size: int | None = None, names=None, echo=None,
             fill: bool = True, sources: dict | None = None) -> dict:
    """One dataset per split (of ``names``, default all); the training split's batch may differ
    from data.batch_size (train.batch_size_schedule), evaluation batches never change. Cached
    training and validation files are decoded into memory here, before any epoch (``echo``
    says how long that took; ``fill=False``: during the first one, as benchmarks/folder_peer.py
    compares); the test files decode when the test set is evaluated. ``sources`` keeps each
    split's decoded, cached elements between calls: a split found there is batched again from
    them (batch growth), not decoded again."""
    d = prep.cfg.data
    # the training split alone gets the pipeline's steps (all of them with augment_on=pipeline,
    # else only mixup/cutmix); validation, test and predict data are never augmented
    _, in_pipeline = split_steps(prep.cfg.augment, prep.cfg.augment_on, (*prep.image_size, prep.channels))
    sources = {} if sources is None else sources
    made = {}
    for name, split in prep.bundle.splits.items():
        if names is not None and name not in names:
            continue
        training = name == "train"
        filling = fill and d.cache and split.files is not None and name in ("train", "val")
        start = time.perf_counter()
        if name not in sources:
            sources[name] = split_source(split, image_size=prep.image_size, training=training,
                                         seed=prep.cfg.seed, cache=d.cache, shuffle_buffer=d.shuffle_buffer,
                                         fill=filling)
            if filling and echo is not None:
                took = time.perf_counter() - start
                echo(f"{name}: {len(split):,} images decoded into memory in {took:.1f} s")
        made[name] = make_dataset(
            split, image_size=prep.image_size, channels=prep.channels,
            num_classes=prep.bundle.num_classes,
            batch_size=(train_batch_size or d.batch_size) if training else d.batch_size,
            training=training, seed=prep.cfg.seed, cache=d.cache, shuffle_buffer=d.shuffle_buffer,
            augment=in_pipeline if training else (), source=sources[name],
        )
    return made


def verbosity(setting) -> int:
    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(setting)


def seed_everything(cfg: Config) -> None:
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
