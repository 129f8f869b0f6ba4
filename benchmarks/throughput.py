"""Training throughput on a 2-core CPU: is the input pipeline ever the bottleneck, how much of
the machine's float32 arithmetic does training use, and how does it compare with PyTorch?

    python benchmarks/throughput.py [--config configs/fashion_mnist.yaml ...] [--steps 40]
                                    [--rounds 5] [--folder-images 12800] [--no-torch]

Prints, each from two figures measured side by side in this one process:
- pipeline efficiency (IDX, and a folder of PNGs): training images/s of the model fed by
  imgclf's real input pipeline (trainer.datasets: the cached split, shuffle, batch, cast,
  one-hot, prefetch) over images/s of the same compiled model fed one batch that is already
  in memory, repeated. Target >= 0.95. The folder figure is the steady state, after the
  first epoch has decoded every file into the cache.
- compute efficiency: the model's training FLOP/s (3 x forward FLOPs of its conv and dense
  layers x images/s fed from memory) over the float32 matmul FLOP/s of the largest of
  1024/2048/4096 square products, measured in the same run. Target >= 0.75.
- peer ratio: imgclf's training images/s (real pipeline) over a minimal PyTorch CPU training
  loop of the same architecture (resnet9 only), batch size and input, fed from memory.
  Target >= 1.1. Needs the `bench` extra: pip install -e '.[bench]'.

Uses the real Fashion-MNIST IDX files (IMGCLF_FMNIST or /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    FMNIST_CONFIG,
    alternate,
    fmnist_or_exit,
    matmul_flops,
    read_idx,
    report,
    timed,
    train_flops,
)


def keras_setup(config: list[str], overrides: list[str]):
    from imgclf.config import load_config
    from imgclf.training.phases import phase_after
    from imgclf.training.setup import build_model, datasets, enter_phase, prepare

    cfg = load_config(config, overrides)
    prep = prepare(cfg)
    model = build_model(prep)
    enter_phase(model, prep, phase_after(prep.cfg.train, 0))
    return prep, model, datasets(prep)["train"]


def fit_rate(model, ds, steps: int, batch: int):
    def run():
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * batch
    return lambda: timed(run)


def in_memory(ds):
    import tensorflow as tf

    x, y = next(iter(ds))
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def write_png_folder(root: Path, count: int) -> Path:
    """``count`` Fashion-MNIST training images as 28x28 grayscale PNGs in class folders."""
    import tensorflow as tf

    x = read_idx(fmnist_or_exit() / "train-images-idx3-ubyte.gz")[:count]
    y = read_idx(fmnist_or_exit() / "train-labels-idx1-ubyte.gz")[:count]
    for i, (img, label) in enumerate(zip(x, y)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"{i:05d}.png"), tf.io.encode_png(img[..., None]))
    return root


def torch_rate(filters: list[int], batch: int, steps: int, lr: float, wd: float, smoothing: float):
    """A minimal PyTorch training loop of resnet9 (same widths, batch norm, max pooling, global
    max pool), AdamW, cross-entropy with label smoothing, fed one in-memory batch."""
    import torch
    from torch import nn

    from imgclf.models.resnet import resnet9_widths

    w = resnet9_widths(filters)

    def cbr(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU()]

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*cbr(c, c), *cbr(c, c))

        def forward(self, x):
            return x + self.body(x)

    model = nn.Sequential(
        *cbr(1, w[0]),
        *cbr(w[0], w[1]), nn.MaxPool2d(2), Residual(w[1]),
        *cbr(w[1], w[2]), nn.MaxPool2d(2),
        *cbr(w[2], w[3]), nn.MaxPool2d(2), Residual(w[3]),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w[3], 10),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    x = torch.rand(batch, 1, 28, 28) * 255
    y = torch.randint(0, 10, (batch,))
    model.train()

    def run():
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(model(x / 255.0), y)
            loss.backward()
            opt.step()
        return steps * batch
    run()  # warm-up
    return lambda: timed(run), torch.get_num_threads()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", action="append",
                    help="config file(s), layered (default: fashion_mnist.yaml)")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternations (best of each kept)")
    ap.add_argument("--folder-images", type=int, default=12800)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    config = args.config or [str(FMNIST_CONFIG)]
    fmnist_or_exit()

    from imgclf._tf import import_tensorflow

    import_tensorflow()
    prep, model, ds = keras_setup(config, args.overrides)
    bs = prep.cfg.data.batch_size
    print(f"model {prep.cfg.model.name} {prep.cfg.model.filters}, {model.count_params():,} parameters, "
          f"{train_flops(model) / 1e6:.1f} training MFLOP/image, batch {bs}, {args.steps} steps x "
          f"{args.rounds} rounds", flush=True)
    memory = in_memory(ds)
    fit_rate(model, ds, args.steps, bs)()  # trace, warm the cache's first batches
    fit_rate(model, memory, args.steps, bs)()
    results = {}
    idx = alternate({"pipeline": fit_rate(model, ds, args.steps, bs),
                     "memory": fit_rate(model, memory, args.steps, bs)}, args.rounds)
    results["idx"] = report("pipeline efficiency, IDX", idx["pipeline"] / idx["memory"], 0.95,
                            f"{idx['pipeline']:.0f} img/s (pipeline)",
                            f"{idx['memory']:.0f} img/s (in memory)")

    with tempfile.TemporaryDirectory() as tmp:
        write_png_folder(Path(tmp), args.folder_images)
        folder_over = args.overrides + ["data.source=folder", f"data.path={tmp}", "data.image_size=28",
                                        "data.channels=1", "data.val_split=0.1", "data.class_names=null"]
        fprep, fmodel, fds = keras_setup(config, folder_over)
        fmem = in_memory(fds)
        # one whole epoch, to the end of the data, so the cache is complete (a pass cut short
        # by steps_per_epoch leaves it unfinished and the next pass decodes again)
        cold = timed(lambda: (fmodel.fit(fds, epochs=1, verbose=0), len(fprep.bundle.splits["train"]))[1])
        fit_rate(fmodel, fmem, args.steps, bs)()
        folder = alternate({"pipeline": fit_rate(fmodel, fds, args.steps, bs),
                            "memory": fit_rate(fmodel, fmem, args.steps, bs)}, args.rounds)
        results["folder"] = report(
            f"pipeline efficiency, folder of {args.folder_images} PNGs (cached)",
            folder["pipeline"] / folder["memory"], 0.95,
            f"{folder['pipeline']:.0f} img/s (pipeline)", f"{folder['memory']:.0f} img/s (in memory)")
        print(f"  first epoch, decoding every PNG: {cold:.0f} img/s "
              f"({cold / folder['memory']:.3f} of in-memory)")

    mm = matmul_flops()
    peak_n = max(mm, key=mm.get)
    flops = train_flops(model) * idx["memory"]
    results["compute"] = report(
        "compute efficiency", flops / mm[peak_n], 0.75,
        f"{flops / 1e9:.1f} GFLOP/s training", f"{mm[peak_n] / 1e9:.1f} GFLOP/s float32 matmul {peak_n}^2")
    print("  matmul GFLOP/s by size: " + ", ".join(f"{n}: {v / 1e9:.1f}" for n, v in mm.items()))

    if args.no_torch:
        pass
    elif prep.cfg.model.name != "resnet9":
        print("peer ratio: skipped (the PyTorch twin exists for resnet9 only)")
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("peer ratio: skipped (PyTorch is not installed: pip install -e '.[bench]')")
        else:
            t = prep.cfg.train
            torch_measure, threads = torch_rate(prep.cfg.model.filters, bs, args.steps, t.optimizer.lr,
                                                t.optimizer.weight_decay or 0.0, t.loss.label_smoothing)
            peer = alternate({"imgclf": fit_rate(model, ds, args.steps, bs), "torch": torch_measure},
                             args.rounds)
            results["peer"] = report(
                "peer ratio", peer["imgclf"] / peer["torch"], 1.1,
                f"{peer['imgclf']:.0f} img/s imgclf (pipeline)",
                f"{peer['torch']:.0f} img/s PyTorch {torch.__version__} ({threads} threads, in memory)")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
