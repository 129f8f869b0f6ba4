"""`imgclf lr-find`: the learning-rate range test (Smith 2015; fastai's lr_find).

The config's model, optimizer and loss train on the training split while the rate rises
exponentially from ``start_lr`` to ``end_lr``, one step at a time; the loss per step is
smoothed, the test stops once it diverges, and the suggestion is the rate where the
smoothed loss falls fastest, before its minimum. Nothing of the model is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imgclf.config import Config
from imgclf.errors import ConfigError
from imgclf.reports.plots import plot_lr_find
from imgclf.runs import Manifest, atomic_path, default_run_name, new_run_dir, write_json
from imgclf.training.compiling import compile_model
from imgclf.training.setup import (
    build_model,
    class_weight_map,
    datasets,
    prepare,
    seed_everything,
    steps_per_epoch,
)

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> float | None:
    """The rate where the smoothed loss falls fastest against log(rate), before its minimum;
    None when it never falls. The slope spans a window of steps (1/20 of the test) and the
    first steps are skipped, so the noise of the first few losses cannot win."""
    n = len(smoothed)
    w = max(2, n // 20)
    lo = int(np.argmin(smoothed))
    skip = max(w, n // 20)
    if lo - skip < w:
        return None
    idx = np.arange(skip, lo + 1)
    left, right = np.maximum(idx - w, 0), np.minimum(idx + w, n - 1)
    log_lr = np.log(lrs)
    slopes = (smoothed[right] - smoothed[left]) / (log_lr[right] - log_lr[left])
    if slopes.min() >= 0:
        return None
    return float(lrs[idx[int(np.argmin(slopes))]])


def lr_find(cfg: Config, out: str | None = None, *, start_lr: float = 1e-7, end_lr: float = 10.0,
            steps: int = 200, echo=print) -> tuple[Path, float | None]:
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < --start-lr < --end-lr, got {start_lr:g} and {end_lr:g}")
    if steps < 10:
        raise ConfigError(f"lr-find: --steps must be at least 10, got {steps}")
    prep = prepare(cfg)
    cfg = prep.cfg
    seed_everything(cfg)
    model = build_model(prep)
    const = cfg.train.model_copy(deep=True)
    const.schedule = type(const.schedule)()  # constant: the test drives the rate itself
    compile_model(model, const, steps_per_epoch(prep))
    run_dir = new_run_dir(out or cfg.output.dir, f"lr-find-{default_run_name(cfg)}")
    manifest = Manifest(run_dir, "lr-find")
    with manifest.closing():
        return run_dir, _run(run_dir, prep, model, start_lr, end_lr, steps, manifest, echo)


def _run(run_dir, prep, model, start_lr, end_lr, steps, manifest, echo) -> float | None:
    data = datasets(prep, names=("train",))["train"]
    class_weight = class_weight_map(prep)
    rates = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    rows, avg, best = [], 0.0, np.inf
    echo(f"lr-find: {steps} steps from {start_lr:g} to {end_lr:g} on {len(prep.bundle.splits['train'])} "
         f"training images")
    for i, (batch, lr) in enumerate(zip(data.repeat(), rates)):
        model.optimizer.learning_rate = float(lr)
        loss = float(model.train_on_batch(*batch, class_weight=class_weight, return_dict=True)["loss"])
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        smoothed = avg / (1 - SMOOTHING ** (i + 1))
        rows.append({"step": i + 1, "lr": float(lr), "loss": loss, "smoothed_loss": smoothed})
        if not np.isfinite(smoothed) or (i > 10 and smoothed > DIVERGED * best):
            break
        best = min(best, smoothed)
    df = pd.DataFrame(rows)
    finite = df[np.isfinite(df["smoothed_loss"])]
    suggestion = suggest(finite["lr"].to_numpy(), finite["smoothed_loss"].to_numpy())
    with atomic_path(run_dir / "lr_find.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.8g")
    plot_lr_find(finite, suggestion, run_dir / "lr_find.png")
    write_json(run_dir / "lr_find.json", {"suggested_lr": suggestion, "steps": len(df),
                                          "start_lr": start_lr, "end_lr": end_lr})
    manifest.close("finished", suggested_lr=suggestion)
    if suggestion is None and len(df) < steps and len(finite) <= 10:
        echo(f"the loss diverged within {len(df)} steps: try a smaller --start-lr")
    elif suggestion is None:
        echo("the loss never fell: try a larger --end-lr or more --steps")
    else:
        echo(f"suggested lr: {suggestion:.3g} (steepest fall of the smoothed loss)")
        echo(f"  --set train.optimizer.lr={suggestion:.3g}")
    return suggestion
