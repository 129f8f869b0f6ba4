"""The pictures: learning curves and the confusion matrix, as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from imgclf.runs import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_curves(history: pd.DataFrame, path: Path, title: str = "", best_epoch: int | None = None) -> None:
    """Loss and accuracy against epoch, train and validation side by side; a dashed line
    marks the best epoch, whose weights the run saved."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for col, style in ((metric, "-o"), (f"val_{metric}", "-s")):
            if col in history:
                label = "val" if col.startswith("val_") else "train"
                ax.plot(history["epoch"], history[col], style, ms=3, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("loss")
    axes[1].set_title("accuracy")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """Counts, shaded by the row-normalized share, class names on both axes."""
    n = len(class_names)
    side = max(4.0, min(0.6 * n + 2, 20.0))
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), class_names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    _save(fig, path)
