"""TensorFlow's oneDNN CPU kernels on against off: the training speed imgclf gains by turning them on.

    python benchmarks/onednn.py [-c CONFIG ...] [--set KEY=VALUE ...] [--steps 12] [--skip 2]
                                [--rounds 2]

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads, and turns oneDNN on by itself only
on CPUs with AVX512_VNNI or newer features; imgclf sets it to 1 unless the user set it. Each
measurement is a fresh process with the variable at 0 or 1, the two alternated --rounds times
(best of each kept): the config's model (default configs/cifar10.yaml, then
configs/fashion_mnist.yaml when its IDX files are there), compiled as imgclf compiles it,
trained --steps steps on one batch of its training images already in memory (the last
steps - skip timed), and TensorFlow's float32 4096x4096 matmul rate. Prints training
images/s, the matmul GFLOP/s and the ratio on/off of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CIFAR10_CONFIG, CIFAR10_DIR, FMNIST_CONFIG, IDX_DIR, matmul_flops, train_flops  # noqa: E402


def child(config: list[str], overrides: list[str], steps: int, skip: int) -> dict:
    """One process's figures, oneDNN as TF_ENABLE_ONEDNN_OPTS left it."""
    from folder_peer import fit_rate, in_memory, keras_setup, train_dataset

    from imgclf._tf import import_tensorflow
    from imgclf.runs import onednn_enabled

    import_tensorflow()
    prep, model = keras_setup(config, overrides, 2 * 512)
    bs = prep.cfg.data.batch_size
    ds = in_memory(train_dataset(prep, fill=False))  # one batch: nothing to decode ahead
    measure = fit_rate(model, ds, steps, skip, bs)
    measure()  # trace
    return {"onednn": onednn_enabled(), "rate": max(measure(), measure()),
            "matmul": matmul_flops((4096,), seconds=1.5)[4096],
            "model": f"{prep.cfg.model.name} {prep.cfg.model.filters}, batch {bs}, "
                     f"{train_flops(model) / 1e6:.0f} training MFLOP/image"}


def run_child(setting: str, config: list[str], overrides: list[str], steps: int, skip: int) -> dict:
    args = [sys.executable, __file__, "--child", "--steps", str(steps), "--skip", str(skip)]
    args += [a for c in config for a in ("-c", c)] + [a for o in overrides for a in ("--set", o)]
    done = subprocess.run(args, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting},
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"measurement failed (TF_ENABLE_ONEDNN_OPTS={setting}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", action="append", help="config file(s), layered: one case")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    ap.add_argument("--skip", type=int, default=2, help="of which the first ones are not timed")
    ap.add_argument("--rounds", type=int, default=2, help="alternations (best of each kept)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not 0 < args.skip < args.steps:
        ap.error("--skip must be at least 1 and below --steps")
    if args.child:
        print(json.dumps(child(args.config, args.overrides, args.steps, args.skip)))
        return 0
    if args.config:
        cases = [(args.config, args.overrides)]
    else:
        cases = [([str(CIFAR10_CONFIG)], [f"data.path={CIFAR10_DIR}", *args.overrides])]
        if (IDX_DIR / "train-images-idx3-ubyte.gz").is_file():
            cases.append(([str(FMNIST_CONFIG)], [f"data.path={IDX_DIR}", *args.overrides]))
    for config, overrides in cases:
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for setting in ("0", "1"):
                got = run_child(setting, config, overrides, args.steps, args.skip)
                kept = best.setdefault(setting, got)
                for key in ("rate", "matmul"):
                    kept[key] = max(kept[key], got[key])
        off, on = best["0"], best["1"]
        print(f"{' + '.join(Path(c).name for c in config)}: {on['model']}")
        print(f"  training: {on['rate']:.0f} img/s oneDNN on ({on['onednn']}) / {off['rate']:.0f} off "
              f"({off['onednn']}) = {on['rate'] / off['rate']:.2f}")
        print(f"  matmul 4096²: {on['matmul'] / 1e9:.0f} GFLOP/s on / {off['matmul'] / 1e9:.0f} off "
              f"= {on['matmul'] / off['matmul']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
