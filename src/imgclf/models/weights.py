"""Starting weights (`model.weights`): imagenet, a weights file, a run directory, or none.

- ``imagenet``: keras.applications' own download into its cache (``~/.keras/models``, or
  ``$KERAS_HOME/models``). :func:`check_weights` fetches the file before any data is loaded,
  so without network a run fails at once with one line naming the file and where to put it.
- a run directory or a ``.keras`` file: the backbone of that model, layer by layer name,
  whatever its number of classes; the new head starts fresh.
- a ``.weights.h5`` / ``.h5`` file: the backbone's weights (e.g. a keras.applications
  ``*_notop.h5`` placed by hand), or, failing that, the whole model's.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras

from imgclf.errors import ConfigError, ModelError, first_line
from imgclf.inference import load_model
from imgclf.models.backbone import is_head, nested_backbone
from imgclf.models.registry import ModelEntry


def keras_cache_dir() -> Path:
    """Where keras.utils.get_file (and so keras.applications) caches its downloads."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    if not os.access(home, os.W_OK) and os.path.isdir(home):
        home = os.path.join("/tmp", ".keras")  # keras' own fallback for a read-only cache
    return Path(home) / "models"


def _download(fname: str, url: str, cache_dir: Path) -> None:
    keras.utils.get_file(fname, url, cache_dir=str(cache_dir.parent), cache_subdir=cache_dir.name)


def check_weights(weights: str | None, entry: ModelEntry) -> None:
    """Refuse a `model.weights` that cannot work, before any data is loaded or run made;
    for ``imagenet``, make sure the file is in keras' cache (downloading it if need be)."""
    if weights is None:
        return
    if weights == "imagenet":
        if not entry.pretrained:
            raise ConfigError(
                f"model.weights=imagenet: {entry.name} has no pretrained weights "
                "(`imgclf models` lists those that do); use null, a weights file or a run directory"
            )
        ensure_imagenet(entry)
        return
    path = Path(weights).expanduser()
    if not path.exists():
        raise ConfigError(f"model.weights: no such file or run directory. Received: model.weights={weights}")
    if path.is_dir() and not (path / "model.keras").is_file():
        raise ConfigError(f"model.weights: {weights} is a directory without model.keras (not a finished run)")
    if path.is_file() and not path.name.endswith((".keras", ".h5")):
        raise ConfigError(
            f"model.weights: expected imagenet, a run directory, a .keras or a .weights.h5 file. "
            f"Received: model.weights={weights}"
        )


def ensure_imagenet(entry: ModelEntry) -> Path:
    """The cached ImageNet weights file of ``entry``, downloaded by keras if it is missing."""
    cache = keras_cache_dir()
    target = cache / entry.weights_file
    if target.is_file():
        return target
    try:
        _download(entry.weights_file, entry.weights_url, cache)
    except Exception as exc:  # keras wraps URLError/HTTPError in a plain Exception
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(
            f"model.weights=imagenet: cannot download {entry.weights_file} for {entry.name} ({reason}); "
            f"without network, fetch {entry.weights_url} elsewhere and place it at {target}"
        ) from None
    return target


def load_weights(model, weights: str) -> None:
    """Load a local `model.weights` (anything but imagenet) into a freshly built model."""
    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / "model.keras"
    if path.name.endswith(".keras"):
        try:
            source = load_model(path)
        except ModelError as exc:
            raise ModelError(f"model.weights={weights}: {exc}") from None
        copied = transfer_backbone(source, model, weights)
        if not copied:
            raise ModelError(f"model.weights={weights}: no backbone layer of {path} matches this model")
        return
    _load_weights_file(model, path, weights)


def _load_weights_file(model, path: Path, weights: str) -> None:
    errors = []
    nested = nested_backbone(model)
    targets = ([nested] if nested is not None else []) + [model]
    for target in targets:  # the backbone alone first: that is what a *_notop.h5 holds
        try:
            with warnings.catch_warnings():  # keras warns per layer before it raises on a misfit
                warnings.simplefilter("ignore")
                target.load_weights(path)
            return
        except Exception as exc:
            errors.append(first_line(exc))
    raise ModelError(f"model.weights={weights}: does not fit this model: {errors[-1]}")


def transfer_backbone(source, target, weights: str = "") -> int:
    """Copy every backbone layer's weights from ``source`` into the same-named layer of
    ``target``; the head (``head_*``, ``predictions``) is left as built. Returns the number
    of layers copied; a same-named layer whose shapes differ is an error."""
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in target.layers:
        if is_head(layer) or not layer.weights or layer.name not in by_name:
            continue
        values = by_name[layer.name].get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != shapes:
            raise ModelError(
                f"model.weights={weights}: does not fit this model: layer {layer.name!r} has shapes "
                f"{[v.shape for v in values]} there but {shapes} here (another model or input size?)"
            )
        layer.set_weights(values)
        copied += 1
    return copied
