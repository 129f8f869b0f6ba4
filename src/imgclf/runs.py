"""Run directories: a new one per run, atomic file writes, and the run.json manifest."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from imgclf import interrupts
from imgclf._version import __version__
from imgclf.errors import ConfigError, DataError, ImgclfError, first_line

MANIFEST = "run.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would have given; mkstemp makes 0600


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


# predictions.csv: one probability column per class, named by this prefix and the class;
# written by imgclf.inference, read by reports/
PROB_PREFIX = "prob_"


def prob_columns(class_names: list[str]) -> list[str]:
    return [f"{PROB_PREFIX}{c}" for c in class_names]


BAD_FILES = "bad_files.txt"


def write_bad_files(folder: Path, bad: list[tuple[str, str]]) -> Path | None:
    """``folder``/bad_files.txt: one ``path<TAB>reason`` line per skipped file or folder; none
    (and an old one removed, e.g. in a reused eval/NAME/) when nothing was skipped."""
    if not bad:
        (Path(folder) / BAD_FILES).unlink(missing_ok=True)
        return None
    write_text(Path(folder) / BAD_FILES, "".join(f"{p}\t{r}\n" for p, r in bad))
    return Path(folder) / BAD_FILES


def read_bad_files(folder: Path) -> list[tuple[str, str]]:
    """What ``write_bad_files`` wrote in ``folder`` ([] when nothing was skipped)."""
    path = Path(folder) / BAD_FILES
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(p, r) for p, _, r in (line.partition("\t") for line in lines) if p]


def read_json(path: str | Path):
    """A JSON file of ours; a damaged or unreadable one is a DataError (one line)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_manifest(path: str | Path) -> dict:
    """A run.json or tune.json: a JSON object, or a DataError (one line)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def ensure_writable(parent: str | Path) -> Path:
    """Prove that the output folder ``parent`` can be made and takes a file (permissions, a
    read-only mount, a file in the way), so a run fails here, before any data loads; nothing
    is left behind."""
    parent = Path(parent).expanduser()
    existing = parent
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as exc:  # a folder on the way that this user may not look into
        raise ImgclfError(f"cannot create output directory {parent}: {exc.strerror}") from None
    if not is_dir:
        raise ImgclfError(f"cannot create output directory {parent}: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing) as fh:
            fh.write(b"imgclf")
            fh.flush()
    except OSError as exc:
        what = "is not writable" if existing == parent else f"cannot be made in {existing}"
        raise ImgclfError(f"output directory {parent} {what}: {exc.strerror}") from None
    return parent


def default_run_name(cfg) -> str:
    """A run's name when ``output.name`` gives none: ``<model>-<data source>``."""
    return cfg.output.name or f"{cfg.model.name}-{cfg.data.source}"


