"""The typed experiment config: defaults, YAML loading, --set overrides, the resolved copy.

Every key lives in one pydantic model with ``extra="forbid"``. ``configs/default.yaml``
documents each key with its type and default, and a test keeps the two in step.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from imgclf.errors import ConfigError


def _not_bool(value):
    # Python counts True as 1: without this, `epochs: yes` would train for one epoch
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _auto_or_bool(value):
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"expected auto, true or false, got {value!r}")


Int = Annotated[int, BeforeValidator(_not_bool)]
AutoBool = Annotated[Literal["auto"] | bool, BeforeValidator(_auto_or_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
PositiveInt = Annotated[Int, Field(gt=0)]
Activation = Literal["relu", "leaky_relu", "mish", "gelu", "swish", "elu", "tanh"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
class DataConfig(Section):
    source: Literal["digits", "folder", "idx", "npz"] = "digits"
    path: str | None = None
    val_split: Float = Field(0.2, ge=0.0, lt=1.0)
    test_split: Float = Field(0.0, ge=0.0, lt=1.0)
    holdout_last_n: Int = Field(0, ge=0)
    image_size: list[PositiveInt] | None = None
    channels: Annotated[Literal[1, 3], BeforeValidator(_not_bool)] | None = None
    batch_size: PositiveInt = 32
    cache: bool = True
    shuffle_buffer: PositiveInt = 10_000
    class_names: list[str] | None = None

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v):
        return [v, v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("image_size")
    @classmethod
    def _two_sides(cls, v):
        if v is not None and len(v) != 2:
            raise ValueError(f"must be a [height, width] list, got {v}")
        return v


# -------------------------------------------------------------------------- model
class ModelConfig(Section):
    name: str = "simple_cnn"
    weights: str | None = None
    filters: list[PositiveInt] = Field(default_factory=lambda: [32, 64])
    convs_per_block: PositiveInt = 1
    kernel_size: PositiveInt = 3
    padding: Literal["same", "valid"] = "same"
    batch_norm: bool = True
    pooling: Literal["max", "avg", "none"] = "max"
    conv_dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    hidden_units: list[PositiveInt] = Field(default_factory=lambda: [256, 128])
    head_batch_norm: bool = False
    dense_units: Int = Field(128, ge=0)
    activation: Activation = "relu"
    dropout: Float = Field(0.3, ge=0.0, lt=1.0)


# -------------------------------------------------------------------------- train
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
OPTIMIZER_COMMON = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "lr_multipliers")


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
    lr_multipliers: dict[str, Annotated[Float, Field(ge=0.0)]] = Field(default_factory=dict)

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
        return self

    def params(self) -> dict:
        """The optimizer's keyword arguments: the keys that are set, lr excluded."""
        out = {k: v for k, v in self.model_dump(exclude={"name", "lr", "lr_multipliers"}).items()
               if v is not None}
        if self.lr_multipliers:
            out["lr_multipliers"] = dict(self.lr_multipliers)
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
    "one_cycle": {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
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
    tta: Literal["flip"] | None = None
    tensorboard: bool = False
    deterministic: bool = False
    verbose: Annotated[Literal["auto", 0, 1, 2], BeforeValidator(_not_bool)] = "auto"
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


# ------------------------------------------------------------------------ augment
class FlipStep(Section):
    name: Literal["flip"]
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"


class RotationStep(Section):
    name: Literal["rotation"]
    factor: Float = Field(0.1, gt=0.0, le=1.0)


class ZoomStep(Section):
    name: Literal["zoom"]
    factor: Float = Field(0.1, gt=0.0, lt=1.0)


class TranslationStep(Section):
    name: Literal["translation"]
    factor: Float = Field(0.1, gt=0.0, lt=1.0)


class ContrastStep(Section):
    name: Literal["contrast"]
    factor: Float = Field(0.1, gt=0.0, le=1.0)


class BrightnessStep(Section):
    name: Literal["brightness"]
    factor: Float = Field(0.1, gt=0.0, le=1.0)


class CropStep(Section):
    name: Literal["crop"]
    padding: PositiveInt = 4


def _fraction_range(value, upper: float | None = 1.0):
    lo, hi = value
    if not 0 < lo <= hi or (upper is not None and hi > upper):
        bound = f"0 < low <= high <= {upper:g}" if upper is not None else "0 < low <= high"
        raise ValueError(f"must be [low, high] with {bound}, got {list(value)}")
    return value


Pair = tuple[Float, Float]


class RandomResizedCropStep(Section):
    name: Literal["random_resized_crop"]
    scale: Pair = (0.08, 1.0)
    ratio: Pair = (0.75, 1.333)

    _scale = field_validator("scale")(lambda v: _fraction_range(v))
    _ratio = field_validator("ratio")(lambda v: _fraction_range(v, None))


class GaussianNoiseStep(Section):
    name: Literal["gaussian_noise"]
    stddev: Float = Field(10.0, gt=0.0, le=255.0)


class ErasingStep(Section):
    name: Literal["erasing"]
    probability: Float = Field(0.5, ge=0.0, le=1.0)
    scale: Pair = (0.02, 0.33)
    value: Float | None = Field(None, ge=0.0, le=255.0)

    _scale = field_validator("scale")(lambda v: _fraction_range(v))


class ColorJitterStep(Section):
    name: Literal["color_jitter"]
    brightness: Float = Field(0.2, ge=0.0, le=1.0)
    contrast: Float = Field(0.2, ge=0.0, le=1.0)
    saturation: Float = Field(0.2, ge=0.0, le=1.0)
    hue: Float = Field(0.0, ge=0.0, le=0.5)


class RandAugmentStep(Section):
    name: Literal["randaugment"]
    num_ops: PositiveInt = 2
    magnitude: Float = Field(0.5, gt=0.0, le=1.0)


class MixUpStep(Section):
    name: Literal["mixup"]
    alpha: Float = Field(0.2, gt=0.0)


class CutMixStep(Section):
    name: Literal["cutmix"]
    alpha: Float = Field(1.0, gt=0.0)


_STEP_CLASSES = (
    FlipStep, RotationStep, ZoomStep, TranslationStep, ContrastStep, BrightnessStep, CropStep,
    RandomResizedCropStep, GaussianNoiseStep, ErasingStep, ColorJitterStep, RandAugmentStep,
    MixUpStep, CutMixStep,
)
AugmentStep = Annotated[
    FlipStep | RotationStep | ZoomStep | TranslationStep | ContrastStep | BrightnessStep | CropStep
    | RandomResizedCropStep | GaussianNoiseStep | ErasingStep | ColorJitterStep | RandAugmentStep
    | MixUpStep | CutMixStep,
    Field(discriminator="name"),
]
AUGMENT_STEPS = {cls.model_fields["name"].annotation.__args__[0]: cls for cls in _STEP_CLASSES}


# ------------------------------------------------------------------------- output
class OutputConfig(Section):
    dir: str = "outputs"
    name: str | None = None


# --------------------------------------------------------------------------- tune
SPACE_KINDS = ("choice", "int", "float")


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
            if key not in (*SPACE_KINDS, "step", "log"):
                raise ValueError(f"unknown key {key!r}{_suggest(str(key), [*SPACE_KINDS, 'step', 'log'])} "
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


class TuneConfig(Section):
    algorithm: Literal["random", "bayesian", "hyperband"] = "random"
    max_trials: PositiveInt = 10
    executions_per_trial: PositiveInt = 1
    objective: str = "val_accuracy"
    direction: Literal["auto", "min", "max"] = "auto"
    hyperband_factor: Int = Field(3, ge=2)
    space: dict[str, SpaceSpec] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _known_config_keys(cls, space):
        keys = valid_keys()
        sections = {k for k in keys if any(o.startswith(k + ".") for o in keys)}
        for key in space:
            if key not in keys:
                raise ValueError(f"unknown key {key}{_suggest(key, keys)}")
            if key in sections:
                raise ValueError(f"{key} is a section; tune one of its keys, e.g. {key}."
                                 f"{next(k for k in keys if k.startswith(key + '.')).rsplit('.', 1)[-1]}")
            if key.split(".")[0] in ("tune", "output"):
                raise ValueError(f"{key} cannot be tuned (the search sets the tune and output sections)")
        return space

    @model_validator(mode="after")
    def _hyperband_owns_epochs(self):
        if self.algorithm == "hyperband" and "train.epochs" in self.space:
            raise ValueError("hyperband sets train.epochs itself (its budget is train.epochs); "
                             "remove train.epochs from tune.space")
        return self

    def resolved_direction(self) -> str:
        """max for accuracy-like objectives, min otherwise (losses), unless direction says."""
        if self.direction != "auto":
            return self.direction
        return "max" if "acc" in self.objective else "min"


class Config(Section):
    seed: Int = Field(42, ge=0, lt=2**32)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: list[AugmentStep] = Field(default_factory=list)
    augment_on: Literal["model", "pipeline"] = "model"
    output: OutputConfig = Field(default_factory=OutputConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)  # read by `imgclf tune` alone


# ------------------------------------------------------------------ key discovery
def _section_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config, sections first-class too (``train.early_stopping``)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _section_of(field.annotation)
        if sub is not None:
            keys.extend(valid_keys(sub, dotted + "."))
    return keys


def _siblings(loc: tuple) -> list[str]:
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
            model = _section_of(field.annotation) if field else None
            path.append(str(part))
        if model is None:
            return []
    prefix = ".".join(path)
    return [f"{prefix}.{k}" if prefix else k for k in model.model_fields]


def _loc_str(loc: tuple) -> str:
    out = []
    for part in loc:
        if isinstance(part, int):
            out.append(str(part))
        elif part in AUGMENT_STEPS and out and out[-1].isdigit():
            continue  # the discriminator tag pydantic adds inside augment steps
        else:
            out.append(str(part))
    return ".".join(out)


def _suggest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not match:  # compare the last part alone: `train.epoch` vs `train.epochs`
        last = key.rsplit(".", 1)[-1]
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = difflib.get_close_matches(last, list(tails), n=1, cutoff=0.6)
        match = [tails[close[0]]] if close else []
    return f" (did you mean {match[0]}?)" if match else ""


def _describe(err: dict) -> str:
    loc = tuple(err["loc"])
    key = _loc_str(loc)
    if err["type"] == "extra_forbidden":
        candidates = _siblings(loc) or valid_keys()
        return f"unknown key {key}{_suggest(key, candidates)}"
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tag = ctx.get("tag")
        names = sorted(AUGMENT_STEPS)
        hint = difflib.get_close_matches(str(tag), names, n=1)
        more = f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(names)})"
        return f"{key}.name: unknown augmentation step {tag!r}{more}"
    if err["type"] == "union_tag_not_found":
        return f"{key}: each augmentation step needs a name (known: {', '.join(sorted(AUGMENT_STEPS))})"
    msg = err["msg"]
    if msg.startswith("Value error, "):  # our own validators already echo the value
        return f"{key}: {msg[len('Value error, '):]}"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{key}: {msg} (got {got})"


