"""An exported model (a SavedModel folder, a .tflite or an .onnx file) opened for inference
behind the one method imgclf's inference path calls on a Keras model, ``predict_on_batch``,
with the runtime each format is served with: TensorFlow, LiteRT (ai-edge-litert, else
TensorFlow's own interpreter) and ONNX Runtime. `imgclf export` checks its files with these,
and `imgclf predict` takes them as it takes a run.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from imgclf._tf import quiet_stderr
from imgclf.errors import ModelError, first_line

SUFFIXES = (".tflite", ".onnx")


def is_exported(path: Path) -> bool:
    """A SavedModel folder, or a file of a format imgclf exports."""
    return (path.is_dir() and (path / "saved_model.pb").is_file()) or path.suffix in SUFFIXES


def need(module: str, package: str, purpose: str):
    """``module`` imported, or one line naming the package that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"{purpose} needs the {package} package: pip install {package}") from None


class Exported:
    """One exported model: ``predict_on_batch(images)`` takes float32 N x H x W x C raw pixels
    (0..255) and returns N x classes probabilities, like the Keras model it came from."""

    input_shape: tuple
    output_shape: tuple

    def predict_on_batch(self, images) -> np.ndarray:
        raise NotImplementedError


class SavedModelRunner(Exported):
    def __init__(self, path: Path):
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ModelError(f"cannot load the SavedModel {path}: {first_line(exc)[:300]}") from None
        self._keep = loaded
        fn = getattr(loaded, "serve", None) or loaded.signatures.get("serving_default")
        if fn is None:
            raise ModelError(f"{path}: a SavedModel without a serve endpoint (not exported by imgclf?)")
        self._fn = fn
        spec = _first_spec(fn)
        self.input_shape = tuple(spec.shape)
        out = self.predict_on_batch(np.zeros((1, *self.input_shape[1:]), np.float32))
        self.output_shape = (None, out.shape[-1])

    def predict_on_batch(self, images) -> np.ndarray:
        out = self._fn(tf.convert_to_tensor(images, tf.float32))
        if isinstance(out, dict):  # a signature answers with a dict of its one output
            out = next(iter(out.values()))
        return np.asarray(out)


def _first_spec(fn) -> tf.TensorSpec:
    if hasattr(fn, "structured_input_signature"):  # a signature (concrete function)
        args, kwargs = fn.structured_input_signature
        specs = list(args) + list(kwargs.values())
        return tf.nest.flatten(specs)[0]
    return tf.nest.flatten(fn.input_signature)[0]


class LiteRunner(Exported):
    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # TensorFlow's own interpreter: the same runtime, deprecated in its favour
            Interpreter = tf.lite.Interpreter
        try:
            with warnings.catch_warnings(), quiet_stderr():  # the deprecation and delegate notes
                warnings.simplefilter("ignore")
                self._interp = Interpreter(model_path=str(path))
                self._interp.allocate_tensors()
        except Exception as exc:
            raise ModelError(f"cannot load the TFLite model {path}: {first_line(exc)[:300]}") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input_shape = (None, *(int(d) for d in self._in["shape"][1:]))
        self.output_shape = (None, int(self._out["shape"][-1]))
        self._batch = int(self._in["shape"][0])

    def predict_on_batch(self, images) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if x.shape[0] != self._batch:
            self._interp.resize_tensor_input(self._in["index"], list(x.shape))
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]
            self._out = self._interp.get_output_details()[0]
            self._batch = x.shape[0]
        self._interp.set_tensor(self._in["index"], _quantized(x, self._in))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out["index"])
        scale, zero = self._out.get("quantization", (0.0, 0))
        if scale:  # an integer output: back to probabilities
            out = (out.astype(np.float32) - zero) * scale
        return np.asarray(out, dtype=np.float32)


def _quantized(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if not scale:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


class OnnxRunner(Exported):
    def __init__(self, path: Path):
        ort = need("onnxruntime", "onnxruntime", "running an ONNX model")
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load the ONNX model {path}: {first_line(exc)[:300]}") from None
        inp, out = self._session.get_inputs()[0], self._session.get_outputs()[0]
        self._name = inp.name
        self.input_shape = (None, *(int(d) for d in inp.shape[1:]))
        self.output_shape = (None, int(out.shape[-1]))

    def predict_on_batch(self, images) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        return np.asarray(self._session.run(None, {self._name: x})[0], dtype=np.float32)


def open_exported(path: str | Path) -> Exported:
    """The runner of an exported model, by what ``path`` is."""
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelError(f"{path} is not a SavedModel folder (no saved_model.pb)")
        return SavedModelRunner(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix == ".tflite":
        return LiteRunner(path)
    if path.suffix == ".onnx":
        return OnnxRunner(path)
    raise ModelError(f"expected a SavedModel folder, a .tflite or an .onnx file. Received: {path}")
