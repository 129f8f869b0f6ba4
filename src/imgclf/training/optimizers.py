"""Optimizers by name: `make_optimizer("ranger", schedule, k=6, lr_multipliers={"backbone*": 0.1})`.

Keras 3 has Adam, AdamW, SGD, RMSprop and Lion; RAdam (Liu et al. 2019) and Lookahead
(Zhang et al. 2019, here only as Ranger = RAdam + Lookahead) are written here, since
tensorflow-addons, which had them, does not run with Keras 3.

Per-layer learning-rate multipliers replace the MultiOptimizer of tf-addons: the base optimizer
calls `update_step(gradient, variable, learning_rate)` once per variable, so the subclasses
made by `with_lr_multipliers` scale `learning_rate` (and decoupled weight decay, which is
also proportional to it) per variable. A variable matches a glob pattern (fnmatch, case
sensitive) when the pattern matches its path (`backbone/conv1/kernel`), its layer's path
(`backbone/conv1`) or one of the layer names in it (`backbone`, `conv1`); the first matching
pattern wins and unmatched variables keep 1.0. A multiplier of 0 freezes a variable. Keras
gives a variable of a nested model (our large models' `backbone`) a path without the nested
model's name; `qualified_paths(model)` adds it, and the trainer hands those paths to the
optimizer (`variable_paths`) before it is built.

Every class here is registered as `imgclf>Name`: import this module before
`keras.models.load_model` on a model saved with one of them.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

import keras
from keras import ops

from imgclf.config import OPTIMIZER_COMMON, OPTIMIZER_PARAMS


@keras.saving.register_keras_serializable(package="imgclf")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and Beyond").

    With m, v the Adam moments, t the step (1-based), rho_inf = 2 / (1 - beta_2) - 1 and
    rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t):
      rho_t > 5:  r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                  variable -= lr * r_t * m_hat / (sqrt(v_hat) + epsilon)
      otherwise:  variable -= lr * m_hat    (the variance of the adaptive rate is not yet tractable)
    where m_hat = m / (1 - beta_1^t). As in keras' Adam, epsilon is added to sqrt(v) before the
    bias correction (sqrt(v_hat) + epsilon reads sqrt(v) + epsilon, times sqrt(1 - beta_2^t)).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(beta_1, t)
        beta_2_power = ops.power(beta_2, t)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))

        rho_inf = 2.0 / (1.0 - beta_2) - 1.0
        rho_t = rho_inf - 2.0 * t * beta_2_power / (1.0 - beta_2_power)
        rectified = rho_t > 5.0
        # Clamped so that the branch not taken stays finite (no NaN inside where()).
        rho_safe = ops.maximum(rho_t, 5.0)
        r_t = ops.sqrt(
            (rho_safe - 4.0) * (rho_safe - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_safe)
        )
        m_hat = m / (1.0 - beta_1_power)
        adaptive = r_t * m_hat * ops.sqrt(1.0 - beta_2_power) / (ops.sqrt(v) + self.epsilon)
        self.assign_sub(variable, lr * ops.where(rectified, adaptive, m_hat))

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="imgclf")
class Ranger(RAdam):
    """RAdam inside Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back").

    The RAdam ("fast") weights take k steps; then the slow weights move alpha of the way towards
    them, slow += alpha * (fast - slow), and the fast weights restart from there. The slow copy
    is taken from the variable at the first step, so weights loaded before training count.
    """

    def __init__(self, learning_rate=0.001, k=6, alpha=0.5, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` (Lookahead sync period) must be an integer >= 1. Received: k={k!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` (Lookahead step) must be in [0, 1]. Received: alpha={alpha!r}")
        self.k = k
        self.alpha = float(alpha)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._slow = self.add_optimizer_variables(var_list, "slow")

    def update_step(self, gradient, variable, learning_rate):
        slow = self._slow[self._get_variable_index(variable)]
        first = ops.equal(self.iterations, 0)
        self.assign(slow, ops.where(first, variable, slow))
        super().update_step(gradient, variable, learning_rate)
        sync = ops.equal(ops.mod(self.iterations + 1, self.k), 0)
        moved = slow + ops.cast(self.alpha, variable.dtype) * (variable - slow)
        self.assign(slow, ops.where(sync, moved, slow))
        self.assign(variable, ops.where(sync, moved, variable))

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "alpha": self.alpha})
        return config


class LrMultipliers:
    """Mixin: scale the learning rate per variable by glob pattern, and its decoupled weight
    decay by the same multiplier, or by its own where `weight_decay_multipliers` has a match."""

    def __init__(self, *args, lr_multipliers=None, weight_decay_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = check_lr_multipliers(lr_multipliers)
        self.weight_decay_multipliers = check_lr_multipliers(weight_decay_multipliers,
                                                             "weight_decay_multipliers")
        self.variable_paths: dict[str, str] = {}  # variable path -> path with nested model names

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        paths = [self.variable_paths.get(v.path, v.path) for v in var_list]
        self._multipliers = [multiplier_for(p, self.lr_multipliers) for p in paths]
        self._decay_multipliers = [multiplier_for(p, self.weight_decay_multipliers, default=m)
                                   for p, m in zip(paths, self._multipliers)]

    def _apply_weight_decay(self, variables):
        """Decay happens in update_step instead, where the variable's multiplier is known."""

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        mult = self._multipliers[index]
        if mult == 0.0:
            return
        base = ops.cast(learning_rate, variable.dtype)
        if self.weight_decay is not None and self._use_weight_decay(self._trainable_variables[index]):
            wd = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, variable * wd * base * self._decay_multipliers[index])
        super().update_step(gradient, variable, base * mult if mult != 1.0 else base)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        config["weight_decay_multipliers"] = dict(self.weight_decay_multipliers)
        return config


