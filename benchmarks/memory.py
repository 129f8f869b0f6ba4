"""Memory: peak RSS of `imgclf train` on Fashion-MNIST (target < 3 GB), and of `imgclf predict`
on a folder of 1,000 and of 10,000 images with that run's model (flat: the 10k/1k ratio of
peak RSS, target <= 1.1). Each command runs as a child process; its own peak RSS is read
from the kernel's accounting of that child (os.wait4).

    python benchmarks/memory.py [--config configs/fashion_mnist.yaml ...] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FMNIST_CONFIG, fmnist_or_exit, read_idx, report  # noqa: E402

GB = 1024**3


def peak_rss(cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd``; its peak resident set in bytes and its stdout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}")
    return usage.ru_maxrss * 1024, out  # ru_maxrss is in KiB on Linux


def write_pngs(folder: Path, images) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", action="append",
                    help="config file(s), layered (default: fashion_mnist.yaml)")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    config = args.config or [str(FMNIST_CONFIG)]
    idx = fmnist_or_exit()
    imgclf = [sys.executable, "-m", "imgclf"]
    ok = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        layers = [arg for c in config for arg in ("-c", c)]
        cmd = imgclf + ["train", *layers, "--set", f"train.epochs={args.epochs}", "--set", "train.verbose=0",
                        "--out", str(tmp / "runs")]
        rss, out = peak_rss(cmd)
        run_dir = out.strip().splitlines()[-1]
        ok.append(report(f"peak RSS, imgclf train ({args.epochs} epochs of {', '.join(config)})", rss / GB,
                         3.0, f"{rss / GB:.2f} GB", "1 (GB)", above=False))

        test = read_idx(idx / "t10k-images-idx3-ubyte.gz")
        write_pngs(tmp / "small", test[:1000])
        write_pngs(tmp / "large", test[:10000])
        peaks = {}
        for name in ("small", "large"):
            peaks[name], _ = peak_rss(imgclf + ["predict", run_dir, str(tmp / name), "--output",
                                                str(tmp / f"{name}.csv")])
        ok.append(report("predict memory, 10,000 / 1,000 files", peaks["large"] / peaks["small"], 1.1,
                         f"{peaks['large'] / GB:.3f} GB peak RSS (10k)", f"{peaks['small'] / GB:.3f} GB (1k)",
                         above=False))
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
