"""The augmentation steps: one schema for each of the fourteen, told apart by ``name``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from imgclf.config.types import Float, PositiveInt, Section


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
# step name -> its schema
AUGMENT_STEPS = {cls.model_fields["name"].annotation.__args__[0]: cls for cls in _STEP_CLASSES}
