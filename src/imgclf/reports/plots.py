"""The pictures: learning curves and the confusion matrix, as PNG files."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from imgclf.runs import atomic_path  # noqa: E402

GRID_CELL = 200  # pixels: the longest side of an image in plot_image_grid


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_curves(history: pd.DataFrame, path: Path, title: str = "", best_epoch: int | None = None) -> None:
    """Loss and accuracy against epoch, train and validation side by side; a dashed line
    marks the best epoch, whose weights the run saved, and a dotted one the start of phase 2
    in a two-phase run (a ``phase`` column in the history)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for col, style in ((metric, "-o"), (f"val_{metric}", "-s")):
            if col in history:
                label = "val" if col.startswith("val_") else "train"
                ax.plot(history["epoch"], history[col], style, ms=3, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        if "phase" in history and history["phase"].nunique() > 1:  # train.phases: where phase 2 starts
            start = history.loc[history["phase"] > history["phase"].min(), "epoch"].min()
            ax.axvline(start - 0.5, color="tab:red", ls=":", lw=1.5, label=f"phase 2 (epoch {start})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def plot_roc(points: dict, class_names: list[str], path: Path, title: str) -> None:
    """One-vs-rest ROC curve per class (the ten with the lowest AUC when there are more,
    the ones worth looking at) with each class's AUC in the legend."""
    fig, ax = plt.subplots(figsize=(6, 5.5))
    if len(class_names) == 2 and 1 in points:  # two classes: one curve says it all
        points = {1: points[1]}
    shown = sorted(points, key=lambda c: points[c][2])[:10]
    for c in sorted(shown):
        fpr, tpr, auc = points[c]
        ax.plot(fpr, tpr, lw=1.5, label=f"{class_names[c]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    hidden = len(points) - len(shown)
    ax.set_title(title + (f"\n(the 10 classes with the lowest AUC; {hidden} more)" if hidden else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def plot_reliability(tables: dict, path: Path) -> None:
    """The reliability diagram of each split ({split: (reliability table, ece)}): accuracy per
    confidence bin against the diagonal of perfect calibration, and the bins' item counts."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 5), squeeze=False)
    for ax, (split, (table, ece)) in zip(axes[0], tables.items()):
        full = table[table.n > 0]
        width = float(table.hi.iloc[0] - table.lo.iloc[0])
        ax.bar(full.lo, full.accuracy, width=width, align="edge", color="#4c72b0", edgecolor="white",
               label="accuracy in the bin")
        ax.plot(full.lo + width / 2, full.confidence, "o", color="#dd8452", ms=5,
                label="mean confidence in the bin")
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
        for _, row in full.iterrows():
            ax.text(row.lo + width / 2, 0.02, str(int(row.n)), ha="center", fontsize=7, color="white")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("top-1 confidence (bins; the count of items at the foot)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{split} split: ECE {ece:.4f} (n={int(table.n.sum())})")
        ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def plot_image_grid(images: list[np.ndarray | None], titles: list[str], path: Path, title: str = "",
                    cols: int = 6, colors: list[str] | None = None, cell: int = 0) -> None:
    """Images (uint8, H x W x 1|3) in a grid of ``cell``-pixel cells (default GRID_CELL), each
    under its title (a None leaves its cell empty); an empty list draws a note. Composed with
    PIL: matplotlib's layout of dozens of titled axes took seconds a grid, and every run's
    report draws two."""
    cols = max(1, min(cols, len(images)))
    rows = max(1, -(-len(images) // cols))
    font, big = _font(13), _font(17)
    lines = max((t.count("\n") + 1 for t in titles if t), default=0)
    cell = cell or GRID_CELL
    cell_w, cell_h = cell + 12, cell + 17 * lines + 14
    head = 34 if title else 6
    sheet = Image.new("RGB", (cols * cell_w + 8, head + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((sheet.width // 2, 8), _fitted(draw, title, big, sheet.width - 8), fill="black",
                  font=big, anchor="ma")
    if not images:
        draw.text((sheet.width // 2, head + cell_h // 2), "nothing to show", fill="black", font=font,
                  anchor="mm")
    for i, (img, text) in enumerate(zip(images, titles)):
        if img is None:
            continue
        r, c = divmod(i, cols)
        x0, y0 = 4 + c * cell_w, head + r * cell_h
        for k, line in enumerate(text.split("\n") if text else []):
            draw.text((x0 + cell_w // 2, y0 + 17 * k), _fitted(draw, line, font, cell_w - 4),
                      fill=colors[i] if colors else "black", font=font, anchor="ma")
        tile = _tile(img, cell)
        sheet.paste(tile, (x0 + (cell_w - tile.width) // 2, y0 + 17 * lines + 4))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", compress_level=3)


def _tile(img: np.ndarray, cell: int) -> Image.Image:
    """``img`` scaled to fit a grid cell: blocks (nearest) for small arrays such as 8x8 digits."""
    img = np.asarray(img)
    im = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img).convert("RGB")
    if max(im.size) == cell:
        return im
    scale = cell / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    small = max(im.size) < 64
    return im.resize(size, Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)


@cache
def _font(size: int):
    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:
        return ImageFont.load_default()


def _fitted(draw, text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def plot_val_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Validation loss and accuracy of several runs on the same axes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, history in histories.items():
        for ax, col in zip(axes, ("val_loss", "val_accuracy")):
            if col in history and len(history):
                ax.plot(history["epoch"], history[col], "-o", ms=3, label=name)
    for ax, col in zip(axes, ("val_loss", "val_accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(col)
        ax.set_title(col)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


def plot_trials(trials: pd.DataFrame, keys: list[str], objective: str, direction: str, path: Path,
                log_keys=(), title: str = "") -> None:
    """A sweep at a glance: the objective of each trial in order (the best starred, failed
    trials as red crosses along the bottom), then one panel per tuned key (a column of
    ``trials``) with the objective against the key's value, on a log axis for ``log_keys``."""
    done = trials[trials["status"] == "completed"]
    failed = trials[trials["status"] != "completed"]
    n = 1 + len(keys)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    values = done[objective].astype(float)
    low = values.min() if len(values) else 0.0
    best = None
    if len(values):
        best = values.idxmax() if direction == "max" else values.idxmin()
    order = list(range(len(trials)))
    position = dict(zip(trials.index, order))
    ax = axes.flat[0]
    ax.plot([position[i] for i in done.index], values, "o", color="tab:blue", label="completed")
    if len(failed):
        ax.plot([position[i] for i in failed.index], [low] * len(failed), "x", color="tab:red", ms=8,
                label="failed")
    if best is not None:
        ax.plot([position[best]], [values[best]], "*", color="gold", mec="black", ms=14,
                label=f"best (trial {trials.loc[best, 'trial']})")
    ax.set_xticks(order, [str(t) for t in trials["trial"]], rotation=90 if len(order) > 12 else 0)
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} per trial ({direction})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for ax, key in zip(axes.flat[1:], keys):
        column = done[key]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric:
            ax.plot(column.astype(float), values, "o", color="tab:blue")
            if key in log_keys:
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in trials[key]})
            ax.plot([labels.index(str(v)) for v in column], values, "o", color="tab:blue")
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
        if best is not None:
            x = done.loc[best, key]
            ax.plot([float(x) if numeric else labels.index(str(x))], [values[best]], "*", color="gold",
                    mec="black", ms=14)
        ax.set_xlabel(key)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_lr_find(df: pd.DataFrame, suggestion: float | None, path: Path) -> None:
    """The learning-rate range test: the loss per step and smoothed, against the rate."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(df["lr"], df["loss"], color="0.75", lw=0.8, label="loss per step")
    ax.plot(df["lr"], df["smoothed_loss"], color="C0", lw=2, label="smoothed")
    if suggestion is not None:
        ax.axvline(suggestion, color="C3", ls="--", label=f"suggested {suggestion:.3g}")
    ax.set_xscale("log")
    low, high = df["smoothed_loss"].min(), df["smoothed_loss"].iloc[: max(len(df) // 10, 1)].max()
    ax.set_ylim(low - 0.05 * abs(low), max(high, low) * 1.5 + 1e-9)
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title="learning-rate range test")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
