"""mlp: the fully connected baseline a CNN is compared against."""

from __future__ import annotations

import keras

from imgclf.models.heads import classifier_head, stem
from imgclf.models.registry import ModelSpec, register_model


@register_model(family="mlp")
def mlp(spec: ModelSpec) -> keras.Model:
    """Flattened pixels through dense layers (model.hidden_units) and the shared head."""
    inputs, x = stem(spec)
    outputs = classifier_head(x, spec, pool="flatten", units=list(spec.cfg.hidden_units))
    return keras.Model(inputs, outputs, name="mlp")
