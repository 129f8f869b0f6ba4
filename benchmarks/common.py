"""What the benchmark scripts share: the data they run on, FLOP counts, timing, printing.

Every benchmark measures its two figures side by side in one process (or one run of the
script), alternating the two several times and keeping the best of each (as timeit does):
the shared machine now and then runs at half speed for many seconds, which a median of a
few alternations does not survive.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import imgclf  # noqa: F401  (before TensorFlow: its CPU settings, oneDNN on, hold for every figure here)

ROOT = Path(__file__).resolve().parent.parent
IDX_DIR = Path(os.environ.get("IMGCLF_FMNIST", "/usr/share/datasets/fashion-mnist"))
FMNIST_CONFIG = ROOT / "configs" / "fashion_mnist.yaml"
FMNIST_BEST = ROOT / "configs" / "fashion_mnist_best.yaml"
CIFAR10_CONFIG = ROOT / "configs" / "cifar10.yaml"
CIFAR10_DIR = ROOT.parent / "shared" / "datasets" / "cifar10"


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fmnist_or_exit() -> Path:
    if not (IDX_DIR / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"Fashion-MNIST IDX files not found in {IDX_DIR} (apt-get install dataset-fashion-mnist, "
                 "or set IMGCLF_FMNIST to their folder)")
    return IDX_DIR


def model_flops(model) -> int:
    """Forward FLOPs per image (2 per multiply-add) of the conv and dense layers, nested
    models included; batch norm, activations and pooling are left out (a few percent)."""
    from keras import layers

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.Conv2D):
            h, w, c = layer.output.shape[1:]
            kh, kw, cin = layer.kernel.shape[:3]
            total += 2 * h * w * c * kh * kw * cin // layer.groups
        elif isinstance(layer, layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)


def train_flops(model) -> int:
    """Training FLOPs per image: forward, and backward twice over (input and weight gradients)."""
    return 3 * model_flops(model)


def alternate(measures: dict[str, Callable[[], float]], rounds: int = 5) -> dict[str, float]:
    """Run each measure (a rate: more is better) ``rounds`` times, interleaved (A B A B ...);
    the best of each."""
    seen: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            seen[name].append(measure())
    return {k: max(v) for k, v in seen.items()}


def timed(fn: Callable[[], int]) -> float:
    """Items per second of ``fn``, which returns how many items it processed."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def report(name: str, ratio: float, target: float, left: str, right: str, above: bool = True) -> bool:
    ok = ratio >= target if above else ratio <= target
    sign = ">=" if above else "<="
    print(f"{name}: {ratio:.3f} (target {sign} {target}; {'met' if ok else 'NOT met'})  = {left} / {right}",
          flush=True)
    return ok


def matmul_flops(sizes=(1024, 2048, 4096), seconds: float = 2.0) -> dict[int, float]:
    """float32 FLOP/s of square matrix products through TensorFlow, per size."""
    import tensorflow as tf

    out = {}
    for n in sizes:
        a = tf.random.normal((n, n))
        b = tf.random.normal((n, n))
        product = tf.function(lambda a, b: tf.matmul(a, b))
        product(a, b).numpy()
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            c = product(a, b)
            reps += 1
        c.numpy()
        out[n] = 2 * n**3 * reps / (time.perf_counter() - start)
    return out


def image_folder(root: Path):
    """(path, class index) of every image under root/<class>/, classes and files sorted, as
    torchvision's ImageFolder lists them."""
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    return [(str(p), i) for i, c in enumerate(classes)
            for p in sorted((root / c).rglob("*")) if p.suffix.lower() in exts]
