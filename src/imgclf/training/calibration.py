"""Temperature scaling (`train.calibration: temperature`): one temperature T, fitted on the
validation predictions by minimising their negative log-likelihood, divides the logits of
the classifier. It is folded into the final Dense layer (kernel and bias times 1/T: the
softmax of (Wx + b) / T exactly), so model.keras, its exports, `evaluate` and `predict` all
give the calibrated probabilities, and no argmax moves.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.optimize import minimize_scalar

from imgclf.reports.metrics import expected_calibration_error

OUTPUT_LAYER = "predictions"  # the one classifier layer every model ends in (models/heads.py)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    out = np.exp(z)
    return out / out.sum(axis=1, keepdims=True)


def nll(y: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def logits_of(model, images) -> np.ndarray:
    """The output layer's logits (before its softmax), in float64: saturated float32
    probabilities of an over-confident model would hide them."""
    layer = model.get_layer(OUTPUT_LAYER)
    features = keras.Model(model.inputs, layer.input).predict(images, verbose=0)
    kernel, bias = layer.get_weights()
    return np.asarray(features, np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64)


def fit_temperature(y: np.ndarray, logits: np.ndarray) -> float:
    """The T in [0.05, 20] (searched on log T) that minimises the NLL of softmax(logits / T)."""
    found = minimize_scalar(lambda log_t: nll(y, softmax(logits / np.exp(log_t))),
                            bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def calibrate(model, y_val: np.ndarray, val_images) -> dict:
    """Fit T on the validation images' logits and fold it into ``model``'s output layer;
    returns calibration.json's record (T and the validation ECE and log loss before and after)."""
    logits = logits_of(model, val_images)
    t = fit_temperature(y_val, logits)
    layer = model.get_layer(OUTPUT_LAYER)
    layer.set_weights([w / t for w in layer.get_weights()])
    before, after = softmax(logits), softmax(logits / t)
    return {"method": "temperature", "temperature": t, "fitted_on": "val", "n": int(len(y_val)),
            "val_loss_uncalibrated": nll(y_val, before), "val_loss": nll(y_val, after),
            "val_ece_uncalibrated": expected_calibration_error(y_val, before),
            "val_ece": expected_calibration_error(y_val, after)}
