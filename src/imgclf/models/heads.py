"""The shared pieces every model is made of: input stem, augmentation, the classifier head."""

from __future__ import annotations

import keras
from keras import layers

from imgclf.layers import augmentation_layers
from imgclf.models.registry import ModelSpec

# Keras' default 0.99 leaves the moving statistics far behind for the first hundreds of
# steps, so small data sets validate at chance for several epochs; 0.9 catches up in ~20.
BN_MOMENTUM = 0.9


def activation(name: str) -> layers.Layer:
    return layers.Activation(name)


def raw_input(spec: ModelSpec):
    """Input of raw 0..255 pixels and the training-only augmentation (``spec.augment``: the
    per-image steps, see imgclf.layers), unscaled: models with their own preprocessing."""
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x = inputs
    for layer in augmentation_layers(spec.augment):
        x = layer(x)
    return inputs, x


def stem(spec: ModelSpec):
    """``raw_input``, then scaling to 0..1."""
    inputs, x = raw_input(spec)
    return inputs, layers.Rescaling(1.0 / 255.0, name="rescale")(x)


def classifier_head(x, spec: ModelSpec, pool: str = "avg", units: list[int] | None = None,
                    scale: float = 1.0):
    """The one head: pool (global average or max, or flatten for the MLP), optional batch norm on the
    pooled features (model.head_batch_norm), dense layers (model.dense_units) with the config's
    activation and optional batch norm (model.batch_norm), dropout, softmax output. Its layers
    are named head_* and predictions: that is how transfer learning tells head from backbone."""
    cfg = spec.cfg
    if pool == "avg":
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif pool == "max":
        x = layers.GlobalMaxPooling2D(name="head_pool")(x)
    elif pool == "flatten":
        x = layers.Flatten(name="head_flatten")(x)
    else:
        raise ValueError(f"Unknown `pool` type. Received: pool={pool}")
    if cfg.head_batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_pool_bn")(x)
    units = [cfg.dense_units] if units is None and cfg.dense_units else (units or [])
    for i, n in enumerate(units):
        x = layers.Dense(n, use_bias=not cfg.batch_norm, name=f"head_dense{i}")(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"head_bn{i}")(x)
        x = activation(cfg.activation)(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"head_dropout{i}")(x)
    if not units and cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    if scale != 1.0:
        x = layers.Rescaling(scale, name="head_scale")(x)
    return layers.Dense(spec.num_classes, activation="softmax", dtype="float32", name="predictions")(x)
