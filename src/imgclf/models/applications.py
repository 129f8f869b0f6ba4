"""The keras.applications backbones behind vgg.py, resnet.py, efficientnet.py, mobilenet.py.

Each is built without its ImageNet top (``include_top=False``) and renamed ``backbone``;
the shared head goes on top. ``weights: imagenet`` lets keras.applications load its own
cached download (models/weights.py has fetched or refused it before the build); any other
starting weights are loaded into the finished model afterwards.
"""

from __future__ import annotations

import keras

from imgclf.models.backbone import assemble, renamed
from imgclf.models.registry import ModelSpec

KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def application(spec: ModelSpec, constructor: str, preprocess: list | None = None, **kwargs) -> keras.Model:
    """``keras.applications.<constructor>`` as the backbone of a model for ``spec``."""
    build = getattr(keras.applications, constructor)
    base = build(
        include_top=False,
        weights="imagenet" if spec.cfg.weights == "imagenet" else None,
        input_shape=spec.input_shape,
        **kwargs,
    )
    return assemble(spec, renamed(base), preprocess or [], name=constructor.lower())
