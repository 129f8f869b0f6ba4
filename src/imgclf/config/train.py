"""The train section: the optimizer and schedule tables and their models, the loss, early
stopping, batch growth, the two phases, and ``TrainConfig`` that holds them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from imgclf.config.types import AutoBool, Float, Int, PositiveInt, Section, not_bool

# which optimizer takes which of the optional keys; every one takes OPTIMIZER_COMMON.
# The config refuses a key its optimizer does not take; training.optimizers builds from this.
OPTIMIZER_PARAMS: dict[str, tuple[str, ...]] = {
    "adam": ("beta_1", "beta_2", "epsilon"),
    "adamw": ("beta_1", "beta_2", "epsilon"),
    "sgd": ("momentum", "nesterov"),
    "rmsprop": ("rho", "momentum", "epsilon"),
    "lion": ("beta_1", "beta_2"),
    "radam": ("beta_1", "beta_2", "epsilon"),
    "ranger": ("beta_1", "beta_2", "epsilon", "k", "alpha"),
}
OPTIMIZER_COMMON = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "lr_multipliers",
                    "weight_decay_multipliers", "use_ema", "ema_momentum")
MULTIPLIER_KEYS = ("lr_multipliers", "weight_decay_multipliers")


def _takers(table: dict, key: str) -> list[str]:
    """The names in ``table`` (optimizers or schedules) that take ``key``."""
    return [name for name, keys in table.items() if key in keys]


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd", "rmsprop", "lion", "radam", "ranger"] = "adam"
    lr: Float = Field(1e-3, gt=0.0)
    beta_1: Float | None = Field(None, ge=0.0, lt=1.0)
    beta_2: Float | None = Field(None, ge=0.0, lt=1.0)
    epsilon: Float | None = Field(None, gt=0.0)
    weight_decay: Float | None = Field(None, ge=0.0)
    momentum: Float | None = Field(None, ge=0.0, lt=1.0)
    nesterov: bool | None = None
    rho: Float | None = Field(None, gt=0.0, lt=1.0)
    k: Int | None = Field(None, gt=0)
    alpha: Float | None = Field(None, gt=0.0, le=1.0)
    clipnorm: Float | None = Field(None, gt=0.0)
    clipvalue: Float | None = Field(None, gt=0.0)
    global_clipnorm: Float | None = Field(None, gt=0.0)
    # Keras' weight averaging: validation, model.keras and the test set use the average
    use_ema: bool | None = None
    ema_momentum: Float | None = Field(None, ge=0.0, lt=1.0)
    lr_multipliers: dict[str, Annotated[Float, Field(ge=0.0)]] = Field(default_factory=dict)
    # decoupled weight decay per pattern (default: the variable's lr multiplier)
    weight_decay_multipliers: dict[str, Annotated[Float, Field(ge=0.0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_fit_the_optimizer(self):
        for key in type(self).model_fields:
            if key in OPTIMIZER_COMMON or key in ("name", "lr") or getattr(self, key) is None:
                continue
            if key not in OPTIMIZER_PARAMS[self.name]:
                takers = ", ".join(_takers(OPTIMIZER_PARAMS, key))
                raise ValueError(f"{key} does not apply to optimizer {self.name} (it applies to {takers})")
        clips = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(self, k) is not None]
        if len(clips) > 1:
            raise ValueError(f"set one of clipnorm, clipvalue, global_clipnorm, not {' and '.join(clips)}")
        if self.ema_momentum is not None and not self.use_ema:
            raise ValueError("ema_momentum applies only with use_ema: true")
        return self

    def params(self) -> dict:
        """The optimizer's keyword arguments: the keys that are set, lr excluded."""
        out = {k: v for k, v in self.model_dump(exclude={"name", "lr", *MULTIPLIER_KEYS}).items()
               if v is not None}
        out.update({k: dict(getattr(self, k)) for k in MULTIPLIER_KEYS if getattr(self, k)})
        return out


# schedule -> {key: default}; a REQUIRED key has no default and must be given. plateau is a
# callback on a constant rate (the trainer's); training.schedules builds the others from this.
REQUIRED = object()
SCHEDULE_PARAMS: dict[str, dict[str, object]] = {
    "constant": {},
    "exponential": {"decay_rate": REQUIRED, "decay_steps": 1, "staircase": False},
    "step": {"every_epochs": REQUIRED, "factor": 0.1},
    "piecewise": {"boundaries": REQUIRED, "values": REQUIRED},
    "cosine": {"warmup_epochs": 0.0, "min_lr": 0.0},
    "cosine_restarts": {"first_epochs": REQUIRED, "t_mul": 2.0, "m_mul": 1.0, "min_lr": 0.0},
    "cyclical": {"max_lr": REQUIRED, "step_size_epochs": 2.0, "mode": "triangular", "gamma": 1.0},
    "one_cycle": {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4, "anneal_strategy": "cos"},
    "plateau": {"factor": 0.1, "min_lr": 0.0, "patience": 3, "monitor": "val_loss"},
}