def new_run_dir(parent: str | Path, name: str) -> Path:
    """Create ``parent/<YYYYmmdd-HHMMSS>-<name>``; never reuse an existing directory."""
    parent = ensure_writable(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImgclfError(f"cannot create output directory {parent}: {exc.strerror}") from None
    base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{_slug(name)}"
    for i in range(1, 1000):
        candidate = parent / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()  # atomic: fails if another run took the name
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise ImgclfError(f"cannot create run directory {candidate}: {exc.strerror}") from None
    raise ImgclfError(f"too many runs named {base} in {parent}")


def versions() -> dict:
    # whoever writes a manifest has imported TensorFlow already; importing it here, not at the
    # top, keeps this ground-floor module (and `imgclf --help`) free of it
    import keras
    import tensorflow as tf

    return {
        "imgclf": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn": onednn_enabled(),
    }


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels (None when this build cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


class Manifest:
    """run.json: status (running, finished, failed, interrupted), versions, timings.
    ``filename`` names another manifest (a tune directory's tune.json)."""

    def __init__(self, run_dir: Path, command: str, filename: str = MANIFEST):
        self.path = Path(run_dir) / filename
        self._t0 = time.time()
        self.data = {
            "status": "running",
            "command": command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "finished": None,
            "duration_s": None,
            "versions": versions(),
            **_owner(),
        }
        self.save()

    @classmethod
    def reopen(cls, run_dir: Path, filename: str = MANIFEST) -> Manifest:
        """The manifest of an unfinished run that is being resumed: status back to running."""
        self = cls.__new__(cls)
        self.path = Path(run_dir) / filename
        self.data = json.loads(self.path.read_text(encoding="utf-8"))
        # the clock restarts; duration_s adds up the sessions
        self._t0 = time.time() - float(self.data.get("duration_s") or 0.0)
        self.data["resumed"] = int(self.data.get("resumed", 0)) + 1
        self.update(status="running", finished=None, error=None, versions=versions(), **_owner())
        return self

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def close(self, status: str, **fields) -> None:
        self.update(
            status=status,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            duration_s=round(time.time() - self._t0, 3),
            **fields,
        )

    def save(self) -> None:
        write_json(self.path, self.data)

    @contextmanager
    def closing(self, on_interrupt=None):
        """The close-out of every command that keeps a manifest: Ctrl-C or SIGTERM marks it
        interrupted and calls ``on_interrupt()`` (which says how to go on), any other exception
        marks it failed with its first line; both go on up. Success is the caller's to close.
        A signal the watchdog has to act on (imgclf.interrupts) closes it the same way."""
        def interrupted():
            self.close("interrupted")
            if on_interrupt is not None:
                on_interrupt()

        try:
            with interrupts.on_forced_stop(interrupted):
                yield self
        except KeyboardInterrupt:
            interrupts.acted_on()
            interrupted()
            raise
        except BaseException as exc:
            self.close("failed", error=f"{type(exc).__name__}: {first_line(exc)}")
            raise


@contextmanager
def holding(path: str | Path, what: str = "run"):
    """An exclusive lock on the directory ``path`` (flock on the directory itself: no lock file)
    while this process works in it. A second imgclf process that wants it is refused at once;
    the lock goes when the process ends, however it ends (kill -9 included). Where the file
    system has no such locks (Windows, some network mounts) this does nothing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImgclfError(f"{path}: another imgclf process is working in this {what} right now; stop "
                              "it first (Ctrl-C) or let it finish") from None
        except OSError:
            pass  # no locks on this file system: go on without
        yield
    finally:
        os.close(fd)


def _owner() -> dict:
    """Which process writes a running run: how a reader tells a live run from a killed one."""
    return {"pid": os.getpid(), "pid_started": _started(os.getpid()), "host": socket.gethostname()}


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), telling it from a later
    process that reuses the number; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return started is None or _started(pid) in (None, started)


def live_status(manifest: dict) -> str:
    """A manifest's status as it stands now: a run marked running whose process is gone from
    this machine (killed, out of memory, the machine restarted) is ``interrupted``. A run
    started on another machine keeps its recorded status."""
    status = manifest.get("status", "unknown")
    if status == "running" and manifest.get("host") == socket.gethostname():
        pid = manifest.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and not _alive(pid, manifest.get("pid_started")):
            return "interrupted"
    return status


def running_elsewhere(manifest: dict) -> str | None:
    """One line if the run's own process is still at work on it (resuming it now would make
    two writers), else None."""
    if manifest.get("status") != "running" or live_status(manifest) != "running":
        return None
    host, pid = manifest.get("host"), manifest.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int):
        return None  # another machine's, or an old run.json without a pid: cannot tell; allow
    return f"process {pid} on this machine is still running it"


def refuse_if_running(manifest: dict, path: str | Path) -> None:
    """`--resume path` refused in one line while the process that wrote ``manifest`` still works on it."""
    busy = running_elsewhere(manifest)
    if busy:
        raise ConfigError(f"--resume {path}: {busy}; stop it first (Ctrl-C, or kill -INT "
                          f"{manifest['pid']}), or let it finish")
