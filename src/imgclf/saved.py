"""A run directory as the commands after training see it: its resolved config, class names
and status (the model itself loads through imgclf.inference). Evaluate and predict read runs
only through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgclf.config import load_config
from imgclf.errors import ConfigError, DataError, ModelError
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
