"""Backbone plus head: how every model is put together, and how its parts are found again.

A model is: raw 0..255 pixels in, training-only augmentation, the family's own
preprocessing, a backbone, and the one classifier head (layers named ``head_*`` and
``predictions``). Large models keep their backbone as one nested keras Model named
``backbone``; the small ones are flat, and there every layer outside the head is the
backbone. Blocks are found by layer name with the registry entry's ``block_pattern``.
"""

from __future__ import annotations

import re

import keras

from imgclf.models.heads import classifier_head, raw_input
from imgclf.models.registry import ModelSpec

BACKBONE = "backbone"
HEAD_PREFIXES = ("head_", "predictions")


def assemble(spec: ModelSpec, backbone: keras.Model, preprocess: list, name: str) -> keras.Model:
    """input -> augmentation -> preprocessing -> backbone -> head.

    With starting weights (``model.weights`` set) the backbone is called with
    ``training=False``: its batch norm layers use their moving statistics and never update
    them, in every phase, and its own dropout is off; the head still trains normally.
    """
    inputs, x = raw_input(spec)
    for layer in preprocess:
        x = layer(x)
    x = backbone(x, training=False) if spec.cfg.weights else backbone(x)
    return keras.Model(inputs, classifier_head(x, spec, pool="avg"), name=name)


def renamed(model: keras.Model, name: str = BACKBONE) -> keras.Model:
    """The same layers as ``model``, as a functional model called ``name``."""
    return keras.Model(model.input, model.output, name=name)


def is_head(layer) -> bool:
    return layer.name.startswith(HEAD_PREFIXES)


def nested_backbone(model: keras.Model) -> keras.Model | None:
    """The nested model named ``backbone`` (the keras.applications entries), else None."""
    return next((la for la in model.layers if la.name == BACKBONE), None)


def backbone_layers(model: keras.Model) -> list:
    """The backbone's layers in order: the nested ``backbone`` model's, or, in a flat model,
    every layer that holds weights outside the head (preprocessing layers hold none)."""
    nested = nested_backbone(model)
    if nested is not None:
        return [la for la in nested.layers if not isinstance(la, keras.layers.InputLayer)]
    return [la for la in model.layers if la.weights and not is_head(la)]


def backbone_blocks(model: keras.Model, pattern: str) -> dict[str, list]:
    """Backbone layers grouped into blocks, in order. A layer whose name matches ``pattern``
    starts (or continues) the block its first group names; one that does not match stays in
    the block before it (EfficientNet's ``top_conv`` joins ``block7``), and layers before
    the first match form the block ``stem``."""
    regex = re.compile(pattern)
    blocks: dict[str, list] = {}
    current = "stem"
    for layer in backbone_layers(model):
        match = regex.match(layer.name)
        if match:
            current = match.group(1)
        blocks.setdefault(current, []).append(layer)
    return blocks
