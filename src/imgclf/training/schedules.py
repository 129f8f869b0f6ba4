"""Learning-rate schedules by name: `make_schedule("cosine", 1e-3, steps_per_epoch=..., epochs=...)`.

A schedule maps the optimizer's step counter (`optimizer.iterations`, one per batch, starting
at 0) to a learning rate. Settings given in epochs are turned into steps here with
`steps_per_epoch`, so the schedule classes themselves only ever see steps. Every class of ours
is registered as `imgclf>Name` (exponential, step and cosine_restarts use keras' own), so a
`model.keras` saved with its optimizer reloads with `keras.models.load_model` once this module
has been imported.

    constant         lr
    exponential      lr * decay_rate ** (step / decay_steps)          (floor() of it if staircase)
    step             lr * factor ** floor(step / (every_epochs * spe))
    piecewise        values[i], i = number of boundaries (epochs) already reached
    cosine           linear warm-up 0 -> lr, then cosine lr -> min_lr, reaching min_lr at epochs * spe
    cosine_restarts  SGDR: cosine lr -> min_lr over first_epochs, each next period t_mul times
                     longer, its height above min_lr m_mul times lower (keras CosineDecayRestarts)
    cyclical         Smith (2017) cyclical rates between lr and max_lr: triangular,
                     triangular2, exp_range (the semantics of tensorflow-addons' retired classes)
    one_cycle        PyTorch's OneCycleLR (cosine or linear annealing); lr is the peak
"""

from __future__ import annotations

import math

import keras
from keras import ops

from imgclf.config import REQUIRED, SCHEDULE_PARAMS

CYCLICAL_MODES = ("triangular", "triangular2", "exp_range")

# name -> {parameter: default} (config.SCHEDULE_PARAMS, whose `plateau` is the trainer's callback)
SCHEDULES = {name: params for name, params in SCHEDULE_PARAMS.items() if name != "plateau"}