def _validate(raw: dict, origin: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        errs = exc.errors()
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(f"{origin}: {_describe(errs[0])}{more}") from None


# ------------------------------------------------------------------ load / merge
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
        model = _section_of(field.annotation) if field else None
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


def load_config(path: str | Path | list | tuple | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s) in order (differences only; a later file wins), then
    --set overrides, validated once."""
    paths = [] if path is None else [path] if isinstance(path, str | Path) else list(path)
    raw: dict = {}
    origin = "config"
    for item in paths:
        part = _read_yaml(Path(item))
        _validate(part, str(item))  # each file alone first, so an error names its file
        raw = _deep_merge(raw, part)
        origin = " + ".join(str(p) for p in paths)
    if overrides:
        _validate(raw, origin)
        raw = apply_overrides(_deep_merge({}, raw), overrides)
        origin = "--set"
    cfg = _validate(raw, origin)
    check_space(cfg, origin)
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
        raise ConfigError(f"{', '.join(f'{k}={v!r}' for k, v in values.items())}: {_describe(err)}") from None


def get_key(cfg: Config, key: str) -> Any:
    """The value of a dotted key (``train.optimizer.lr``)."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_space(cfg: Config, origin: str = "config") -> None:
    """Every value a tune.space entry can give (each choice, both ends of a range) must make
    a valid config on its own, so a typo in a choice fails now, not in trial 7. Choices take
    the key's own type (``1.0e6``, a string to YAML, becomes the float the key holds)."""
    for key, spec in cfg.tune.space.items():
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
                cfg.tune.space[key] = SpaceSpec.model_validate({"choice": typed})
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ConfigError(f"{origin}: tune.space.{key}: {reason}") from None
        elif spec.kind == "float" and all(isinstance(v, int) and not isinstance(v, bool) for v in typed):
            whole = [int(x) if float(x).is_integer() else x for x in spec.float_]
            raise ConfigError(f"{origin}: tune.space.{key}: {key} takes whole numbers; use {{int: {whole}}}")


def to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
