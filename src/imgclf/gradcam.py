"""Grad-CAM (Selvaraju et al., 2017): where in an image a model found its evidence for a class.

The gradient of the class's logit with respect to the last convolutional feature map, averaged
over the map into one weight per channel; the weighted sum of the channels, through a ReLU, is
the heat map, at the feature map's resolution, then resized to the image. The feature map is
the tensor the classifier head pools (models/heads.py names its first layer ``head_pool``, or
``head_flatten``): for keras.applications models the nested backbone's output, for ours the
last conv stage's, taken before any trailing pooling or dropout so the map keeps its size.

Maps are computed on the float32 inference model (no augmentation layers, mixed precision cast
to float32), on the plain image: a run trained with ``train.tta`` is explained without the flip.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf.data.decode import decode_image
from imgclf.data.pipeline import model_input
from imgclf.errors import DataError, ModelError, first_line
from imgclf.inference import inference_model
from imgclf.reports.cams import enlarged
from imgclf.reports.images import image_paths, load_images

HEAD_INPUTS = ("head_pool", "head_flatten")  # the head's first layer (models/heads.py)
OUTPUT_LAYER = "predictions"
# layers between the last conv stage and the head that only shrink or mask the map
PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Dropout,
                keras.layers.SpatialDropout2D)
CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
PREPROCESS = "preprocess"  # CaffePreprocess as a fixed 1x1 Conv2D is not a feature extractor


def _has_convolution(layer) -> bool:
    if isinstance(layer, keras.Model):
        return any(_has_convolution(inner) for inner in layer.layers)
    return isinstance(layer, CONVOLUTIONS) and layer.name != PREPROCESS


def feature_map(model: keras.Model):
    """The symbolic tensor Grad-CAM differentiates against (see the module's note)."""
    head = next((la for la in model.layers if la.name in HEAD_INPUTS), None)
    if head is None:
        raise ModelError(f"Grad-CAM needs imgclf's classifier head (a layer named "
                         f"{' or '.join(HEAD_INPUTS)}); model {model.name} has none")
    if not any(_has_convolution(la) for la in model.layers):
        raise ModelError(f"Grad-CAM needs a convolutional layer; model {model.name} has none "
                         "(an MLP sees no image regions)")
    tensor = head.input
    while isinstance(tensor._keras_history.operation, PASS_THROUGH):
        tensor = tensor._keras_history.operation.input
    if len(tensor.shape) != 4:
        raise ModelError(f"Grad-CAM needs a spatial feature map before the head; {model.name} gives "
                         f"{tuple(tensor.shape)}")
    return tensor


class GradCam:
    """Heat maps of a Keras model: ``maps(images, classes)``."""

    def __init__(self, model: keras.Model):
        served = inference_model(model, float32=True)
        fmap = feature_map(served)
        self.input_shape = tuple(served.input_shape[1:])
        out = next((la for la in served.layers if la.name == OUTPUT_LAYER), None)
        if out is not None and getattr(out, "activation", None) is keras.activations.softmax:
            # the softmax saturates on confident images: differentiate the logit instead
            self._kernel, self._bias = (tf.constant(w, tf.float32) for w in out.get_weights())
            self._net = keras.Model(served.inputs, [fmap, out.input])
        else:
            self._kernel = self._bias = None
            self._net = keras.Model(served.inputs, [fmap, served.output])

    def maps(self, images, classes=None) -> tuple[np.ndarray, np.ndarray]:
        """(heat maps N x h x w in 0..1, each scaled by its own maximum; class probabilities
        N x K) of a batch of model inputs, for ``classes`` (one per image; None: the predicted
        class of each)."""
        images = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            fmap, pre = self._net(images, training=False)
            if self._kernel is not None:
                scores = tf.matmul(pre, self._kernel) + self._bias
                probs = tf.nn.softmax(scores)
            else:
                scores = probs = pre
            picked = tf.argmax(probs, axis=1, output_type=tf.int32) if classes is None else \
                tf.constant(np.asarray(classes, np.int32).reshape(-1))
            score = tf.gather(scores, picked, axis=1, batch_dims=1)
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
        top = cam.reshape(len(cam), -1).max(axis=1)
        cam = cam / np.where(top > 0, top, 1.0)[:, None, None]
        return cam.astype(np.float32), probs.numpy().astype(np.float64)


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One heat map (h x w) at ``size`` (height, width), bilinear, kept in 0..1."""
    out = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0].numpy()
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class CaseMaps:
    """The report's explainer (reports/build.py calls it): for rows of a run's predictions.csv
    (``ids`` under ``id_column`` in ``split``), each image as shown (uint8) and its heat map for
    ``classes`` at that size. The images load as the run's pipeline feeds them (``cfg``'s size
    and channels; files found under ``root`` or the config's data folder)."""

    def __init__(self, model: keras.Model, cfg, root: str | Path | None = None, per_class: int = 3):
        self.model, self.cfg, self.root, self.per_class = model, cfg, root, per_class
        self._cam = None

    def __call__(self, split: str, id_column: str, ids: list, classes: list[int], shown: int):
        if self._cam is None:
            self._cam = GradCam(self.model)
        d = self.cfg.data
        size, channels = tuple(d.image_size), d.channels
        shown_images = load_images(self.cfg, split, id_column, ids, self.root, size=shown)
        if id_column == "file":
            inputs = model_input(tf.stack([_decoded(p, size) for p in image_paths(self.cfg, ids, self.root)]),
                                 size, 3, channels)
        else:  # array items: what is shown is the item itself, as the pipeline resizes it
            raw = np.stack(shown_images)
            inputs = model_input(raw, size, raw.shape[-1], channels)
            shown_images = [enlarged(img, shown) for img in shown_images]
        cams, _ = self._cam.maps(inputs, classes)
        return [(img, resize_map(cam, img.shape[:2])) for img, cam in zip(shown_images, cams)]


def case_maps(model: keras.Model, cfg, root: str | Path | None = None) -> CaseMaps | None:
    """The explainer of a report on ``cfg``'s data, or None where output.gradcam is 0 or the
    model has no convolution to explain (an MLP's report has no such section)."""
    if not cfg.output.gradcam or not any(_has_convolution(la) for la in model.layers):
        return None
    return CaseMaps(model, cfg, root, cfg.output.gradcam)


def _decoded(path: Path, size: tuple[int, int]) -> tf.Tensor:
    try:
        return decode_image(str(path), size)
    except tf.errors.OpError as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from None

