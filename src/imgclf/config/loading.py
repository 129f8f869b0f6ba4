"""Reading a config: defaults, then YAML file(s), then --set overrides, validated once; a
copy with tuned values set; the resolved copy written back as YAML."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from imgclf.config.messages import describe, first_error
from imgclf.config.schema import Config
from imgclf.config.space import SpaceSpec
from imgclf.config.types import section_of
from imgclf.errors import ConfigError


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _as_dict(mapping: Mapping) -> dict:
    return {k: _as_dict(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}


def _name(item) -> str:
    return "config" if isinstance(item, Mapping) else str(item)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _is_text_key(parts: list[str]) -> bool:
    """True when the key at ``parts`` holds a string (``data.path``, ``output.name``)."""
    model: type[BaseModel] | None = Config
    for part in parts[:-1]:
        field = model.model_fields.get(part) if model else None
        model = section_of(field.annotation) if field else None
    field = model.model_fields.get(parts[-1]) if model else None
    return field is not None and field.annotation in (str, str | None)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.epochs=5`` -> (["train", "epochs"], 5). Values are parsed as YAML, never eval'd;
    a string-typed key takes the text as it is (``output.name=run #2``, ``2024-06-01``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    if _is_text_key(parts):
        text = text.strip()
        return parts, None if text in ("", "null", "~") else text
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # not YAML: let validation say what the key expects
    return parts, value


def override_items(overrides: Mapping | list | tuple | None) -> list[str]:
    """``{"train.epochs": 3}`` as ``["train.epochs=3"]`` (the Python API's overrides), each
    value written as YAML, a string as it is (as after ``--set key=``); a list of
    ``key=value`` strings stays as it is."""
    if overrides is None:
        return []
    if not isinstance(overrides, Mapping):
        return [str(item) for item in overrides]
    items = []
    for key, value in overrides.items():
        if not isinstance(value, str):
            try:
                value = yaml.safe_dump(_plain(value), default_flow_style=True, width=2**31,
                                       sort_keys=False)
            except yaml.YAMLError:
                raise ConfigError(f"overrides: {key}: {type(value).__name__} is not a config value") from None
            value = value.removesuffix("...\n").strip()  # a scalar ends its document with "..."
        items.append(f"{key}={value}")
    return items


def _plain(value):
    """Tuples as lists and NumPy scalars as Python's, which YAML writes."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    out = dict(raw)
    for item in overrides:
        parts, value = parse_override(item)
        if parts[:2] == ["tune", "space"] and len(parts) > 2:
            parts = [*parts[:2], ".".join(parts[2:])]  # a space key is a dotted config key
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return out


def _validate(raw: dict, origin: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {first_error(exc)}") from None


def load_config(path: str | Path | Mapping | list | tuple | None = None,
                overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s) in order (differences only; a later file wins), then
    --set overrides, validated once. A mapping stands for a file's contents (the Python API)."""
    paths = [] if path is None else [path] if isinstance(path, str | Path | Mapping) else list(path)
    raw: dict = {}
    origin = "config"
    for item in paths:
        part = _as_dict(item) if isinstance(item, Mapping) else _read_yaml(Path(item))
        _validate(part, _name(item))  # each file alone first, so an error names its file
        raw = _deep_merge(raw, part)
        origin = " + ".join(_name(p) for p in paths)
    if overrides:
        _validate(raw, origin)
        raw = apply_overrides(_deep_merge({}, raw), overrides)
        origin = "--set"
    cfg = _validate(raw, origin)
    cfg.tune.space = typed_space(cfg, origin)
    return cfg


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted ``key: value`` pairs set (tuned values), validated whole."""
    raw = to_dict(cfg)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{', '.join(f'{k}={v!r}' for k, v in values.items())}: {describe(err)}") from None


def get_key(cfg: Config, key: str) -> Any:
    """The value of a dotted key (``train.optimizer.lr``)."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def typed_space(cfg: Config, origin: str = "config") -> dict[str, SpaceSpec]:
    """``cfg.tune.space`` with each choice in its key's own type (``1.0e6``, a string to YAML,
    becomes the float the key holds); ``cfg`` is left as it is. Every value an entry can give
    (each choice, both ends of a range) must make a valid config on its own, so a typo in a
    choice fails now, not in trial 7: a ConfigError says which."""
    space = dict(cfg.tune.space)
    for key, spec in space.items():
        typed = []
        for value in spec.candidates():
            try:
                typed.append(get_key(with_values(cfg, {key: value}), key))
            except ConfigError as exc:
                reason = str(exc).split(": ", 1)[1]
                if reason.startswith(f"{key}: "):
                    reason = reason[len(key) + 2:]
                raise ConfigError(f"{origin}: tune.space.{key}: {spec.kind} value {value!r} does not fit: "
                                  f"{reason}") from None
        if spec.kind == "choice":
            typed = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in typed]
            try:
                space[key] = SpaceSpec.model_validate({"choice": typed})
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ConfigError(f"{origin}: tune.space.{key}: {reason}") from None
        elif spec.kind == "float" and all(isinstance(v, int) and not isinstance(v, bool) for v in typed):
            whole = [int(x) if float(x).is_integer() else x for x in spec.float_]
            raise ConfigError(f"{origin}: tune.space.{key}: {key} takes whole numbers; use {{int: {whole}}}")
    return space


def to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
