"""ResNets (He et al., 2015): ResNet50 from keras.applications; ResNet-20, the paper's small
network for 32x32 images; and ResNet-9, the fast-training net, for CPU-sized experiments on
28-64 px inputs."""

from __future__ import annotations

import keras
from keras import layers

from imgclf.errors import ModelError
from imgclf.layers import CaffePreprocess
from imgclf.models.applications import KERAS_WEIGHTS, application
from imgclf.models.backbone import assemble
from imgclf.models.heads import BN_MOMENTUM, classifier_head, stem
from imgclf.models.registry import ModelSpec, register_model


@register_model(family="resnet", default_size=(224, 224), channels=3, pretrained=True,
                params=23_587_712, block_pattern=r"^(conv\d+)_",
                weights_url=KERAS_WEIGHTS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
def resnet50(spec: ModelSpec):
    """ResNet50: bottleneck stages conv2..conv5."""
    return application(spec, "ResNet50", [CaffePreprocess(name="preprocess")])


def _conv_bn(x, filters: int, stride: int, name: str, relu: bool = True, kernel: int = 3):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:  # projection where the shape changes
        shortcut = _conv_bn(x, filters, stride, f"{name}_proj", relu=False, kernel=1)
    y = _conv_bn(x, filters, stride, f"{name}_1")
    y = _conv_bn(y, filters, 1, f"{name}_2", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet20_backbone(input_shape) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, 16, 1, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(3):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage}_block{block}")
    return keras.Model(inputs, x, name="backbone")


@register_model(family="resnet", default_size=(32, 32), params=273_392, block_pattern=r"^(stage\d+)_")
def resnet20(spec: ModelSpec):
    """ResNet-20 for 28-64 px: 3 stages of 3 basic blocks (16, 32, 64 filters)."""
    backbone = resnet20_backbone(spec.input_shape)
    return assemble(spec, backbone, [layers.Rescaling(1.0 / 255.0, name="rescale")], name="resnet20")


def resnet9_widths(filters: list[int]) -> list[int]:
    """The four widths (prep, stage 1, 2, 3) from model.filters: a shorter list goes on by
    doubling its last width, so the default [32, 64] gives [32, 64, 128, 256]."""
    if len(filters) > 4:
        raise ModelError(f"resnet9 takes at most 4 widths in model.filters (prep, stage1..3). "
                         f"Received: model.filters={list(filters)}")
    widths = list(filters)
    while len(widths) < 4:
        widths.append(widths[-1] * 2)
    return widths


@register_model(family="resnet", block_pattern=r"^(prep|stage\d+)_")
def resnet9(spec: ModelSpec):
    """ResNet-9 (the fast-training residual net of the DAWNBench CIFAR-10 entries), for 28-64 px:
    a prep conv, then three stages that each halve the resolution, two with a residual pair;
    global max pooling. model.filters gives the widths; [16, 32, 64, 128] is the CPU-sized one."""
    w = resnet9_widths(spec.cfg.filters)
    inputs, x = stem(spec)
    x = _conv_bn(x, w[0], 1, "prep")
    for stage, (filters, residual) in enumerate(zip(w[1:], (True, False, True)), start=1):
        x = _conv_bn(x, filters, 1, f"stage{stage}")
        if min(x.shape[1], x.shape[2]) >= 2:  # small inputs (8x8) still work
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        if residual:
            y = _conv_bn(x, filters, 1, f"stage{stage}_res1")
            y = _conv_bn(y, filters, 1, f"stage{stage}_res2")
            x = layers.Add(name=f"stage{stage}_add")([x, y])
    return keras.Model(inputs, classifier_head(x, spec, pool="max"), name="resnet9")
