"""A small Inception network for 28-64 px images, after the CIFAR-10 "Inception (small)" of
Zhang et al. (2017), at half width: modules that concatenate a 1x1 and a 3x3 branch, and
downsampling modules that concatenate a strided 3x3 conv with max pooling."""

from __future__ import annotations

import keras
from keras import layers

from imgclf.models.backbone import assemble
from imgclf.models.heads import BN_MOMENTUM
from imgclf.models.registry import ModelSpec, register_model

# (1x1 filters, 3x3 filters) of each module per stage, then the downsampling conv's filters
_STAGES = (
    ([(16, 16), (16, 24)], 40),
    ([(56, 24), (48, 32), (40, 40), (24, 48)], 48),
    ([(88, 80), (88, 80)], None),
)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _module(x, ch1: int, ch3: int, name: str):
    a = _conv_bn(x, ch1, 1, 1, f"{name}_1x1")
    b = _conv_bn(x, ch3, 3, 1, f"{name}_3x3")
    return layers.Concatenate(name=f"{name}_concat")([a, b])


def _downsample(x, filters: int, name: str):
    a = _conv_bn(x, filters, 3, 2, f"{name}_3x3")
    b = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([a, b])


def inception_backbone(input_shape) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, 48, 3, 1, "stem")
    for s, (modules, down) in enumerate(_STAGES, start=1):
        for m, (ch1, ch3) in enumerate(modules):
            x = _module(x, ch1, ch3, f"stage{s}_mod{m}")
        if down:
            x = _downsample(x, down, f"stage{s}_down")
    return keras.Model(inputs, x, name="backbone")


@register_model(family="inception", default_size=(32, 32), params=415_152, block_pattern=r"^(stage\d+)_")
def inception_small(spec: ModelSpec):
    """Small Inception for 28-64 px: 8 modules of 1x1 and 3x3 branches in 3 stages."""
    backbone = inception_backbone(spec.input_shape)
    return assemble(spec, backbone, [layers.Rescaling(1.0 / 255.0, name="rescale")], name="inception_small")
