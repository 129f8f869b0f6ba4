"""Pydantic's validation errors as our one-line messages: the dotted key, what is wrong with
it, and for a mistyped key or step name the one it may have meant."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from imgclf.config.augment import AUGMENT_STEPS
from imgclf.config.schema import Config, valid_keys
from imgclf.config.types import section_of
from imgclf.errors import did_you_mean


def siblings(loc: tuple) -> list[str]:
    """The valid keys beside the offending one at error location ``loc``."""
    parent = list(loc[:-1])
    model: type[BaseModel] | None = Config
    path: list[str] = []
    while parent:
        part = parent.pop(0)
        if model is Config and part == "augment":
            # pydantic reports augment.<index>.<step name>.<key>
            if len(parent) < 2:
                return []
            index, tag = parent.pop(0), parent.pop(0)
            model = AUGMENT_STEPS.get(tag)
            path += ["augment", str(index)]
        else:
            field = model.model_fields.get(str(part))
            model = section_of(field.annotation) if field else None
            path.append(str(part))
        if model is None:
            return []
    prefix = ".".join(path)
    return [f"{prefix}.{k}" if prefix else k for k in model.model_fields]


def loc_str(loc: tuple) -> str:
    """``("augment", 0, "rotation", "factor")`` -> ``augment.0.factor``."""
    out = []
    for part in loc:
        if isinstance(part, int):
            out.append(str(part))
        elif part in AUGMENT_STEPS and out and out[-1].isdigit():
            continue  # the discriminator tag pydantic adds inside augment steps
        else:
            out.append(str(part))
    return ".".join(out)


def describe(err: dict) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as ``key: what is wrong``."""
    loc = tuple(err["loc"])
    key = loc_str(loc)
    if err["type"] == "extra_forbidden":
        return f"unknown key {key}{did_you_mean(key, siblings(loc) or valid_keys())}"
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        names = sorted(AUGMENT_STEPS)
        more = did_you_mean(str(tag), names) or f" (known: {', '.join(names)})"
        return f"{key}.name: unknown augmentation step {tag!r}{more}"
    if err["type"] == "union_tag_not_found":
        return f"{key}: each augmentation step needs a name (known: {', '.join(sorted(AUGMENT_STEPS))})"
    msg = err["msg"]
    if msg.startswith("Value error, "):  # our own validators already echo the value
        return f"{key}: {msg[len('Value error, '):]}"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{key}: {msg} (got {got})"


def first_error(exc: ValidationError) -> str:
    """The first of ``exc``'s errors, described, and how many more there are."""
    errs = exc.errors()
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{describe(errs[0])}{more}"