class ScheduleConfig(Section):
    name: Literal["constant", "exponential", "step", "piecewise", "cosine", "cosine_restarts",
                  "cyclical", "one_cycle", "plateau"] = "constant"
    decay_rate: Float | None = Field(None, gt=0.0, le=1.0)
    decay_steps: Int | None = Field(None, gt=0)
    staircase: bool | None = None
    every_epochs: Int | None = Field(None, gt=0)
    factor: Float | None = Field(None, gt=0.0, lt=1.0)
    boundaries: list[Annotated[Float, Field(gt=0.0)]] | None = None
    values: list[Annotated[Float, Field(gt=0.0)]] | None = None
    warmup_epochs: Float | None = Field(None, ge=0.0)
    min_lr: Float | None = Field(None, ge=0.0)
    first_epochs: Float | None = Field(None, gt=0.0)
    t_mul: Float | None = Field(None, gt=0.0)
    m_mul: Float | None = Field(None, gt=0.0)
    max_lr: Float | None = Field(None, gt=0.0)
    step_size_epochs: Float | None = Field(None, gt=0.0)
    mode: Literal["triangular", "triangular2", "exp_range"] | None = None
    gamma: Float | None = Field(None, gt=0.0, le=1.0)
    pct_start: Float | None = Field(None, gt=0.0, lt=1.0)
    div_factor: Float | None = Field(None, gt=0.0)
    final_div_factor: Float | None = Field(None, gt=0.0)
    anneal_strategy: Literal["cos", "linear"] | None = None
    patience: Int | None = Field(None, ge=0)
    monitor: str | None = None

    @model_validator(mode="after")
    def _keys_fit_the_schedule(self):
        for key in type(self).model_fields:
            if key != "name" and getattr(self, key) is not None and key not in SCHEDULE_PARAMS[self.name]:
                takers = ", ".join(_takers(SCHEDULE_PARAMS, key))
                raise ValueError(f"{key} does not apply to schedule {self.name} (it applies to {takers})")
        if self.name == "piecewise":
            if not self.boundaries or not self.values or len(self.values) != len(self.boundaries) + 1:
                raise ValueError("piecewise needs boundaries (epochs) and one more values (rates) than "
                                 f"boundaries, got boundaries={self.boundaries}, values={self.values}")
        if self.name == "step" and self.every_epochs is None:
            raise ValueError("step needs every_epochs (decay the rate by factor every N epochs)")
        if self.name == "cyclical" and self.max_lr is None:
            raise ValueError("cyclical needs max_lr (the rate cycles between optimizer.lr and max_lr)")
        return self

    def params(self) -> dict:
        """The schedule's keyword arguments: the keys that are set (plateau's are the trainer's;
        SCHEDULE_PARAMS has the defaults of the others)."""
        return {k: v for k, v in self.model_dump(exclude={"name"}).items() if v is not None}


class LossConfig(Section):
    name: Literal["crossentropy", "focal"] = "crossentropy"
    label_smoothing: Float = Field(0.0, ge=0.0, lt=1.0)
    alpha: Float = Field(0.25, gt=0.0, le=1.0)
    gamma: Float = Field(2.0, ge=0.0)


class EarlyStoppingConfig(Section):
    enabled: bool = True
    monitor: str = "val_loss"
    patience: Int = Field(5, ge=0)
    min_delta: Float = Field(0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"


class BatchGrowth(Section):
    monitor: str = "val_accuracy"
    above: Float
    batch_size: PositiveInt


class PhasesConfig(Section):
    head_epochs: Int = Field(0, ge=0)
    head_lr: Float = Field(1e-3, gt=0.0)
    unfreeze: Literal["all", "blocks", "layers"] = "all"
    unfreeze_n: PositiveInt = 1


class TrainConfig(Section):
    epochs: PositiveInt = 20
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    class_weight: Literal["balanced"] | dict[str, Annotated[Float, Field(ge=0.0)]] | None = None
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    batch_size_schedule: list[BatchGrowth] = Field(default_factory=list)
    tta: Literal["flip", "flip_shift"] | None = None
    calibration: Literal["temperature"] | None = None
    tensorboard: bool = False
    deterministic: bool = False
    verbose: Annotated[Literal["auto", 0, 1, 2], BeforeValidator(not_bool)] = "auto"
    phases: PhasesConfig = Field(default_factory=PhasesConfig)
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    mixed_precision: bool | Literal["float16", "bfloat16"] = False
    jit_compile: AutoBool = "auto"

    @model_validator(mode="after")
    def _phase_two_has_epochs(self):
        if self.phases.head_epochs >= self.epochs:
            raise ValueError(
                f"phases.head_epochs ({self.phases.head_epochs}) must be less than epochs "
                f"({self.epochs}), which counts both phases"
            )
        if self.strategy == "multi_worker" and self.jit_compile is True:
            raise ValueError("jit_compile=true does not apply to strategy multi_worker (its training loop "
                             "runs without XLA): use auto or false")
        return self
