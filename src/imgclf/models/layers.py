"""Layers of our own that a saved model.keras needs: registered so loading finds them."""

from __future__ import annotations

import keras
from keras import ops

# the ImageNet channel means (RGB) the Caffe-trained VGG and ResNet weights subtract
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


@keras.saving.register_keras_serializable(package="imgclf")
class CaffePreprocess(keras.layers.Layer):
    """Raw 0..255 RGB pixels to what the Caffe-style ImageNet weights (VGG, ResNet50) expect:
    channels in BGR order, minus the ImageNet mean of each channel, no scaling."""

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        mean = ops.convert_to_tensor(_CAFFE_MEAN_RGB, dtype=self.compute_dtype)
        return ops.flip(x - mean, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape
