"""One entry of the tune space: a key's choices or its int or float range."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_serializer, model_validator

from imgclf.config.types import Float, Int, Section
from imgclf.errors import did_you_mean

SPACE_KINDS = ("choice", "int", "float")
_SPEC_KEYS = (*SPACE_KINDS, "step", "log")


class SpaceSpec(Section):
    """One tuned key: ``{choice: [..]}``, ``{int: [lo, hi], step: k, log: bool}`` or
    ``{float: [lo, hi], step: x, log: bool}`` (the bounds are both included)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, serialize_by_alias=True)

    choice: list[Any] | None = None
    int_: list[Int] | None = Field(None, alias="int")
    float_: list[Float] | None = Field(None, alias="float")
    step: Annotated[Int | Float, Field(gt=0)] | None = None
    log: bool = False

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw):
        if not isinstance(raw, dict):
            raise ValueError(f"expected {{choice: [..]}}, {{int: [lo, hi]}} or {{float: [lo, hi]}}, "
                             f"got {raw!r}")
        for key in raw:
            if key not in _SPEC_KEYS:
                raise ValueError(f"unknown key {key!r}{did_you_mean(str(key), _SPEC_KEYS)} "
                                 f"(known: choice, int, float, step, log)")
        kinds = [k for k in SPACE_KINDS if raw.get(k) is not None]
        if len(kinds) != 1:
            given = f" (got {' and '.join(kinds)})" if kinds else ""
            raise ValueError(f"give exactly one of choice, int, float{given}")
        return raw

    @model_validator(mode="after")
    def _ranges(self):
        if self.choice is not None:
            if not self.choice:
                raise ValueError("choice needs at least one value, got []")
            if self.step is not None or self.log:
                raise ValueError("step and log apply to int and float ranges, not to choice")
            texts = [repr(v) for v in self.choice]
            if len(set(texts)) != len(texts):
                raise ValueError(f"choice lists a value twice: {self.choice}")
            return self
        kind, bounds = ("int", self.int_) if self.int_ is not None else ("float", self.float_)
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ValueError(f"{kind} must be [low, high] with low < high, got {bounds}")
        if self.log and bounds[0] <= 0:
            raise ValueError(f"log sampling needs low > 0, got {kind}: {bounds}")
        if self.log and self.step is not None and self.step <= 1:
            raise ValueError(f"with log: true, step is the factor between values and must be > 1, "
                             f"got step: {self.step}")
        if kind == "int" and self.step is not None and self.step != int(self.step):
            raise ValueError(f"an int range takes a whole step, got step: {self.step}")
        return self

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler):
        # {float: [lo, hi], log: true}, as written: not every key with its null
        return {k: v for k, v in handler(self).items() if v is not None and not (k == "log" and not v)}

    @property
    def kind(self) -> str:
        return "choice" if self.choice is not None else "int" if self.int_ is not None else "float"

    def candidates(self) -> list:
        """The values a config must accept: every choice, or both ends of a range."""
        if self.choice is not None:
            return list(self.choice)
        lo, hi = self.int_ if self.int_ is not None else self.float_
        return [lo, hi]
