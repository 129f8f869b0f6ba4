"""The typed experiment config: defaults, YAML loading, --set overrides, the resolved copy.

Every key lives in one pydantic model with ``extra="forbid"``. ``configs/default.yaml``
documents each key with its type and default, and a test keeps the two in step.

The modules, each importing only those listed before it:

- ``types``: the scalar types and ``Section``, the base of every section model;
- ``augment``: the fourteen augmentation-step schemas, ``AugmentStep``, ``AUGMENT_STEPS``;
- ``train``: the train section, with the optimizer and schedule tables;
- ``space``: one tune-space entry (``SpaceSpec``);
- ``schema``: the other sections, ``Config`` and ``valid_keys``;
- ``messages``: pydantic's errors as our one-line messages;
- ``loading``: YAML, merging, overrides, ``load_config``, ``with_values``, ``dump_yaml``.

Nothing here imports TensorFlow: ``imgclf --help`` imports this package.
"""

from imgclf.config.augment import AUGMENT_STEPS, AugmentStep
from imgclf.config.loading import (
    apply_overrides,
    dump_yaml,
    get_key,
    load_config,
    override_items,
    parse_override,
    to_dict,
    typed_space,
    with_values,
)
from imgclf.config.schema import Config, DataConfig, ModelConfig, OutputConfig, TuneConfig, valid_keys
from imgclf.config.space import SPACE_KINDS, SpaceSpec
from imgclf.config.train import (
    OPTIMIZER_COMMON,
    OPTIMIZER_PARAMS,
    REQUIRED,
    SCHEDULE_PARAMS,
    BatchGrowth,
    EarlyStoppingConfig,
    LossConfig,
    OptimizerConfig,
    PhasesConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "AUGMENT_STEPS", "OPTIMIZER_COMMON", "OPTIMIZER_PARAMS", "REQUIRED", "SCHEDULE_PARAMS", "SPACE_KINDS",
    "AugmentStep", "BatchGrowth", "Config", "DataConfig", "EarlyStoppingConfig", "LossConfig",
    "ModelConfig", "OptimizerConfig", "OutputConfig", "PhasesConfig", "ScheduleConfig", "SpaceSpec",
    "TrainConfig", "TuneConfig",
    "apply_overrides", "dump_yaml", "get_key", "load_config", "override_items", "parse_override", "to_dict",
    "typed_space", "valid_keys", "with_values",
]
