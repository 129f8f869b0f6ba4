"""Compiling a model for training: the optimizer, its schedule and the loss, from a train
section of the config."""

from __future__ import annotations

from imgclf.config import TrainConfig
from imgclf.errors import ConfigError
from imgclf.training.losses import make_loss
from imgclf.training.optimizers import make_optimizer, multiplier_for, qualified_paths
from imgclf.training.schedules import make_schedule


def compile_model(model, t: TrainConfig, steps: int, epochs: int | None = None) -> None:
    """Optimizer, schedule and loss from a train section; ``steps`` per epoch converts the
    schedule's epoch counts into optimizer steps, over ``epochs`` (default t.epochs)."""
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
    if t.optimizer.lr_multipliers or t.optimizer.weight_decay_multipliers:
        optimizer.variable_paths = qualified_paths(model)
        for key in ("lr_multipliers", "weight_decay_multipliers"):
            check_lr_multipliers(model, getattr(t.optimizer, key), optimizer.variable_paths, key)
    loss = make_loss(t.loss.name, label_smoothing=t.loss.label_smoothing, alpha=t.loss.alpha,
                     gamma=t.loss.gamma)
    # a mixed_float16 model gets Keras' LossScaleOptimizer around the optimizer (auto_scale_loss)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=t.jit_compile)


def check_lr_multipliers(model, multipliers: dict, qualified: dict[str, str],
                         key: str = "lr_multipliers") -> None:
    """Refuse a pattern that matches no variable of the model (frozen ones count: a phase may
    unfreeze them), which would otherwise leave every layer at the base rate in silence."""
    paths = [qualified.get(v.path, v.path) for v in model.weights]
    for pattern in multipliers:
        if not any(multiplier_for(path, {pattern: 0.0}) == 0.0 for path in paths):
            layers = sorted({path.rsplit("/", 1)[0] for path in paths})
            shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
            raise ConfigError(
                f"train.optimizer.{key}: pattern {pattern!r} matches no layer of {model.name} "
                f"(layers: {shown}). Received: {key}[{pattern!r}]={multipliers[pattern]!r}"
            )
