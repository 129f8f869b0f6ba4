"""`imgclf export`: a run's model as a SavedModel, a TFLite or an ONNX file, each checked
against model.keras on the run's own images before it is kept.

Every format comes from Keras' own `model.export` (tf_saved_model, litert, onnx through
tf2onnx) of the run's inference model: no augmentation layers, the preprocessing inside, so
an export takes raw 0..255 RGB pixels at the run's input size exactly like model.keras.
Quantization is post-training: float16 halves the weights; int8 is calibrated on the run's
own training images (TFLite's converter, ONNX Runtime's static quantizer). Beside the files
go classes.json and export.json (input, classes, source run, sizes and each file's parity).
Nothing half written stays behind: each file is written under a temporary name and renamed
only once it has passed its check.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf._tf import quiet_stderr
from imgclf.data import load_data
from imgclf.data.pipeline import make_dataset
from imgclf.errors import ConfigError, DataError, ModelError, first_line
from imgclf.exported import need, open_exported
from imgclf.inference import inference_model, load_model, predict_probs
from imgclf.runs import ensure_writable, read_json, write_json
from imgclf.saved import SavedRun, open_run

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZE = ("float16", "int8")
FLOAT_TOLERANCE = 1e-4  # a float32 export further than this from model.keras is a conversion fault
AGREEMENT_WARNING = 0.98  # a quantized export below this top-1 agreement is kept with a warning


def file_name(fmt: str, quantize: str | None) -> str:
    if fmt == "saved_model":
        return "saved_model"
    suffix = {"tflite": ".tflite", "onnx": ".onnx"}[fmt]
    return f"model{'_' + quantize if quantize else ''}{suffix}"


@dataclass
class Exported:
    file: str
    format: str
    quantize: str | None
    size_bytes: int
    parity: dict


def check_request(formats, quantize: str | None) -> list[str]:
    formats = list(dict.fromkeys(formats or ["saved_model"]))
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"Unknown `--format`. Received: format={fmt} (known: {', '.join(FORMATS)})")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"Unknown `--quantize`. Received: quantize={quantize} "
                          f"(known: {', '.join(QUANTIZE)})")
    if quantize and formats == ["saved_model"]:
        raise ConfigError("--quantize applies to tflite and onnx; a SavedModel is exported in float32")
    if "onnx" in formats:
        need("tf2onnx", "tf2onnx", "ONNX export")
        need("onnxruntime", "onnxruntime", "ONNX export (its check)")
    return formats


class RunImages:
    """The run's own images, rebuilt from its config.yaml: a split to check parity on, and
    training images to calibrate int8 on."""

    def __init__(self, run: SavedRun, limit: int):
        cfg = run.cfg
        self.bundle = load_data(cfg.data, cfg.seed)
        if self.bundle.class_names != run.class_names:
            raise DataError(f"the run's data now has the classes {', '.join(self.bundle.class_names)}, not "
                            f"the model's ({', '.join(run.class_names)}): cannot check the export")
        self.split_name = "val" if "val" in self.bundle.splits else "test"
        split = self.bundle.splits[self.split_name]
        self.split = split.take(np.arange(min(limit, len(split))))
        self.run = run

    def dataset(self, split) -> tf.data.Dataset:
        d = self.run.cfg.data
        return make_dataset(split, image_size=tuple(d.image_size), channels=d.channels,
                            num_classes=len(self.run.class_names), batch_size=32, training=False,
                            seed=self.run.cfg.seed, cache=False)

    def calibration(self, n: int):
        """A generator of single training images (1 x H x W x C float32), ``n`` of them drawn
        with the run's seed from every class alike."""
        train = self.bundle.splits["train"]
        rng = np.random.default_rng(self.run.cfg.seed)
        idx = np.sort(rng.permutation(len(train))[:n])
        ds = self.dataset(train.take(idx)).unbatch().map(lambda x, y: x).batch(1)

        def images():
            for x in ds:
                yield [x.numpy()]
        return images


def export_run(run_dir, *, formats=("saved_model",), quantize: str | None = None, out=None,
               force: bool = False, calibration: int = 300, check_images: int = 1000,
               unsafe: bool = False, echo=print) -> Path:
    """Export ``run_dir``'s model to each of ``formats`` into ``out`` (default RUN_DIR/export);
    returns the folder. See the module's doc for what is checked."""
    formats = check_request(formats, quantize)
    run = open_run(run_dir)
    out = Path(out) if out is not None else run.path / "export"
    ensure_writable(out.parent if not out.exists() else out)
    model = load_model(run.path / "model.keras", unsafe=unsafe)
    note = run.unfinished_note()
    if note:
        echo(f"warning: {note}")
    served = inference_model(model, float32=True)
    images = RunImages(run, check_images)
    reference = predict_probs(served, images.dataset(images.split))
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for fmt in formats:
        q = quantize if fmt != "saved_model" else None
        if quantize and fmt == "saved_model":
            echo("saved_model: exported in float32 (--quantize applies to tflite and onnx)")
        done.append(_export_one(served, fmt, q, out, images, reference, force, calibration, echo))
    _write_manifest(out, run, served, done)
    return out


