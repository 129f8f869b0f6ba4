"""The search space <-> KerasTuner hyperparameters: one hyperparameter per tuned config key,
named by the key, and a trial's hyperparameter values back as config ``key: value``."""

from __future__ import annotations

import json
from decimal import Decimal

from imgclf.config import TuneConfig

HYPERBAND_EPOCHS = "tuner/epochs"


def _choice_values(values: list) -> tuple[list, bool]:
    """KerasTuner's Choice takes values of one scalar type; lists, nulls and mixed types
    (``model.filters: {choice: [[16], [16, 32]]}``) travel as JSON text. Returns the values
    and whether they are encoded."""
    if all(isinstance(v, bool) for v in values) or all(isinstance(v, str) for v in values):
        return list(values), False
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        whole = all(isinstance(v, int) for v in values)
        return (list(values) if whole else [float(v) for v in values]), False
    return [json.dumps(v) for v in values], True


def declare(hp, space: dict) -> None:
    """One KerasTuner hyperparameter per tuned key, named by the key."""
    for key, spec in space.items():
        if spec.kind == "choice":
            hp.Choice(key, _choice_values(spec.choice)[0])
        elif spec.kind == "int":
            step = int(spec.step) if spec.step is not None else None
            hp.Int(key, spec.int_[0], spec.int_[1], step=step, sampling="log" if spec.log else "linear")
        else:
            low, high = spec.float_
            if spec.step is not None and not spec.log:
                # KerasTuner counts (high - low) // step + 1 values, and 0.5 // 0.1 is 4.0: a hair
                # above high keeps high among them (log steps have their own tolerance)
                high += spec.step * 1e-9
            hp.Float(key, low, high, step=spec.step, sampling="log" if spec.log else "linear")


def _decimals(number) -> int:
    """Digits after the point of a number as written: 0.1 -> 1, 0.25 -> 2, 1e-05 -> 5, 50 -> 0."""
    return max(0, -Decimal(repr(float(number))).normalize().as_tuple().exponent)


def _on_step(spec, value: float) -> float:
    """A stepped float as the step writes it: KerasTuner's low + 3 * 0.1 is 0.30000000000000004."""
    if spec.log:  # low * step ** i: rounded to 12 significant digits
        return float(f"{value:.12g}")
    return round(value, max(_decimals(spec.step), _decimals(spec.float_[0])))


def trial_values(t: TuneConfig, hp_values: dict) -> dict:
    """A trial's KerasTuner values as config ``key: value`` (hyperband's epochs included)."""
    out = {}
    for key, spec in t.space.items():
        value = hp_values[key]
        if spec.kind == "choice" and _choice_values(spec.choice)[1]:
            value = json.loads(value)
        elif spec.kind == "float" and spec.step is not None:
            value = _on_step(spec, value)
        out[key] = value
    if HYPERBAND_EPOCHS in hp_values:
        out["train.epochs"] = int(hp_values[HYPERBAND_EPOCHS])
    return out


def shown(values: dict) -> str:
    """``key=value ...`` as a trial's lines print its values (floats to 4 significant digits)."""
    return " ".join(f"{k}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in values.items())
