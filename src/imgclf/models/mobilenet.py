"""MobileNetV3 Small and Large (Howard et al., 2019), from keras.applications; their
rescaling to [-1, 1] is part of the keras model: raw 0..255 in."""

from __future__ import annotations

from imgclf.models.applications import KERAS_WEIGHTS, application
from imgclf.models.registry import ModelSpec, register_model

# blocks are expanded_conv, expanded_conv_1, ...; the final 1x1 conv joins the last one
_V3 = dict(default_size=(224, 224), channels=3, pretrained=True, block_pattern=r"^(expanded_conv(?:_\d+)?)_")


def _url(kind: str) -> str:
    return f"{KERAS_WEIGHTS}mobilenet_v3/weights_mobilenet_v3_{kind}_224_1.0_float_no_top_v2.h5"


@register_model(family="mobilenetv3", params=939_120, weights_url=_url("small"), **_V3)
def mobilenet_v3_small(spec: ModelSpec):
    """MobileNetV3-Small: 11 inverted-residual blocks."""
    return application(spec, "MobileNetV3Small")


@register_model(family="mobilenetv3", params=2_996_352, weights_url=_url("large"), **_V3)
def mobilenet_v3_large(spec: ModelSpec):
    """MobileNetV3-Large: 15 inverted-residual blocks."""
    return application(spec, "MobileNetV3Large")