def _export_one(served, fmt, quantize, out: Path, images: RunImages, reference, force, calibration,
                echo) -> Exported:
    name = file_name(fmt, quantize)
    tmp = out / f".partial-{int(time.time() * 1000)}-{name}"  # the suffix tells the format
    try:
        _convert(served, fmt, quantize, tmp, images, calibration)
        parity = _parity(open_exported(tmp), images, reference)
        size = _size(tmp)
        what = f"{fmt}{' ' + quantize if quantize else ''}"
        line = _parity_line(what, name, size, parity, images.split_name)
        if quantize is None and parity["max_abs_diff"] > FLOAT_TOLERANCE and not force:
            raise ModelError(f"{what}: the export differs from model.keras by up to "
                             f"{parity['max_abs_diff']:.3g} in a probability (over {FLOAT_TOLERANCE:g}): "
                             "a conversion fault; nothing kept (--force keeps it)")
        target = out / name
        _remove(target)
        tmp.rename(target)
        echo(line)
        if quantize and parity["top1_agreement"] < AGREEMENT_WARNING:
            echo(f"warning: {name} agrees with model.keras on the top class for only "
                 f"{parity['top1_agreement']:.3f} of the {images.split_name} images")
        return Exported(name, fmt, quantize, size, parity)
    finally:
        _remove(tmp)


def _convert(served, fmt: str, quantize: str | None, path: Path, images: RunImages, calibration: int):
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), quiet_stderr():
            if fmt == "saved_model":
                served.export(str(path), format="tf_saved_model", verbose=False)
            elif fmt == "tflite":
                served.export(str(path), format="litert", verbose=False,
                              **_lite_options(quantize, images, calibration))
            else:
                _export_onnx(served, path, quantize, images, calibration)
    except ImportError as exc:  # a converter's own dependency
        package = f"the {exc.name} package: pip install {exc.name}" if exc.name else first_line(exc)
        raise ModelError(f"{fmt} export needs {package}") from None
    except ModelError:
        raise
    except Exception as exc:  # a converter that rejects an op names it in its first line
        raise ModelError(f"cannot export to {fmt}{' ' + quantize if quantize else ''}: "
                         f"{first_line(exc)[:300]}") from None


def _lite_options(quantize: str | None, images: RunImages, calibration: int) -> dict:
    if quantize is None:
        return {}
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    else:  # int8 weights and activations, calibrated; float32 in and out
        options["representative_dataset"] = images.calibration(calibration)
    return options


def _export_onnx(served, path: Path, quantize: str | None, images: RunImages, calibration: int):
    if quantize is None:
        served.export(str(path), format="onnx", verbose=False)
        return
    plain = path.with_name(path.name + ".float32.onnx")
    try:
        served.export(str(plain), format="onnx", verbose=False)
        if quantize == "float16":
            onnx = need("onnx", "onnx", "ONNX float16 export")
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(plain)), keep_io_types=True), str(path))
        else:
            _onnx_int8(plain, path, images.calibration(calibration))
    finally:
        plain.unlink(missing_ok=True)


def _onnx_int8(plain: Path, path: Path, batches) -> None:
    from onnxruntime import InferenceSession
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    name = InferenceSession(str(plain), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # ONNX Runtime's calibration interface
        def __init__(self):
            self.it = iter(batches())

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {name: batch[0]}

    logging.disable(logging.WARNING)  # its advice to pre-process (which needs sympy) is not for users
    try:
        quantize_static(str(plain), str(path), Reader(), activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


def _parity(runner, images: RunImages, reference: np.ndarray) -> dict:
    probs = np.concatenate([runner.predict_on_batch(x.numpy()) for x, _ in images.dataset(images.split)])
    probs = probs.astype(np.float64)
    y = images.split.y
    return {
        "split": images.split_name, "n": int(len(y)),
        "max_abs_diff": float(np.abs(probs - reference).max()),
        "top1_agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
        "accuracy": float(np.mean(probs.argmax(1) == y)),
        "accuracy_model_keras": float(np.mean(reference.argmax(1) == y)),
    }


def _parity_line(what: str, name: str, size: int, p: dict, split: str) -> str:
    return (f"{what}: {name}, {size / 1e6:.2f} MB; on {p['n']} {split} images: max |p - p_keras| "
            f"{p['max_abs_diff']:.2g}, top-1 agreement {p['top1_agreement']:.4f}, accuracy "
            f"{p['accuracy']:.4f} (model.keras {p['accuracy_model_keras']:.4f})")


def _write_manifest(out: Path, run: SavedRun, served: keras.Model, done: list[Exported]) -> None:
    path = out / "export.json"
    previous = read_json(path) if path.exists() else {}
    if previous.get("source_run") != str(run.path.resolve()):
        previous = {}  # another run's exports: this folder now holds this run's
    files = previous.get("files", {})
    for e in done:
        files[e.file] = {"format": e.format, "quantize": e.quantize, "size_bytes": e.size_bytes,
                         "parity": e.parity}
    write_json(out / "classes.json", run.class_names)
    write_json(path, {
        "source_run": str(run.path.resolve()),
        "model": run.cfg.model.name,
        "input": {"shape": list(served.input_shape[1:]), "dtype": "float32",
                  "pixels": "raw 0-255, RGB (or grey), resized to the shape; no scaling needed"},
        "output": "softmax probabilities, one per class, in the order of class_names",
        "class_names": run.class_names,
        "files": files,
    })


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
