"""The images behind rows of predictions.csv, for the misclassified grid.

A row names its image by ``file`` (a path relative to the data folder) or by ``index`` (a
position in an array source, which loads again from the run's config: sources are seeded,
so the split is the same one). Images come back as uint8 H x W x 1|3 arrays, shrunk for display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from imgclf.config import Config
from imgclf.data import load_data
from imgclf.data.scan import open_quietly
from imgclf.data.sources import files_root

THUMB = 224


def _thumb(path: Path, side: int = THUMB) -> np.ndarray:
    try:
        with open_quietly(path) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
            im = im.convert("RGB")
            im.thumbnail((side, side))
            return np.asarray(im)
    except (OSError, ValueError, Image.DecompressionBombError):  # PIL may refuse what TensorFlow read
        return np.full((side, side, 3), 255, dtype=np.uint8)


def image_paths(cfg: Config, ids: list, root: str | Path | None = None) -> list[Path]:
    """The files of ``ids`` (predictions.csv's ``file``): under ``root``, or where the config's
    source reads them (data/sources.files_root); as they are where there is no such folder."""
    base = Path(root).expanduser() if root is not None else files_root(cfg.data)
    if base is None:
        return [Path(str(i)) for i in ids]
    if base.is_file():  # a csv source: its paths are relative to the file's folder
        base = base.parent
    return [base / str(i) for i in ids]


def load_images(cfg: Config, split: str, id_column: str, ids: list,
                root: str | Path | None = None, size: int = THUMB) -> list[np.ndarray]:
    """The images of ``ids`` in ``split``: with ``id_column`` "file", files (image_paths)
    shrunk to fit ``size``; with "index", items of the config's array source as they are."""
    if id_column == "file":
        return [_thumb(p, size) for p in image_paths(cfg, ids, root)]
    part = load_data(cfg.data, cfg.seed).splits[split]
    where = {int(item): pos for pos, item in enumerate(part.ids)}
    return [part.x[where[int(i)]] for i in ids]
