"""A run directory as the commands after training see it: its saved model, resolved config,
class names and status. Evaluate, predict and compare read runs only through here."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from imgclf.errors import ConfigError, DataError, ModelError, first_line
from imgclf.runs import MANIFEST, live_status, read_json, read_manifest


@dataclass
class SavedRun:
    path: Path
    manifest: dict  # run.json ({} when absent)
    class_names: list[str]
    cfg: object | None  # the resolved Config (None for an ensemble, which has no config.yaml)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return live_status(self.manifest)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def unfinished_note(self) -> str | None:
        """One line for a run that is not (or not known to be) finished, else None."""
        if self.finished:
            return None
        epoch = self.manifest.get("best_epoch")
        saved = f"the model it saved last (best epoch {epoch})" if epoch else "the model it saved last"
        if self.status == "unknown":
            return f"run {self.name} has no run.json: its status is unknown; using {saved}"
        return f"run {self.name} is {self.status}, not finished: using {saved}"


def open_run(path: str | Path, need_model: bool = True) -> SavedRun:
    """Check that ``path`` is a run directory and read its small files (not the model)."""
    from imgclf.config import load_config

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"run directory not found: {path}")
    manifest = read_manifest(path / MANIFEST) if (path / MANIFEST).exists() else {}
    if not (path / "classes.json").exists():
        raise DataError(f"{path} is not a run directory: it has no classes.json")
    if need_model and not (path / "model.keras").exists():
        status = manifest.get("status", "unknown")
        raise ModelError(f"{path} has no model.keras (run status: {status}): nothing to evaluate")
    cfg = None
    if (path / "config.yaml").exists():
        try:
            cfg = load_config(path / "config.yaml")
        except ConfigError as exc:
            raise ConfigError(f"{path}: the saved config no longer loads: {exc}") from None
    elif need_model:
        raise DataError(f"{path} is not a run directory: it has no config.yaml")
    names = read_json(path / "classes.json")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path / 'classes.json'}: expected a list of at least two class names")
    return SavedRun(path=path, manifest=manifest, class_names=names, cfg=cfg)


def load_model(path: str | Path, unsafe: bool = False):
    """A saved .keras model, without its optimizer. Keras' safe mode refuses a file that holds
    Python code (a Lambda layer's bytecode) unless ``unsafe`` (the CLI's --unsafe) says the
    file is trusted."""
    import keras

    import imgclf.layers  # noqa: F401  (registers our layers: augmentation and CaffePreprocess)
    import imgclf.training.optimizers  # noqa: F401  (and optimizers and schedules, for compile=True users)
    import imgclf.training.schedules  # noqa: F401

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ModelError(f"cannot load {path}: not a .keras file (a zip archive)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        if "safe_mode" in str(exc) or "unsafe_deserialization" in str(exc):
            raise ModelError(f"refusing to load {path}: it holds Python code (a Lambda layer) that would "
                             "run as it loads; if you trust where it came from, pass --unsafe") from None
        raise ModelError(f"cannot load {path}: {first_line(exc)[:300]}") from None
