"""Models: a registry of builder functions, one file per family, one shared head."""

import imgclf.layers  # noqa: F401  (registers the layers saved models need)
from imgclf.models.registry import ModelSpec, create_model, get_entry, list_models

__all__ = ["ModelSpec", "create_model", "get_entry", "list_models"]
