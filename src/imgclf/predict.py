"""`imgclf predict`: the top-k classes of every image in a file or folder, streamed.

Files are decoded, resized and converted exactly as in training (data/pipeline.py), in
parallel batches, and each row is written as soon as its batch is done, so memory stays flat
however many files there are. A file that does not decode gets a row with its error and a
warning; the rest go on.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from imgclf.data.pipeline import _to_channels, decode_image
from imgclf.data.scan import GRAY_MODES, find_images, open_quietly, printable, refuse, why_unreadable
from imgclf.data.tables import TABLES, read_table
from imgclf.errors import ConfigError, DataError, ModelError
from imgclf.exported import is_exported, open_exported
from imgclf.inference import batch_probs, check_tta, load_model
from imgclf.runs import atomic_path, ensure_writable, read_json
from imgclf.saved import open_run

DEFAULT_TOP_K = 3
FORMATS = (".csv", ".json")


@dataclass
class Predictor:
    model: object
    class_names: list[str]
    image_size: tuple[int, int]
    channels: int


def load_predictor(model_or_run: str | Path, unsafe: bool = False) -> Predictor:
    """A run directory (its model.keras, classes.json and config.yaml's input size), a .keras
    file or an export of `imgclf export` (a SavedModel folder, .tflite, .onnx): its own input
    shape, and classes.json beside it if there is one."""
    path = Path(model_or_run)
    if is_exported(path):
        model = open_exported(path)
        size, channels, names = _input_of(model, path), int(model.input_shape[3]), _names_beside(path)
    elif path.is_dir():
        run = open_run(path)
        model = load_model(path / "model.keras", unsafe=unsafe)
        d = run.cfg.data
        size, channels, names = tuple(d.image_size), d.channels, run.class_names
    elif path.suffix == ".keras":
        model = load_model(path, unsafe=unsafe)
        size, channels, names = _input_of(model, path), int(model.input_shape[3]), _names_beside(path)
    elif path.exists():
        raise ModelError(f"expected a run directory, a .keras model file or an export (a SavedModel "
                         f"folder, .tflite, .onnx). Received: {path}")
    else:
        raise ModelError(f"no such run directory or model file: {path}")
    units = int(model.output_shape[-1])
    names = names or [str(i) for i in range(units)]
    if len(names) != units:
        raise ModelError(f"{path}: the model has {units} outputs but {len(names)} class names")
    if channels not in (1, 3):
        raise ModelError(f"{path}: the model takes {channels} channels; images give 1 or 3")
    return Predictor(model, list(names), size, channels)


def _input_of(model, path: Path) -> tuple[int, int]:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or None in shape[1:]:
        raise ModelError(f"{path}: expected a fixed image input (H, W, C), got {shape}")
    return int(shape[1]), int(shape[2])


def _names_beside(path: Path) -> list[str] | None:
    classes = path.parent / "classes.json"
    return read_json(classes) if classes.exists() else None


def list_inputs(input_path: str | Path) -> tuple[list[Path], Path]:
    """(files in sorted order, or a CSV's in its order; the folder their paths are reported from)."""
    path = Path(input_path).expanduser()
    if path.is_file() and path.suffix.lower() in TABLES:
        return read_table(path, labelled=False).files, path.parent.resolve()
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        files = find_images(path)
        if not files:
            raise DataError(f"no image files (.jpg .jpeg .png .bmp .gif .webp) under {path}")
        return files, path
    raise DataError(f"input not found: {path}")


def _name(file: Path, base: Path) -> str:
    """A row's name for ``file``: relative to ``base``, or whole where it lies elsewhere (a CSV's
    absolute path)."""
    return file.relative_to(base).as_posix() if file.is_relative_to(base) else file.as_posix()


class _Rows:
    """Rows out as CSV or JSON (a list of objects), one at a time."""

    def __init__(self, fh, fmt: str, k: int):
        self.fh, self.fmt, self.k, self.count = fh, fmt, k, 0
        if fmt == ".csv":
            self.writer = csv.writer(fh, lineterminator="\n")
            head = ["file"]
            for i in range(1, k + 1):
                head += [f"top{i}_label", f"top{i}_prob"]
            self.writer.writerow(head + ["error"])
        else:
            fh.write("[")

    def write(self, file: str, top: list[tuple[str, float]], error: str = "") -> None:
        if self.fmt == ".csv":
            cells = [file]
            for label, prob in top:
                cells += [label, f"{prob:.6g}"]
            cells += [""] * (2 * (self.k - len(top)))
            self.writer.writerow(cells + [error])
        else:
            obj = {"file": file, "top": [{"label": lab, "prob": round(p, 6)} for lab, p in top],
                   "error": error or None}
            self.fh.write(("," if self.count else "") + "\n  " + json.dumps(obj))
        self.count += 1

    def close(self) -> None:
        if self.fmt == ".json":
            self.fh.write("\n]\n" if self.count else "]\n")


@dataclass
class PredictSummary:
    total: int
    failed: int
    output: Path | None


def predict(model_or_run, input_path, *, top_k: int | None = None, output: str | Path | None = None,
            batch_size: int = 64, tta: str | None = None, unsafe: bool = False, warn=print,
            progress=None, stdout=None) -> PredictSummary:
    """Write one row per file (sorted) with the top-k classes, or its error; ``progress(done,
    total)`` is called as the work starts and after each batch."""
    check_tta(tta)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1. Received: batch_size={batch_size}")
    fmt = ".csv"
    if output is not None:
        output = Path(output)
        fmt = output.suffix.lower()
        if fmt not in FORMATS:
            raise ConfigError(f"--output must end in .csv or .json. Received: output={output}")
        if not output.parent.is_dir():
            raise DataError(f"--output: folder not found: {output.parent}")
        ensure_writable(output.parent)
    pred = load_predictor(model_or_run, unsafe=unsafe)
    files, base = list_inputs(input_path)
    n_classes = len(pred.class_names)
    if top_k is None:
        top_k = min(DEFAULT_TOP_K, n_classes)
    if not 1 <= top_k <= n_classes:
        raise ConfigError(f"--top-k must be between 1 and {n_classes} (the model's classes). "
                          f"Received: top_k={top_k}")

    far = far_from_training(pred, files)
    if far:
        warn(f"warning: {far}")
    if output is None:
        failed = _run(pred, files, base, top_k, batch_size, tta, _Rows(stdout or sys.stdout, fmt, top_k),
                      warn, progress)
    else:
        with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            failed = _run(pred, files, base, top_k, batch_size, tta, _Rows(fh, fmt, top_k), warn, progress)
    return PredictSummary(total=len(files), failed=failed, output=output)


FAR_LARGER = 8  # an image this many times the model's input side: far from what it was trained on


def far_from_training(pred: Predictor, files: list[Path]) -> str | None:
    """One line when the first readable input is far from what the model takes: colour into a
    grayscale model, or many times larger (a photo given to an 8x8 digits model)."""
    for f in files[:5]:
        try:
            with open_quietly(f) as im:
                (w, h), gray = im.size, im.mode in GRAY_MODES
        except Exception:  # unreadable: its row says why
            continue
        side = max(pred.image_size)
        shape = "x".join(str(s) for s in (*pred.image_size, pred.channels))
        if (pred.channels == 1 and not gray) or max(w, h) >= FAR_LARGER * side:
            return (f"the model takes {shape} images; {f.name} is {w}x{h}{'' if gray else ' in colour'}: "
                    f"each image is shrunk{' and turned grey' if pred.channels == 1 and not gray else ''} "
                    "to that, so predictions on such images mean little")
        return None
    return None


def _run(pred: Predictor, files: list[Path], base: Path, k: int, batch_size: int, tta: str | None,
         rows: _Rows, warn, progress) -> int:
    names = pred.class_names
    failed = 0
    for rel, probs, why in iter_probs(pred, files, base, batch_size, tta, warn, progress):
        if probs is None:
            rows.write(rel, [], why)
            failed += 1
            continue
        order = np.argsort(-probs, kind="stable")[:k]
        rows.write(rel, [(names[c], float(probs[c])) for c in order])
    rows.close()
    return failed


def iter_probs(pred: Predictor, files: list[Path], base: Path, batch_size: int = 64, tta: str | None = None,
               warn=print, progress=None):
    """(path relative to ``base``, its class probabilities or None, why it failed or "") for
    every file in order, streamed batch by batch; ``progress(done, total)`` after each batch."""
    size, channels = pred.image_size, pred.channels

    def load(i, p):
        img = tf.cast(decode_image(p, size), tf.float32)
        return i, _to_channels(img, 3, channels)

    # a file scan.refuse() turns down (too many pixels, a name that is not UTF-8) is not
    # decoded: it gets an error row
    todo = [i for i, f in enumerate(files) if refuse(f) is None]
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(todo, tf.int32),
                                             tf.constant([str(files[i]) for i in todo], tf.string)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # a file that fails to decode drops out here; its index is missing from the batches
    ds = ds.ignore_errors().batch(batch_size).prefetch(2)
    next_i = 0
    if progress:
        progress(0, len(files))

    def failures(stop: int):
        for j in range(next_i, stop):
            why = why_unreadable(files[j])
            rel = printable(_name(files[j], base))
            warn(f"warning: {rel}: {why}")
            yield rel, None, why

    for idx, images in ds:
        probs = batch_probs(pred.model, images, tta)
        for row, i in enumerate(idx.numpy()):
            yield from failures(int(i))
            yield _name(files[i], base), probs[row], ""
            next_i = int(i) + 1
        if progress:
            progress(next_i, len(files))
    yield from failures(len(files))
    if progress:
        progress(len(files), len(files))


def summary_line(s: PredictSummary) -> str:
    where = f" -> {s.output}" if s.output else ""
    fails = f", {s.failed} unreadable (error rows)" if s.failed else ""
    return f"predicted {s.total - s.failed} of {s.total} file(s){fails}{where}"
