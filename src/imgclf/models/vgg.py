"""VGG16 and VGG19 (Simonyan and Zisserman, 2014), from keras.applications: five blocks of
3x3 convolutions, no batch norm. Caffe-style preprocessing inside the model."""

from __future__ import annotations

from imgclf.layers import CaffePreprocess
from imgclf.models.applications import KERAS_WEIGHTS, application
from imgclf.models.registry import ModelSpec, register_model

_VGG = dict(default_size=(224, 224), channels=3, pretrained=True, block_pattern=r"^(block\d+)_")


@register_model(family="vgg", params=14_714_688, **_VGG,
                weights_url=KERAS_WEIGHTS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
def vgg16(spec: ModelSpec):
    """VGG16: 13 conv layers in 5 blocks."""
    return application(spec, "VGG16", [CaffePreprocess(name="preprocess")])


@register_model(family="vgg", params=20_024_384, **_VGG,
                weights_url=KERAS_WEIGHTS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
def vgg19(spec: ModelSpec):
    """VGG19: 16 conv layers in 5 blocks."""
    return application(spec, "VGG19", [CaffePreprocess(name="preprocess")])
