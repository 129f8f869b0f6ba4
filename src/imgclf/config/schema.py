"""The whole config: the data, model, output and tune sections beside train and augment,
``Config`` that holds them all, and ``valid_keys``, every dotted key it has.

Every key lives in one pydantic model with ``extra="forbid"``. ``configs/default.yaml``
documents each key with its type and default, and a test keeps the two in step.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from imgclf import monitors
from imgclf.config.augment import AugmentStep
from imgclf.config.space import SpaceSpec
from imgclf.config.train import TrainConfig
from imgclf.config.types import Activation, Float, Int, PositiveInt, Section, not_bool, section_of
from imgclf.errors import did_you_mean


class DataConfig(Section):
    source: Literal["digits", "folder", "idx", "npz", "csv", "keras"] = "digits"
    name: Literal["mnist", "fashion_mnist", "cifar10", "cifar100", "flowers"] | None = None
    label_mode: Literal["fine", "coarse"] = "fine"
    path: str | None = None
    path_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None
    val_split: Float = Field(0.2, ge=0.0, lt=1.0)
    test_split: Float = Field(0.0, ge=0.0, lt=1.0)
    holdout_last_n: Int = Field(0, ge=0)
    dedupe_split: bool = False
    image_size: list[PositiveInt] | None = None
    channels: Annotated[Literal[1, 3], BeforeValidator(not_bool)] | None = None
    batch_size: PositiveInt = 32
    cache: bool = True
    shuffle_buffer: PositiveInt = 10_000
    class_names: list[str] | None = None
    folds: Int = Field(0, ge=0)
    fold: Int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _name_for_keras(self):
        if self.source == "keras" and self.name is None:
            raise ValueError("source: keras needs data.name: mnist, fashion_mnist, cifar10, cifar100 "
                             "or flowers")
        if self.source != "keras" and self.name is not None:
            raise ValueError(f"name is for source: keras. Received: source={self.source}")
        # fine is the default everywhere (run configs saved it so); coarse means CIFAR-100's alone
        if self.label_mode == "coarse" and (self.source, self.name) != ("keras", "cifar100"):
            got = f"name={self.name}" if self.source == "keras" else f"source={self.source}"
            raise ValueError(f"label_mode is for source: keras, name: cifar100. Received: {got}")
        return self

    @model_validator(mode="after")
    def _csv_keys_for_csv(self):
        if self.source != "csv":
            for key in ("path_column", "label_column", "split_column"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is for source: csv. Received: source={self.source}")
        return self

    @model_validator(mode="after")
    def _one_fold_of_folds(self):
        if self.folds == 1:
            raise ValueError("folds: 0 (off) or at least 2 folds")
        if self.fold is not None and not self.folds:
            raise ValueError("fold names one of data.folds' folds: set data.folds too")
        if self.fold is not None and self.fold > self.folds:
            raise ValueError(f"fold must be between 1 and data.folds ({self.folds}). "
                             f"Received: fold={self.fold}")
        return self

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


class OutputConfig(Section):
    dir: str = "outputs"
    name: str | None = None
    gradcam: Int = Field(3, ge=0)


class TuneConfig(Section):
    algorithm: Literal["random", "bayesian", "hyperband"] = "random"
    max_trials: PositiveInt = 10
    executions_per_trial: PositiveInt = 1
    folds: Int = Field(0, ge=0)
    objective: str = "val_accuracy"
    direction: Literal["auto", "min", "max"] = "auto"
    hyperband_factor: Int = Field(3, ge=2)
    space: dict[str, SpaceSpec] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _known_config_keys(cls, space):
        keys = valid_keys()  # of Config, below: tuned keys are the whole config's
        sections = {k for k in keys if any(o.startswith(k + ".") for o in keys)}
        for key in space:
            if key not in keys:
                raise ValueError(f"unknown key {key}{did_you_mean(key, keys)}")
            if key in sections:
                raise ValueError(f"{key} is a section; tune one of its keys, e.g. {key}."
                                 f"{next(k for k in keys if k.startswith(key + '.')).rsplit('.', 1)[-1]}")
            if key.split(".")[0] in ("tune", "output"):
                raise ValueError(f"{key} cannot be tuned (the search sets the tune and output sections)")
        return space

    @model_validator(mode="after")
    def _no_single_fold(self):
        if self.folds == 1:
            raise ValueError("folds: 0 (off) or at least 2 folds")
        return self

    @model_validator(mode="after")
    def _hyperband_owns_epochs(self):
        if self.algorithm == "hyperband" and "train.epochs" in self.space:
            raise ValueError("hyperband sets train.epochs itself (its budget is train.epochs); "
                             "remove train.epochs from tune.space")
        return self

    def resolved_direction(self) -> str:
        """max for accuracy-like objectives, min otherwise (losses), unless direction says."""
        return monitors.direction(self.objective, self.direction)


class Config(Section):
    seed: Int = Field(42, ge=0, lt=2**32)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: list[AugmentStep] = Field(default_factory=list)
    augment_on: Literal["model", "pipeline"] = "model"
    output: OutputConfig = Field(default_factory=OutputConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)  # read by `imgclf tune` alone


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config, sections first-class too (``train.early_stopping``)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = section_of(field.annotation)
        if sub is not None:
            keys.extend(valid_keys(sub, dotted + "."))
    return keys
