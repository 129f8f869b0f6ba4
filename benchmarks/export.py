"""Exported models side by side with model.keras, in one process on this CPU: file size,
single-image and batch latency, and accuracy on the run's held-out images.

    python benchmarks/export.py [RUN_DIR] [--batch 32] [--rounds 5]

Without RUN_DIR it first trains configs/folder.yaml on ../shared/datasets/hymenoptera (8
epochs), whose held-out split is val/ (153 photos; the set has no test/). Every format of
`imgclf export` is written into RUN_DIR/export-bench/: SavedModel, TFLite and ONNX in
float32, TFLite and ONNX in float16 and int8. Latencies are the best of ``--rounds``
interleaved rounds (model.keras, then each export, then again), as the other benchmarks do.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
EXPORTS = [("saved_model", None), ("tflite", None), ("onnx", None), ("tflite", "float16"),
           ("onnx", "float16"), ("tflite", "int8"), ("onnx", "int8")]


def train_default() -> Path:
    if not HYMENOPTERA.is_dir():
        sys.exit(f"no RUN_DIR given and {HYMENOPTERA} is missing")
    config = ROOT / "configs" / "folder.yaml"
    out = subprocess.run([sys.executable, "-m", "imgclf", "train", "--config", str(config),
                          "--set", f"data.path={HYMENOPTERA}", "--set", "train.epochs=8",
                          "--out", str(ROOT / "outputs" / "bench-export")],
                         check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def latency(predict, x: np.ndarray, rounds: int) -> list[float]:
    """Seconds per call of ``predict(x)``: the best over ``rounds`` groups of calls."""
    predict(x)  # the first call builds or allocates
    calls = max(3, int(0.5 / max(_once(predict, x), 1e-4)))
    return [_mean_time(predict, x, calls) for _ in range(rounds)]


def _once(predict, x) -> float:
    start = time.perf_counter()
    predict(x)
    return time.perf_counter() - start


def _mean_time(predict, x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        predict(x)
    return (time.perf_counter() - start) / calls


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            flags = Path("/proc/cpuinfo").read_text()
            return line.split(":", 1)[1].strip() + (", AVX-512" if "avx512f" in flags else ", AVX2 only")
    return platform.processor()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a finished run (default: train one on hymenoptera)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    from imgclf._tf import import_tensorflow

    import_tensorflow()
    from imgclf.export import RunImages, export_run, file_name
    from imgclf.exported import open_exported
    from imgclf.inference import load_model
    from imgclf.saved import open_run

    run_dir = Path(args.run_dir) if args.run_dir else train_default()
    out = run_dir / "export-bench"
    for fmt, q in EXPORTS:
        export_run(run_dir, formats=[fmt], quantize=q, out=out, echo=lambda s: None)
    run = open_run(run_dir)
    images = RunImages(run, 10**9)
    batches = [(x.numpy(), y.numpy().argmax(1)) for x, y in images.dataset(images.split)]
    x_all = np.concatenate([b[0] for b in batches])
    y_all = np.concatenate([b[1] for b in batches])
    keras_model = load_model(run_dir / "model.keras")
    models = {"model.keras": (keras_model.predict_on_batch, (run_dir / "model.keras").stat().st_size)}
    for fmt, q in EXPORTS:
        name = file_name(fmt, q)
        path = out / name
        size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
        models[name] = (open_exported(path).predict_on_batch, size)

    one, batch = x_all[:1], x_all[: args.batch]
    single = {k: [] for k in models}
    many = {k: [] for k in models}
    for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits every format alike
        for name, (predict, _) in models.items():
            single[name] += latency(predict, one, 1)
            many[name] += latency(predict, batch, 1)
    print(f"CPU: {cpu_name()}; run: {run_dir.name} ({run.cfg.model.name}, "
          f"{run.cfg.data.image_size[0]}x{run.cfg.data.image_size[1]}); held-out split: "
          f"{images.split_name}, n={len(y_all)}; batch {len(batch)}")
    print(f"{'file':<22} {'size MB':>8} {'1 image ms':>11} {'batch ms':>9} {'img/s':>7} {'accuracy':>9}")
    for name, (predict, size) in models.items():
        probs = np.concatenate([predict(x) for x, _ in batches])
        acc = float(np.mean(probs.argmax(1) == y_all))
        b = min(many[name])
        print(f"{name:<22} {size / 1e6:>8.2f} {min(single[name]) * 1e3:>11.2f} {b * 1e3:>9.1f} "
              f"{len(batch) / b:>7.0f} {acc:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
