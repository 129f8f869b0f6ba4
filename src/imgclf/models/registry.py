"""The model registry: a decorator on a plain builder function, looked up by name.

    @register_model(family="cnn")
    def simple_cnn(spec: ModelSpec) -> keras.Model: ...

`create_model` raises ModelError("Unknown model ...") with the nearest names, and
`list_models("res*")` filters with shell-style wildcards; tests parametrize over it.
`catalog_rows()` is what `imgclf models` shows of it, kept in imgclf/catalog.json (read without
Keras); `write_catalog()` rewrites that file, and tests/test_models.py checks it is current.
This module holds the registry alone; models/__init__.py imports the family modules, whose
decorators fill it, so every import of imgclf.models (or of a module in it) sees them all.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from imgclf import catalog
from imgclf.config import AugmentStep, ModelConfig
from imgclf.errors import ModelError, did_you_mean


@dataclass(frozen=True)
class ModelSpec:
    """What a builder gets: the input shape, the class count, and the model section."""

    input_shape: tuple[int, int, int]
    num_classes: int
    cfg: ModelConfig
    augment: tuple[AugmentStep, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and what `imgclf models` shows about it."""

    name: str
    family: str
    builder: Callable
    description: str
    default_size: tuple[int, int] | None = None  # None: any size
    channels: int | None = None  # None: any channel count
    pretrained: bool = False  # ImageNet weights exist (keras.applications)
    params: int | None = None  # backbone parameters (the head excluded); None: set by the config
    # a regular expression whose first group names the block a backbone layer belongs to
    # (layers that do not match stay in the block before them); phase 2 unfreezes the last N
    block_pattern: str = r"^(block\d+)_"
    weights_url: str | None = None  # where keras.applications downloads the ImageNet weights

    @property
    def weights_file(self) -> str | None:
        """The file name keras.applications caches the ImageNet weights under."""
        return self.weights_url.rsplit("/", 1)[-1] if self.weights_url else None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(family: str, **fields):
    """Register ``fn`` under its own name; ``fields`` are the other ModelEntry fields."""

    def wrap(fn: Callable) -> Callable:
        # the docstring's first paragraph, whole: `imgclf models` wraps it, never cuts it
        paragraph = (fn.__doc__ or "").strip().split("\n\n")[0]
        _REGISTRY[fn.__name__] = ModelEntry(
            name=fn.__name__, family=family, builder=fn, description=" ".join(paragraph.split()), **fields
        )
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ModelError(
            f"Unknown model {name!r}{did_you_mean(name, _REGISTRY)}; `imgclf models` lists them. "
            f"Received: model.name={name}"
        )
    return _REGISTRY[name]


def create_model(name: str, spec: ModelSpec):
    entry = get_entry(name)
    try:
        return entry.builder(spec)
    except ValueError as exc:  # Keras' own shape errors, e.g. too many poolings
        raise ModelError(f"cannot build {name} for input {spec.input_shape}: {exc}") from None


def catalog_rows() -> list[dict]:
    """Every entry as `imgclf models` shows it (imgclf.catalog), without its builder."""
    return [
        {"name": e.name, "family": e.family, "input": list(e.default_size) if e.default_size else None,
         "params": e.params, "imagenet": e.pretrained, "description": e.description}
        for e in (_REGISTRY[n] for n in list_models())
    ]


def write_catalog() -> None:
    """Rewrite imgclf/catalog.json from the registry (after a model is added or changed)."""
    catalog.write(catalog_rows())
