"""Transfer learning on real data: does a backbone pretrained on five Fashion-MNIST classes
help on the other five when only 100 images per class are labelled?

    python benchmarks/transfer_fashion_mnist.py [--idx DIR] [--out DIR] [--dry-run]

1. writes two .npz subsets of the original IDX files: ``source.npz`` (classes 0-4:
   T-shirt/top, Trouser, Pullover, Dress, Coat; ``--source-per-class`` training images each)
   and ``target.npz`` (classes 5-9: Sandal, Shirt, Sneaker, Bag, Ankle boot; 100 training
   images each, of which data.val_split holds out 20%); both keep the official test images
   of their classes (1,000 per class) as the test split;
2. pretrains ``--model`` on source.npz;
3. trains the same model on target.npz twice with the same epochs, batch size and seed:
   from scratch, and from the pretrained run directory (model.weights) with train.phases
   (the head alone first, then everything with the backbone's batch norm frozen);
4. prints the test accuracy of both and the commands it ran.

Keep it to a few minutes on 2 CPU cores: the defaults pretrain ResNet-20 on 1,000 images per
class for 4 epochs. One seed per run: differences of a point or two are within noise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_idx  # noqa: E402

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"]


def subset(x, y, classes, per_class, rng):
    """``per_class`` images of each of ``classes`` (all when None), labels renumbered 0.."""
    keep = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        keep.append(idx if per_class is None else rng.choice(idx, per_class, replace=False))
    keep = np.sort(np.concatenate(keep))
    return x[keep], np.searchsorted(classes, y[keep]).astype(np.int64)


def write_subsets(idx_dir: Path, out: Path, source_per_class: int, target_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    x_train = read_idx(idx_dir / "train-images-idx3-ubyte.gz")
    y_train = read_idx(idx_dir / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, classes, per_class in (("source", [0, 1, 2, 3, 4], source_per_class),
                                     ("target", [5, 6, 7, 8, 9], target_per_class)):
        classes = np.array(classes)
        xa, ya = subset(x_train, y_train, classes, per_class, rng)
        xt, yt = subset(x_test, y_test, classes, None, rng)
        paths[name] = out / f"{name}.npz"
        np.savez_compressed(paths[name], x_train=xa, y_train=ya, x_test=xt, y_test=yt,
                            class_names=np.array([NAMES[c] for c in classes]))
        print(f"{paths[name]}: train {len(xa)}, test {len(xt)} ({', '.join(NAMES[c] for c in classes)})")
    return paths


def train(args: list[str], dry_run: bool) -> Path | None:
    cmd = [sys.executable, "-m", "imgclf", "train", *args]
    print("$ " + shlex.join(["imgclf", "train", *args]), flush=True)
    if dry_run:
        return None
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr.strip() or done.stdout.strip())
    lines = done.stdout.strip().splitlines()
    print("  " + next((ln for ln in reversed(lines) if ln.startswith("done in")), ""), flush=True)
    return Path(lines[-1])


def test_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idx", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=Path("outputs/transfer_fashion_mnist"))
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--source-per-class", type=int, default=1000)
    ap.add_argument("--target-per-class", type=int, default=100)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12, help="target runs, both phases together")
    ap.add_argument("--head-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="write the subsets, print the commands")
    a = ap.parse_args()

    if not (a.idx / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"Fashion-MNIST IDX files not found in {a.idx} (apt-get install dataset-fashion-mnist)")
    paths = write_subsets(a.idx, a.out / "data", a.source_per_class, a.target_per_class, a.seed)
    runs = str(a.out / "runs")
    common = ["--set", f"model.name={a.model}", "--set", "data.source=npz", "--set", "data.batch_size=32",
              "--set", "train.verbose=0", "--set", f"seed={a.seed}", "--out", runs]
    source = train([*common, "--set", f"data.path={paths['source']}", "--set", "data.val_split=0.1",
                    "--set", f"train.epochs={a.pretrain_epochs}", "--set", "data.batch_size=64",
                    "--set", "output.name=source"], a.dry_run)
    target = [*common, "--set", f"data.path={paths['target']}", "--set", f"train.epochs={a.epochs}"]
    scratch = train([*target, "--set", "output.name=target-scratch"], a.dry_run)
    tuned = train([*target, "--set", f"model.weights={source or '<source run>'}",
                   "--set", f"train.phases.head_epochs={a.head_epochs}",
                   "--set", "train.phases.head_lr=0.001",
                   "--set", "train.optimizer.lr=0.0003", "--set", "output.name=target-finetuned"], a.dry_run)
    if a.dry_run:
        return
    print(f"\nsource (classes 0-4) test accuracy: {test_accuracy(source):.4f}")
    print(f"target (classes 5-9, {a.target_per_class}/class) test accuracy, same model, "
          f"{a.epochs} epochs each:")
    print(f"  from scratch:                      {test_accuracy(scratch):.4f}   {scratch}")
    print(f"  fine-tuned from the source run:    {test_accuracy(tuned):.4f}   {tuned}")


if __name__ == "__main__":
    main()
