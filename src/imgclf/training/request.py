"""A request to train, checked before TensorFlow's slow import: the config, the output
folder, and a multi_worker run's TF_CONFIG. The command line and the Python API both start
here, so a bad request is the same one line from either, before any data loads."""

from __future__ import annotations

from pathlib import Path

from imgclf.config import Config, load_config
from imgclf.errors import ImgclfError
from imgclf.runs import ensure_writable
from imgclf.training.cluster import tf_config


def train_config(config=None, overrides: list[str] | None = None, out: str | Path | None = None) -> Config:
    """``config`` (YAML path(s) or mapping(s), layered on the defaults) with ``overrides``
    (``section.key=value``), its output folder (``out``, else output.dir) proven writable, and
    for train.strategy=multi_worker the cluster in TF_CONFIG."""
    cfg = load_config(config, overrides)
    ensure_writable(out or cfg.output.dir)
    if cfg.train.strategy == "multi_worker":
        tf_config()  # a missing or malformed TF_CONFIG is one line, before the import
    return cfg


def tune_config(config=None, overrides: list[str] | None = None, out: str | Path | None = None,
                directory: str | Path | None = None) -> Config:
    """A search's config, checked the same way: its tune directory goes under ``out`` (else
    output.dir), or is exactly ``directory``."""
    if out is not None and directory is not None:
        raise ImgclfError("give --out (a parent folder) or --dir (the exact directory), not both")
    cfg = load_config(config, overrides)
    ensure_writable(Path(directory).parent if directory else out or cfg.output.dir)
    return cfg

