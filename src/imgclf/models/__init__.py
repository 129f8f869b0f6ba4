"""Models: a registry of builder functions, one file per family, one shared head."""

# importing a family module runs its @register_model decorators, so the registry is full once
# this package is imported, whichever of its modules was asked for (registry.py itself imports
# no family: no circle); imgclf.layers registers the Keras layers saved models need
import imgclf.layers  # noqa: F401
from imgclf.models import cnn, efficientnet, fastnet, inception, mlp, mobilenet, resnet, vgg  # noqa: F401
from imgclf.models.registry import ModelSpec, create_model, get_entry, list_models

__all__ = ["ModelSpec", "create_model", "get_entry", "list_models"]
