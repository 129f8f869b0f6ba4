"""The scalar types every section uses, and the base of every section model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def not_bool(value):
    # Python counts True as 1: without this, `epochs: yes` would train for one epoch
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _auto_or_bool(value):
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"expected auto, true or false, got {value!r}")


Int = Annotated[int, BeforeValidator(not_bool)]
AutoBool = Annotated[Literal["auto"] | bool, BeforeValidator(_auto_or_bool)]
Float = Annotated[float, BeforeValidator(not_bool)]
PositiveInt = Annotated[Int, Field(gt=0)]
Activation = Literal["relu", "leaky_relu", "mish", "gelu", "swish", "elu", "tanh"]


class Section(BaseModel):
    """A config section: unknown keys are refused, and so is a bad value set later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds, or None for a value (a list of steps is a value)."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