def check_lr_multipliers(value, key: str = "lr_multipliers") -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"`{key}` must map layer-name patterns to numbers. Received: {value!r}")
    out = {}
    for pattern, mult in value.items():
        ok = isinstance(mult, (int, float)) and not isinstance(mult, bool) and math.isfinite(mult)
        if not isinstance(pattern, str) or not ok or mult < 0:
            raise ValueError(f"`{key}` needs pattern: number >= 0. Received: {key}[{pattern!r}]={mult!r}")
        out[pattern] = float(mult)
    return out


def qualified_paths(model) -> dict[str, str]:
    """Each variable's path with the names of the nested models it sits in prefixed
    (`conv1/kernel` of the nested model `backbone` -> `backbone/conv1/kernel`)."""
    out: dict[str, str] = {}

    def walk(layer, prefix: str) -> None:
        for sub in getattr(layer, "layers", []):
            if isinstance(sub, keras.Model):
                inner = f"{prefix}{sub.name}/"
                for v in sub.weights:
                    if not v.path.startswith(inner):
                        out[v.path] = inner + v.path.removeprefix(prefix)
                walk(sub, inner)

    walk(model, "")
    return out


def multiplier_for(path: str, multipliers: dict[str, float], default: float = 1.0) -> float:
    """The multiplier of the first pattern that matches the variable `path`, else `default`."""
    layer_path = path.rsplit("/", 1)[0] if "/" in path else path
    names = [path, layer_path, *layer_path.split("/")]
    for pattern, mult in multipliers.items():
        if any(fnmatchcase(n, pattern) for n in names):
            return mult
    return default


def with_lr_multipliers(base: type) -> type:
    """A registered subclass of optimizer class `base` that takes `lr_multipliers`."""
    name = f"{base.__name__}LrMult"
    cls = type(name, (LrMultipliers, base), {"__module__": __name__, "__qualname__": name})
    return keras.saving.register_keras_serializable(package="imgclf", name=name)(cls)


BASES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "lion": keras.optimizers.Lion,
    "radam": RAdam,
    "ranger": Ranger,
}
WITH_MULTIPLIERS = {key: with_lr_multipliers(cls) for key, cls in BASES.items()}


def make_optimizer(name: str, learning_rate, **params):
    """A keras optimizer `name` with `learning_rate` (a float or a LearningRateSchedule).

    Parameters that are None are ignored; one that `name` does not take is a ValueError, as is
    an unknown name. Without `lr_multipliers` the optimizer is keras' own class where Keras has one.
    """
    if name not in BASES:
        raise ValueError(f"Unknown `optimizer` (known: {', '.join(BASES)}). Received: name={name!r}")
    params = {k: v for k, v in params.items() if v is not None}
    allowed = OPTIMIZER_PARAMS[name] + OPTIMIZER_COMMON
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(
                f"Optimizer {name!r} does not take `{key}` (takes: {', '.join(allowed)}). "
                f"Received: {key}={value!r}"
            )
    clips = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if k in params]
    if len(clips) > 1:
        raise ValueError(
            f"Only one of clipnorm, clipvalue, global_clipnorm may be set. "
            f"Received: {', '.join(f'{k}={params[k]!r}' for k in clips)}"
        )
    if isinstance(learning_rate, int) and not isinstance(learning_rate, bool):
        learning_rate = float(learning_rate)
    multipliers = {k: params.pop(k) for k in ("lr_multipliers", "weight_decay_multipliers") if k in params}
    if any(multipliers.values()):
        return WITH_MULTIPLIERS[name](learning_rate=learning_rate, **multipliers, **params)
    return BASES[name](learning_rate=learning_rate, **params)
