"""simple_cnn: conv blocks (conv, batch norm, activation, pooling, dropout) and the head."""

from __future__ import annotations

import keras
from keras import layers

from imgclf.models.heads import BN_MOMENTUM, activation, classifier_head, stem
from imgclf.models.registry import ModelSpec, register_model


@register_model(family="cnn", block_pattern=r"^(block\d+)_")
def simple_cnn(spec: ModelSpec) -> keras.Model:
    """Configurable conv blocks (model.filters, kernel_size, pooling, ...) and the shared head."""
    cfg = spec.cfg
    inputs, x = stem(spec)
    for b, filters in enumerate(cfg.filters):
        for c in range(cfg.convs_per_block):
            x = layers.Conv2D(filters, cfg.kernel_size, padding=cfg.padding,
                              use_bias=not cfg.batch_norm, name=f"block{b}_conv{c}")(x)
            if cfg.batch_norm:
                x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{b}_bn{c}")(x)
            x = activation(cfg.activation)(x)
        # pool while there is something left to halve, so small inputs (8x8) still work
        if cfg.pooling != "none" and min(x.shape[1], x.shape[2]) >= 2:
            pool = layers.MaxPooling2D if cfg.pooling == "max" else layers.AveragePooling2D
            x = pool(2, name=f"block{b}_pool")(x)
        if cfg.conv_dropout:
            x = layers.Dropout(cfg.conv_dropout, name=f"block{b}_dropout")(x)
    outputs = classifier_head(x, spec, pool="avg")
    return keras.Model(inputs, outputs, name="simple_cnn")
