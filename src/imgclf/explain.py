"""`imgclf explain`: where a run's model looks in each image of a file, folder or CSV (Grad-CAM).

For every image: ``<name>.png``, the heat map laid over the image at the image's own size (with
``--top-k`` above 1, the k overlays side by side, titled), and ``<name>.npy``, the heat map
itself at the image's size (float32 in 0..1; k x H x W with --top-k above 1); names keep the
input's subfolders. explain.csv lists each image's classes and probabilities; contact_sheet.png
shows the first images' overlays at a glance.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from imgclf.data.decode import decode_file, decode_image
from imgclf.data.pipeline import model_input
from imgclf.data.scan import printable, refuse, why_unreadable
from imgclf.errors import ConfigError, ModelError, did_you_mean
from imgclf.exported import is_exported
from imgclf.gradcam import GradCam, resize_map
from imgclf.predict import list_inputs, load_predictor
from imgclf.reports.cams import contact_sheet, enlarged, overlay
from imgclf.reports.plots import plot_image_grid
from imgclf.runs import atomic_path, ensure_writable, new_run_dir

SHEET_CELLS = 48  # overlays on the contact sheet
BATCH = 16
SMALL = 64  # a smaller image's overlay PNG is scaled up (nearest) by a whole factor toward this side


@dataclass
class Explained:
    total: int
    failed: int
    out: Path


def explain(model_or_run, input_path, *, class_name: str | None = None, top_k: int | None = None,
            out: str | Path | None = None, unsafe: bool = False, warn=print) -> Explained:
    """Grad-CAM of every image under ``input_path`` for its predicted class, its ``top_k``
    classes, or ``class_name``; files go to ``out`` (default: a new folder under
    RUN_DIR/explain/). Returns the counts and the folder."""
    source = Path(model_or_run)
    if is_exported(source):
        raise ModelError(f"explain needs the Keras model (gradients): pass the run directory or its "
                         f"model.keras, not an export ({source})")
    if class_name is not None and top_k is not None:
        raise ConfigError("pass --class or --top-k, not both")
    pred = load_predictor(source, unsafe=unsafe)
    names = pred.class_names
    if class_name is not None and class_name not in names:
        raise ConfigError(f"--class {class_name} is not one of the model's classes"
                          f"{did_you_mean(class_name, names)} (they are: {', '.join(names)})")
    k = 1 if top_k is None else top_k
    if not 1 <= k <= len(names):
        raise ConfigError(f"--top-k must be between 1 and {len(names)} (the model's classes). "
                          f"Received: top_k={k}")
    files, base = list_inputs(input_path)
    cam = GradCam(pred.model)  # refuses a model without a convolution before any folder is made
    folder = _out_folder(source, Path(input_path), out)
    fixed = None if class_name is None else names.index(class_name)
    sheet: list = []
    failed = 0
    with atomic_path(folder / "explain.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh, lineterminator="\n")
        rows.writerow(["file", "rank", "class", "prob", "png", "npy", "error"])
        for start in range(0, len(files), BATCH):
            batch = files[start:start + BATCH]
            loaded = [(f, _load(f, pred.image_size)) for f in batch]
            for f, why in ((f, why) for f, (_, _, why) in loaded if why):
                failed += 1
                warn(f"warning: {printable(_rel(f, base))}: {why}")
                rows.writerow([_rel(f, base), "", "", "", "", "", why])
            good = [(f, full, x) for f, (full, x, why) in loaded if not why]
            if good:
                _explain_batch(cam, pred, good, base, folder, fixed, k, rows, sheet)
    if sheet:
        images, titles = zip(*sheet[:SHEET_CELLS])
        more = f" (the first {SHEET_CELLS} of {len(sheet)})" if len(sheet) > SHEET_CELLS else ""
        contact_sheet(list(images), list(titles), folder / "contact_sheet.png",
                      title=f"Grad-CAM, {source.name}{more}")
    return Explained(total=len(files), failed=failed, out=folder)


def _out_folder(source: Path, input_path: Path, out) -> Path:
    if out is not None:
        out = ensure_writable(Path(out))
        out.mkdir(parents=True, exist_ok=True)
        return out
    parent = source if source.is_dir() else source.parent
    return new_run_dir(parent / "explain", input_path.stem or "input")


def _load(path: Path, size: tuple[int, int]):
    """(the image as it is, uint8; the model's input at ``size``; "" or why it cannot be read)."""
    why = refuse(path)
    if why:
        return None, None, why
    try:
        full = decode_file(tf.constant(str(path)))
        x = decode_image(tf.constant(str(path)), size)
    except tf.errors.OpError:
        return None, None, why_unreadable(path)
    return full.numpy(), x, ""


def _explain_batch(cam: GradCam, pred, good: list, base: Path, folder: Path, fixed: int | None,
                   k: int, rows, sheet: list) -> None:
    inputs = model_input(tf.stack([x for _, _, x in good]), pred.image_size, 3, pred.channels)
    predicted, probs = cam.maps(inputs)  # the predicted class's maps, and the probabilities
    if fixed is not None:
        ranked = np.full((len(good), 1), fixed)
    else:
        ranked = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    maps = [predicted if fixed is None and r == 0 else cam.maps(inputs, ranked[:, r])[0]
            for r in range(ranked.shape[1])]
    names = pred.class_names
    for i, (f, full, _) in enumerate(good):
        rel = _rel(f, base)
        stem = folder / Path(rel).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        heats = np.stack([resize_map(m[i], full.shape[:2]) for m in maps])
        big = enlarged(full, SMALL)
        shown = [overlay(big, resize_map(m[i], big.shape[:2])) for m in maps]
        labels = [f"{names[c]} ({probs[i, c]:.2f})" for c in ranked[i]]
        png, npy = stem.with_suffix(".png"), stem.with_suffix(".npy")
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, heats[0] if len(heats) == 1 else heats)
        if len(shown) == 1:
            with atomic_path(png) as tmp:
                Image.fromarray(shown[0]).save(tmp, format="PNG")
        else:
            plot_image_grid(shown, [f"{n}. {t}" for n, t in enumerate(labels, 1)], png,
                            title=printable(rel), cols=len(shown), cell=max(big.shape[:2]))
        for rank, c in enumerate(ranked[i], 1):
            rows.writerow([rel, rank, names[c], f"{probs[i, c]:.6g}", png.relative_to(folder).as_posix(),
                           npy.relative_to(folder).as_posix(), ""])
        sheet += [(img, f"{printable(Path(rel).name)}\n{t}") for img, t in zip(shown, labels)]


def _rel(file: Path, base: Path) -> str:
    return file.relative_to(base).as_posix() if file.is_relative_to(base) else file.name


def summary_line(s: Explained) -> str:
    fails = f", {s.failed} unreadable (listed in explain.csv)" if s.failed else ""
    return f"explained {s.total - s.failed} of {s.total} image(s){fails}"
