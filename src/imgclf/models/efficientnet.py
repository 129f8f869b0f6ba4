"""EfficientNet B0-B4 (Tan and Le, 2019) and EfficientNetV2-S (2021), from keras.applications.
Their rescaling and ImageNet normalization are part of the keras model: raw 0..255 in."""

from __future__ import annotations

from imgclf.models.applications import KERAS_WEIGHTS, application
from imgclf.models.registry import ModelSpec, register_model

_V1_WEIGHTS = "https://storage.googleapis.com/keras-applications/"
# stages are block1..block7 (V2-S: block1..block6); top_conv joins the last stage
_BLOCKS = r"^(block\d+)[a-z]_"


def _b(size: int, params: int, tag: str) -> dict:
    return dict(default_size=(size, size), channels=3, pretrained=True, params=params,
                block_pattern=_BLOCKS, weights_url=f"{_V1_WEIGHTS}efficientnet{tag}_notop.h5")


@register_model(family="efficientnet", **_b(224, 4_049_571, "b0"))
def efficientnet_b0(spec: ModelSpec):
    """EfficientNet-B0 at 224 px."""
    return application(spec, "EfficientNetB0")


@register_model(family="efficientnet", **_b(240, 6_575_239, "b1"))
def efficientnet_b1(spec: ModelSpec):
    """EfficientNet-B1 at 240 px."""
    return application(spec, "EfficientNetB1")


@register_model(family="efficientnet", **_b(260, 7_768_569, "b2"))
def efficientnet_b2(spec: ModelSpec):
    """EfficientNet-B2 at 260 px."""
    return application(spec, "EfficientNetB2")


@register_model(family="efficientnet", **_b(300, 10_783_535, "b3"))
def efficientnet_b3(spec: ModelSpec):
    """EfficientNet-B3 at 300 px."""
    return application(spec, "EfficientNetB3")


@register_model(family="efficientnet", **_b(380, 17_673_823, "b4"))
def efficientnet_b4(spec: ModelSpec):
    """EfficientNet-B4 at 380 px."""
    return application(spec, "EfficientNetB4")


@register_model(family="efficientnet", default_size=(384, 384), channels=3, pretrained=True,
                params=20_331_360, block_pattern=_BLOCKS,
                weights_url=KERAS_WEIGHTS + "efficientnet_v2/efficientnetv2-s_notop.h5")
def efficientnetv2_s(spec: ModelSpec):
    """EfficientNetV2-S at 384 px."""
    return application(spec, "EfficientNetV2S")
