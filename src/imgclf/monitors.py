"""The metrics a run can watch, and which way is better for each: one rule for early
stopping, the best-epoch checkpoint, the plateau schedule, batch growth and tune's objective."""

from __future__ import annotations

MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")


def direction(metric: str, mode: str = "auto") -> str:
    """``"max"`` or ``"min"``: ``mode`` when it says, else max for accuracy- and AUC-like
    metrics, min for the rest (losses)."""
    if mode in ("min", "max"):
        return mode
    return "max" if "acc" in metric or "auc" in metric else "min"
