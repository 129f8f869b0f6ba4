"""Two-phase transfer learning (`train.phases`), on top of compiling.py and the epoch loop.

Phase 1 (``head_epochs`` epochs) trains the new head on a frozen backbone at ``head_lr``,
with a constant rate. Phase 2 (the rest of ``train.epochs``) unfreezes the last
``unfreeze_n`` blocks of the backbone (blocks by layer name, per family: see the registry's
``block_pattern``), or its last ``unfreeze_n`` layers, or all of it, and recompiles with
``train.optimizer``, ``train.schedule`` (spanning phase 2 alone) and the run's callbacks.
Batch norm layers of the backbone stay frozen in phase 2 (their scale, offset and moving
statistics never change); with ``model.weights`` set the backbone is also called with
``training=False`` (see models/backbone.py), so they normalize with their moving statistics.

``unfreeze`` without ``head_epochs`` fine-tunes part of the backbone from the start.
"""

from __future__ import annotations

import keras

from imgclf.config import ScheduleConfig, TrainConfig
from imgclf.errors import ConfigError
from imgclf.models.backbone import backbone_blocks, backbone_layers, nested_backbone
from imgclf.training.compiling import compile_model


def is_phased(t: TrainConfig) -> bool:
    """True when the run has a head-only first phase."""
    return t.phases.head_epochs > 0


def is_partial(t: TrainConfig) -> bool:
    """True when some of the backbone is frozen at some point of the run."""
    return is_phased(t) or t.phases.unfreeze != "all"


def phase_after(t: TrainConfig, epochs_done: int) -> int:
    """The phase the next epoch belongs to, after ``epochs_done`` finished epochs."""
    return 1 if epochs_done < t.phases.head_epochs else 2


def _is_batch_norm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def unfrozen_layers(model, t: TrainConfig, block_pattern: str) -> tuple[list, str]:
    """The backbone layers phase 2 trains, and a description of them for the log."""
    p = t.phases
    layers = backbone_layers(model)
    if p.unfreeze == "all":
        return layers, "the whole backbone"
    if p.unfreeze == "layers":
        weighted = [la for la in layers if la.weights and not _is_batch_norm(la)]
        if p.unfreeze_n > len(weighted):
            raise ConfigError(
                f"train.phases.unfreeze_n: the backbone has {len(weighted)} layers with weights "
                f"(batch norm aside). Received: train.phases.unfreeze_n={p.unfreeze_n}"
            )
        chosen = weighted[-p.unfreeze_n:]
        return chosen, f"the last {len(chosen)} layers ({chosen[0].name} .. {chosen[-1].name})"
    blocks = backbone_blocks(model, block_pattern)
    if p.unfreeze_n > len(blocks):
        raise ConfigError(
            f"train.phases.unfreeze_n: the backbone has {len(blocks)} blocks ({', '.join(blocks)}). "
            f"Received: train.phases.unfreeze_n={p.unfreeze_n}"
        )
    names = list(blocks)[-p.unfreeze_n:]
    return [la for name in names for la in blocks[name]], "block" + ("s " if len(names) > 1 else " ") + (
        ", ".join(names))


def set_trainable(model, t: TrainConfig, phase: int, block_pattern: str) -> str:
    """Freeze and unfreeze the backbone for ``phase``; returns what is trained, for the log.
    The head (``head_*``, ``predictions``) is always trained."""
    layers = backbone_layers(model)
    if not is_partial(t):
        return "all layers"
    if not layers:
        raise ConfigError(f"train.phases: model {model.name} has no backbone to freeze (only a head)")
    nested = nested_backbone(model)
    if phase == 1:
        unfrozen_layers(model, t, block_pattern)  # a phase 2 that cannot be fails now, not later
        for layer in [nested] if nested is not None else layers:
            layer.trainable = False
        return "the head; the backbone is frozen"
    chosen, described = unfrozen_layers(model, t, block_pattern)
    keep = {id(la) for la in chosen}
    if nested is not None:
        nested.trainable = True  # then each of its layers below
    for layer in layers:
        layer.trainable = id(layer) in keep and not _is_batch_norm(layer)
    where = "" if t.phases.unfreeze == "all" else " of the backbone"
    return f"the head and {described}{where}; its batch norm stays frozen"


def compile_phase(model, t: TrainConfig, steps: int, phase: int) -> None:
    """Phase 1: train.optimizer at phases.head_lr, constant. Phase 2 (or a run without
    phases): train.optimizer and train.schedule as configured, over the epochs left."""
    if phase == 1:
        head = t.model_copy(deep=True)
        head.optimizer.lr = t.phases.head_lr
        head.schedule = ScheduleConfig()
        compile_model(model, head, steps, epochs=t.phases.head_epochs)
    else:
        epochs = t.epochs - t.phases.head_epochs
        try:
            compile_model(model, t, steps, epochs=epochs)
        except ConfigError as exc:
            if not is_phased(t):
                raise
            raise ConfigError(f"{exc} (train.schedule spans phase 2 alone: {epochs} of train.epochs="
                              f"{t.epochs}, after train.phases.head_epochs={t.phases.head_epochs})") from None


def enter_phase(model, t: TrainConfig, phase: int, steps: int, block_pattern: str) -> str:
    """Set what trains in ``phase`` and compile for it (a fresh optimizer); returns a log line."""
    trained = set_trainable(model, t, phase, block_pattern)
    if phase == 1:
        compile_phase(model, t, steps, 2)  # a phase 2 recipe that cannot be fails now, not later
    compile_phase(model, t, steps, phase)
    if not is_phased(t):
        return f"training {trained}"
    lr = t.phases.head_lr if phase == 1 else t.optimizer.lr
    return f"phase {phase}: training {trained} (lr {lr:g})"
