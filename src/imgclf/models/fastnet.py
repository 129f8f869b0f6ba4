"""fastnet: the small, wide plain net of the fast CIFAR-10 training records, for 28-64 px.

A fixed 2x2 patch-whitening convolution (imgclf.layers.PatchWhitening, set from training
images before the first step), then three conv pairs; each pair pools right after its first
conv, so the second runs at half the resolution. Batch norm without a learned scale, identity
(Dirac) initialised kernels, and logits scaled down (1/9) before the softmax."""

from __future__ import annotations

import keras
from keras import layers

from imgclf.errors import ModelError
from imgclf.layers import Dirac, PatchWhitening
from imgclf.models.heads import BN_MOMENTUM, activation, classifier_head, stem
from imgclf.models.registry import ModelSpec, register_model

LOGIT_SCALE = 1 / 9  # small logits at the start: with label smoothing, the net trains faster


def fastnet_widths(filters: list[int]) -> list[int]:
    """The three pairs' widths from model.filters; a shorter list repeats its last width."""
    if len(filters) > 3:
        raise ModelError(f"fastnet takes at most 3 widths in model.filters (one per conv pair). "
                         f"Received: model.filters={list(filters)}")
    return list(filters) + [filters[-1]] * (3 - len(filters))


def _conv_bn(x, filters: int, name: str, act: str, pool: bool):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=Dirac(),
                      name=f"{name}_conv")(x)
    if pool and min(x.shape[1], x.shape[2]) >= 2:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, scale=False, name=f"{name}_bn")(x)
    return activation(act)(x)


@register_model(family="fastnet", default_size=(32, 32), block_pattern=r"^(whiten|block\d+)_")
def fastnet(spec: ModelSpec) -> keras.Model:
    """Fast-training plain net for 28-64 px: a fixed patch-whitening conv, then three conv pairs
    that pool after their first conv; model.filters gives the widths, [64, 256, 256] is the
    CIFAR-10 one (configs/cifar10.yaml)."""
    cfg = spec.cfg
    inputs, x = stem(spec)
    x = PatchWhitening(2, name="whiten_conv")(x)
    x = activation(cfg.activation)(x)
    for b, width in enumerate(fastnet_widths(cfg.filters), start=1):
        x = _conv_bn(x, width, f"block{b}_a", cfg.activation, pool=True)
        x = _conv_bn(x, width, f"block{b}_b", cfg.activation, pool=False)
    return keras.Model(inputs, classifier_head(x, spec, pool="max", scale=LOGIT_SCALE), name="fastnet")
