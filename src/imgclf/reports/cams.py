"""Heat maps on images: Grad-CAM overlays, the report's "where the model looked" figure (for
each class its most confident right and wrong predictions), and contact sheets.

The maps themselves come from the model (imgclf.gradcam); here they are only chosen and drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

from imgclf.reports.plots import plot_image_grid

SHOWN = 224  # the longest side of an image in the figure, in pixels
MAX_CLASSES = 12  # more classes than this: the figure shows those with the lowest recall
COLORMAP = "jet"


@dataclass
class Case:
    row: int  # position in the split's rows
    true: int
    pred: int
    prob: float  # the predicted class's probability
    right: bool


def select_cases(y_true: np.ndarray, probs: np.ndarray, per_class: int,
                 max_classes: int = MAX_CLASSES) -> tuple[list[int], list[list[Case]]]:
    """(the classes shown, and for each: its ``per_class`` most confident right predictions, then
    its ``per_class`` most confidently wrong ones, i.e. images of the class taken for another).
    Past ``max_classes`` classes, those with the lowest recall are shown (ties: in order)."""
    y_pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    n_classes = probs.shape[1]
    present = [c for c in range(n_classes) if np.any(y_true == c)]
    if len(present) > max_classes:
        recall = {c: float(np.mean(y_pred[y_true == c] == c)) for c in present}
        present = sorted(sorted(present, key=lambda c: recall[c])[:max_classes])
    chosen = []
    for c in present:
        rows = []
        for right in (True, False):
            idx = np.flatnonzero((y_true == c) & ((y_pred == c) == right))
            idx = idx[np.argsort(-conf[idx], kind="stable")][:per_class]
            rows += [Case(int(i), c, int(y_pred[i]), float(conf[i]), right) for i in idx]
        chosen.append(rows)
    return present, chosen


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``heat`` (0..1, the image's height and width) in colour over ``image`` (uint8, 1 or 3
    channels): the colour's weight grows with the heat (to 0.6), so where the model did not look
    the photo shows as it is."""
    rgb = image if image.ndim == 3 and image.shape[-1] == 3 else \
        np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    heat = np.asarray(heat, np.float32)
    colour = matplotlib.colormaps[COLORMAP](heat, bytes=True)[..., :3].astype(np.float32)
    alpha = (0.6 * heat)[..., None]
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def enlarged(img: np.ndarray, side: int) -> np.ndarray:
    """A small image scaled up by a whole factor (nearest) toward ``side`` pixels, so an 8x8
    digit shows as blocks a heat map can be laid over; larger images as they are."""
    factor = max(1, side // max(img.shape[:2]))
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) if factor > 1 else img


def plot_cases(images: list[np.ndarray], titles: list[str], right: list[bool], per_row: int,
               path: Path, title: str) -> None:
    """The overlays in rows of ``per_row`` (one class a row), titles green where right, red where wrong."""
    colors = ["#1a7f37" if r else "#c0392b" for r in right]
    plot_image_grid(images, titles, path, title=title, cols=per_row, colors=colors)


def contact_sheet(images: list[np.ndarray], titles: list[str], path: Path, title: str = "") -> None:
    plot_image_grid(images, titles, path, title=title, cols=min(6, max(1, len(images))))