def _float_step(step):
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package="imgclf")
class Piecewise(keras.optimizers.schedules.LearningRateSchedule):
    """`values[i]` where i is the number of `boundaries` (steps) with `boundary <= step`.

    A boundary at the first step of an epoch therefore switches the rate for that whole epoch
    (keras' PiecewiseConstantDecay switches one step later, at `step > boundary`).
    """

    def __init__(self, boundaries, values, name=None):
        super().__init__()
        self.boundaries = [float(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.name = name

    def __call__(self, step):
        s = _float_step(step)
        lr = ops.convert_to_tensor(self.values[0], "float32")
        for boundary, value in zip(self.boundaries, self.values[1:]):
            lr = ops.where(s >= boundary, value, lr)
        return lr

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


@keras.saving.register_keras_serializable(package="imgclf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine from `peak` to `min_lr`.

    The cosine reaches `min_lr` at `total_steps` and stays there.
    """

    def __init__(self, peak, total_steps, warmup_steps=0.0, min_lr=0.0, name=None):
        super().__init__()
        self.peak = float(peak)
        self.total_steps = float(total_steps)
        self.warmup_steps = float(warmup_steps)
        self.min_lr = float(min_lr)
        self.name = name

    def __call__(self, step):
        s = _float_step(step)
        w = self.warmup_steps
        frac = ops.clip((s - w) / (self.total_steps - w), 0.0, 1.0)
        cosine = self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + ops.cos(math.pi * frac))
        if w <= 0:
            return cosine
        warm = self.peak * s / w
        return ops.where(s < w, warm, cosine)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr": self.min_lr,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="imgclf")
class CyclicalLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Cyclical learning rate (Smith 2017, "Cyclical Learning Rates for Training Neural Networks").

    cycle = floor(1 + step / (2 * step_size)); x = |step / step_size - 2 * cycle + 1|
    lr = initial + (maximal - initial) * max(0, 1 - x) * scale, with scale
      triangular:  1
      triangular2: 1 / 2 ** (cycle - 1)   (the amplitude halves every cycle)
      exp_range:   gamma ** step          (decays every iteration)
    `step_size` is half a cycle, in steps.
    """

    def __init__(
        self, initial_learning_rate, maximal_learning_rate, step_size, mode="triangular", gamma=1.0, name=None
    ):
        super().__init__()
        if mode not in CYCLICAL_MODES:
            raise ValueError(
                f"Unknown `mode` for the cyclical schedule (known: {', '.join(CYCLICAL_MODES)}). "
                f"Received: mode={mode!r}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.maximal_learning_rate = float(maximal_learning_rate)
        self.step_size = float(step_size)
        self.mode = mode
        self.gamma = float(gamma)
        self.name = name

    def __call__(self, step):
        s = _float_step(step)
        cycle = ops.floor(1.0 + s / (2.0 * self.step_size))
        x = ops.abs(s / self.step_size - 2.0 * cycle + 1.0)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1.0 / ops.power(2.0, cycle - 1.0)
        else:
            scale = ops.power(self.gamma, s)
        amplitude = self.maximal_learning_rate - self.initial_learning_rate
        return self.initial_learning_rate + amplitude * ops.maximum(0.0, 1.0 - x) * scale

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="imgclf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """1cycle policy as PyTorch's OneCycleLR (two phases; cosine annealing, or linear with
    ``anneal_strategy="linear"``: the triangle of the fast CIFAR-10 recipes).

    Starts at max_lr / div_factor, rises to max_lr at step `pct_start * total_steps - 1`, then
    falls to max_lr / (div_factor * final_div_factor) at step `total_steps - 1` and stays there.
    """

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, name=None,
                 anneal_strategy="cos"):
        super().__init__()
        self.anneal_strategy = anneal_strategy
        self.max_lr = float(max_lr)
        self.total_steps = float(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "linear":
            return start + (end - start) * pct
        return end + (start - end) / 2.0 * (ops.cos(math.pi * pct) + 1.0)

    def __call__(self, step):
        s = _float_step(step)
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        peak_step = self.pct_start * self.total_steps - 1.0
        last_step = self.total_steps - 1.0
        rise = self._anneal(initial, self.max_lr, ops.clip(s / peak_step, 0.0, 1.0))
        fall_pct = ops.clip((s - peak_step) / (last_step - peak_step), 0.0, 1.0)
        fall = self._anneal(self.max_lr, final, fall_pct)
        return ops.where(s <= peak_step, rise, fall)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
            "anneal_strategy": self.anneal_strategy,
        }


def _bad(name: str, key: str, value, why: str) -> ValueError:
    return ValueError(f"Bad `{key}` for schedule {name!r}: {why}. Received: {key}={value!r}")


def _number(name, key, value, *, positive=False, nonneg=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(name, key, value, "expected a number")
    if positive and value <= 0:
        raise _bad(name, key, value, "must be > 0")
    if nonneg and value < 0:
        raise _bad(name, key, value, "must be >= 0")
    return float(value)


def make_schedule(name: str, lr: float, *, steps_per_epoch: int, epochs: int, **params):
    """A float (constant) or a `keras.optimizers.schedules.LearningRateSchedule`.

    Raises ValueError for an unknown name, an unknown or missing parameter, or a bad value.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown `schedule` (known: {', '.join(SCHEDULES)}). Received: name={name!r}")
    spec = SCHEDULES[name]
    unknown = [k for k in params if k not in spec]
    if unknown:
        takes = ", ".join(spec) or "no parameters"
        shown = ", ".join(f"{k}={params[k]!r}" for k in unknown)
        raise ValueError(f"Unknown `schedule` parameter for {name!r} (takes: {takes}). Received: {shown}")
    missing = [k for k, default in spec.items() if default is REQUIRED and params.get(k) is None]
    if missing:
        raise ValueError(f"Schedule {name!r} needs `{missing[0]}`. Received: {missing[0]}=None")
    p = {k: (params[k] if params.get(k) is not None else default) for k, default in spec.items()}
    lr = _number(name, "lr", lr, nonneg=True)
    spe = _number(name, "steps_per_epoch", steps_per_epoch, positive=True)
    total = spe * _number(name, "epochs", epochs, positive=True)

    if name == "constant":
        return lr
    return _BUILDERS[name](lr, p, spe, total, epochs)


# one builder per schedule: (lr, its parameters with defaults, steps per epoch, total steps,
# epochs) -> the schedule, raising ValueError for a bad value
def _exponential(lr, p, spe, total, epochs):
    rate = _number("exponential", "decay_rate", p["decay_rate"], positive=True)
    steps = _number("exponential", "decay_steps", p["decay_steps"], positive=True)
    return keras.optimizers.schedules.ExponentialDecay(lr, steps, rate, staircase=bool(p["staircase"]))


def _step(lr, p, spe, total, epochs):
    every = p["every_epochs"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise _bad("step", "every_epochs", every, "expected a whole number of epochs >= 1")
    factor = _number("step", "factor", p["factor"], positive=True)
    return keras.optimizers.schedules.ExponentialDecay(lr, every * spe, factor, staircase=True)


def _piecewise(lr, p, spe, total, epochs):
    name = "piecewise"
    bounds, values = p["boundaries"], p["values"]
    if not isinstance(bounds, (list, tuple)) or not isinstance(values, (list, tuple)):
        raise _bad(name, "boundaries", bounds, "boundaries and values must be lists")
    bounds = [_number(name, "boundaries", b, nonneg=True) for b in bounds]
    values = [_number(name, "values", v, nonneg=True) for v in values]
    if len(values) != len(bounds) + 1:
        raise _bad(name, "values", values, f"needs len(boundaries) + 1 = {len(bounds) + 1} values")
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        raise _bad(name, "boundaries", bounds, "must be increasing")
    return Piecewise([b * spe for b in bounds], values)


def _cosine(lr, p, spe, total, epochs):
    warmup = _number("cosine", "warmup_epochs", p["warmup_epochs"], nonneg=True) * spe
    min_lr = _number("cosine", "min_lr", p["min_lr"], nonneg=True)
    if warmup >= total:
        raise _bad("cosine", "warmup_epochs", p["warmup_epochs"], f"must be shorter than epochs={epochs}")
    return WarmupCosine(lr, total, warmup_steps=warmup, min_lr=min_lr)


def _cosine_restarts(lr, p, spe, total, epochs):
    name = "cosine_restarts"
    first = _number(name, "first_epochs", p["first_epochs"], positive=True) * spe
    t_mul = _number(name, "t_mul", p["t_mul"], positive=True)
    m_mul = _number(name, "m_mul", p["m_mul"], positive=True)
    min_lr = _number(name, "min_lr", p["min_lr"], nonneg=True)
    if lr <= 0 or min_lr > lr:
        raise _bad(name, "min_lr", min_lr, f"needs 0 <= min_lr <= lr={lr}")
    return keras.optimizers.schedules.CosineDecayRestarts(lr, first, t_mul=t_mul, m_mul=m_mul,
                                                          alpha=min_lr / lr)


def _cyclical(lr, p, spe, total, epochs):
    name = "cyclical"
    max_lr = _number(name, "max_lr", p["max_lr"], positive=True)
    step_size = _number(name, "step_size_epochs", p["step_size_epochs"], positive=True) * spe
    gamma = _number(name, "gamma", p["gamma"], positive=True)
    if p["mode"] not in CYCLICAL_MODES:
        raise _bad(name, "mode", p["mode"], f"known: {', '.join(CYCLICAL_MODES)}")
    return CyclicalLearningRate(lr, max_lr, step_size, mode=p["mode"], gamma=gamma)


def _one_cycle(lr, p, spe, total, epochs):
    name = "one_cycle"
    pct = _number(name, "pct_start", p["pct_start"], positive=True)
    if not pct < 1 or pct * total <= 1:
        raise _bad(name, "pct_start", pct, "needs 0 < pct_start < 1 and more than one warm-up step")
    div = _number(name, "div_factor", p["div_factor"], positive=True)
    final_div = _number(name, "final_div_factor", p["final_div_factor"], positive=True)
    return OneCycle(lr, total, pct_start=pct, div_factor=div, final_div_factor=final_div,
                    anneal_strategy=p["anneal_strategy"])


_BUILDERS = {"exponential": _exponential, "step": _step, "piecewise": _piecewise, "cosine": _cosine,
             "cosine_restarts": _cosine_restarts, "cyclical": _cyclical, "one_cycle": _one_cycle}
