"""Training CIFAR-10 from its folder of JPEGs on a 2-core CPU: does the folder pipeline keep the
model fed, and how does imgclf compare with a minimal PyTorch loop reading the same folder?

    python benchmarks/folder_peer.py [--folder ../shared/datasets/cifar10] [--steps 20]
                                     [--skip 3] [--rounds 5] [--first-epoch-images 5120]
                                     [--train-images 0] [--no-torch]

The model and data are configs/cifar10.yaml's (fastnet [64, 256, 256], GELU, batch 512,
flips and 2-pixel reflect-pad crops inside the model, Nesterov SGD, label smoothing 0.2),
built through imgclf.training.setup (prepare, build_model, enter_phase, datasets) with
data.path set to --folder. Each measurement runs --steps training steps and times the last
steps - skip of them (the first ones start the iterator, its workers and the caches).

Prints, each from two figures measured side by side in this one process (alternated --rounds
times, best of each):
- pipeline efficiency, folder: training images/s of the model fed by imgclf's real folder
  pipeline (the cached split, shuffle, batch, cast, one-hot, prefetch) over images/s of the
  same compiled model fed one batch of the same images already in memory, repeated. The
  steady state, after one pass has decoded every training file into the cache. Target >= 0.95.
  Then, measured once each, the first epoch of a fresh pipeline over the first
  --first-epoch-images training files (0 skips it), over the same in-memory figure: as
  `imgclf train` makes it, its files decoded into the cache in one pass before training
  (target >= 0.95), and beside it the old way, decoding while the first epoch trains. Each
  as its full steps after the first --skip, every image charged its share of any decoding
  done before the pass, and as the whole pass with its start.
- peer ratio: imgclf's training images/s (the same real pipeline) over a minimal PyTorch CPU
  loop: a Dataset over the same train/ folder that decodes each JPEG with PIL, as
  torchvision's ImageFolder does (classes and files sorted), RandomHorizontalFlip,
  RandomCrop(32, padding=2, padding_mode='reflect') and ToTensor done by hand in numpy,
  DataLoader(num_workers=2, batch_size=512, shuffle=True), the same net written in torch,
  SGD Nesterov, cross-entropy with label smoothing, torch.set_num_threads(2). Target >= 1.2.
  Needs the `bench` extra: pip install -e '.[bench]'. torchvision is not used: PyPI's 0.28.0
  wheel links CUDA torch (libc10_cuda.so) and does not load with the CPU torch build.
  Weight decay is torch's coupled L2 at the config's value (the same work per step).

--train-images N (0: all) trains on the first N training files only, for a quick check.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CIFAR10_CONFIG, CIFAR10_DIR, alternate, image_folder, report, train_flops  # noqa: E402


def keras_setup(config: list[str], overrides: list[str], train_images: int):
    from imgclf.config import load_config
    from imgclf.training.phases import phase_after
    from imgclf.training.setup import build_model, enter_phase, prepare

    prep = prepare(load_config(config, overrides))
    if train_images:
        prep = subset(prep, train_images)
    model = build_model(prep)
    enter_phase(model, prep, phase_after(prep.cfg.train, 0))
    return prep, model


def subset(prep, count: int):
    """``prep`` with the first ``count`` training files only (the split as the loader listed it)."""
    import numpy as np

    bundle = prep.bundle
    train = bundle.splits["train"]
    splits = {**bundle.splits, "train": train.take(np.arange(min(count, len(train))))}
    return dataclasses.replace(prep, bundle=dataclasses.replace(bundle, splits=splits))


def train_dataset(prep, fill: bool = True):
    """The training split's dataset as `imgclf train` makes it: with ``fill``, its files decoded
    into the cache before it is returned; else decoded while the first pass trains."""
    from imgclf.training.setup import datasets

    return datasets(prep, names=("train",), fill=fill)["train"]


def step_clock():
    """A Keras callback that notes when each training step ends (``marks[step]``, from 1)."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.marks: dict[int, float] = {}

        def on_train_batch_end(self, batch, logs=None):
            self.marks[batch + 1] = time.perf_counter()

    return StepClock()


def step_rate(marks: dict[int, float], skip: int, last: int, batch: int) -> float:
    """Images/s of steps skip+1..last of a StepClock's ``marks``."""
    return (last - skip) * batch / (marks[last] - marks[skip])


def fit_rate(model, ds, steps: int, skip: int, batch: int):
    """Images/s of ``steps`` training steps on ``ds``, the first ``skip`` not timed."""
    def measure():
        clock = step_clock()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
        return step_rate(clock.marks, skip, steps, batch)
    return measure


def in_memory(ds):
    """One batch of ``ds`` already in memory, repeated."""
    import tensorflow as tf

    x, y = next(iter(ds))
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def first_epoch(model, prep, fill: bool, skip: int, batch: int) -> tuple[float, float]:
    """(images/s of the first pass's full steps after ``skip``, each image charged its share of
    the decoding done before the pass; images/s of the whole pass, the decoding before it and the
    pass's start included) of a fresh training dataset of ``prep``, its cache empty."""
    start = time.perf_counter()
    fresh = train_dataset(prep, fill)
    before = time.perf_counter() - start
    n = len(prep.bundle.splits["train"])
    clock = step_clock()
    start = time.perf_counter()
    model.fit(fresh, epochs=1, verbose=0, callbacks=[clock])
    whole = n / (before + time.perf_counter() - start)
    last = max(clock.marks) - 1  # the last full batch (the pass's last one may be short)
    if last <= skip:
        return whole, whole
    timed_images = (last - skip) * batch
    return timed_images / (clock.marks[last] - clock.marks[skip] + before * timed_images / n), whole


def torch_rate(train_dir: Path, filters: list[int], batch: int, steps: int, skip: int, lr: float,
               momentum: float, wd: float, smoothing: float, limit: int):
    """A minimal PyTorch training loop of fastnet reading train_dir's JPEGs: an ImageFolder-like
    Dataset (PIL decode), flip + reflect-pad crop + ToTensor, DataLoader with 2 workers."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    from imgclf.models.fastnet import LOGIT_SCALE, fastnet_widths

    torch.set_num_threads(2)
    samples = image_folder(train_dir)
    if limit:
        samples = samples[:limit]

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            path, label = samples[i]
            with open(path, "rb") as fh:
                img = np.asarray(Image.open(fh).convert("RGB"))  # torchvision's pil_loader
            if np.random.rand() < 0.5:  # RandomHorizontalFlip
                img = img[:, ::-1]
            img = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")  # RandomCrop(32, 2, reflect)
            top, left = np.random.randint(0, img.shape[0] - 31), np.random.randint(0, img.shape[1] - 31)
            img = img[top:top + 32, left:left + 32]
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)  # ToTensor
            return x, label

    def pair(cin, cout):
        def bn(c):
            norm = nn.BatchNorm2d(c)
            norm.weight.requires_grad_(False)  # Keras' scale=False
            return norm
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), bn(cout), nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), bn(cout), nn.GELU()]

    w = fastnet_widths(filters)
    whiten = nn.Conv2d(3, 24, 2)  # 2x2 'valid', fixed kernel, trained bias (PatchWhitening)
    whiten.weight.requires_grad_(False)
    model = nn.Sequential(
        whiten, nn.GELU(), *pair(24, w[0]), *pair(w[0], w[1]), *pair(w[1], w[2]),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w[2], 10),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=wd)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    model.train()
    loader = torch.utils.data.DataLoader(Folder(), batch_size=batch, shuffle=True, num_workers=2)

    def measure():
        marks = {}
        done = 0
        while done < steps:
            for x, y in loader:  # a fresh iterator (and workers) each round, as Keras' fit has
                opt.zero_grad()
                loss = loss_fn(model(x) * LOGIT_SCALE, y)
                loss.backward()
                opt.step()
                done += 1
                marks[done] = time.perf_counter()
                if done == steps:
                    break
        return (steps - skip) * batch / (marks[steps] - marks[skip])

    return measure, torch.get_num_threads(), len(samples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", action="append",
                    help="config file(s), layered (default: configs/cifar10.yaml)")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--folder", type=Path, default=CIFAR10_DIR,
                    help="CIFAR-10 folder with train/ and test/ of class folders")
    ap.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    ap.add_argument("--skip", type=int, default=3, help="of which the first ones are not timed")
    ap.add_argument("--rounds", type=int, default=5, help="alternations (best of each kept)")
    ap.add_argument("--first-epoch-images", type=int, default=5120,
                    help="training files whose first epoch (cache filling) is timed; 0: none")
    ap.add_argument("--train-images", type=int, default=0, help="train on the first N files only (0: all)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    if not 0 < args.skip < args.steps:
        ap.error("--skip must be at least 1 and below --steps")
    folder = args.folder.resolve()
    if not (folder / "train").is_dir():
        sys.exit(f"CIFAR-10 folder not found: {folder}/train (pass --folder)")
    config = args.config or [str(CIFAR10_CONFIG)]

    from imgclf._tf import import_tensorflow

    import_tensorflow()
    prep, model = keras_setup(config, args.overrides + ["data.source=folder", f"data.path={folder}"],
                              args.train_images)
    bs, steps, skip = prep.cfg.data.batch_size, args.steps, args.skip
    n_train = len(prep.bundle.splits["train"])
    if steps > n_train // bs:  # fit stops when one pass runs out
        sys.exit(f"--steps {steps} is more than the {n_train // bs} full batches of {bs} in one pass over "
                 f"{n_train} training files: lower --steps or raise --train-images")
    start = time.perf_counter()
    ds = train_dataset(prep)  # decodes every training file into the cache
    filled = n_train / (time.perf_counter() - start)
    print(f"model {prep.cfg.model.name} {prep.cfg.model.filters}, {model.count_params():,} parameters, "
          f"{train_flops(model) / 1e6:.1f} training MFLOP/image, batch {bs}, "
          f"{n_train} training files in {folder}, augment_on {prep.cfg.augment_on}; "
          f"{steps} steps ({steps - skip} timed) x {args.rounds} rounds", flush=True)
    print(f"  cache filled: {filled:.0f} img/s decoding alone", flush=True)
    memory = in_memory(ds)
    fit_rate(model, ds, steps, skip, bs)()  # trace
    fit_rate(model, memory, steps, skip, bs)()
    results = {}
    steady = alternate({"pipeline": fit_rate(model, ds, steps, skip, bs),
                        "memory": fit_rate(model, memory, steps, skip, bs)}, args.rounds)
    results["folder"] = report(
        "pipeline efficiency, folder (cached)", steady["pipeline"] / steady["memory"], 0.95,
        f"{steady['pipeline']:.0f} img/s (pipeline)", f"{steady['memory']:.0f} img/s (in memory)")

    if args.first_epoch_images:
        sub = subset(prep, args.first_epoch_images)
        n = len(sub.bundle.splits["train"])
        for fill in (False, True):
            label = "decoded before it (imgclf's way)" if fill else "decoding every JPEG while it trains"
            cold, whole = first_epoch(model, sub, fill, skip, bs)
            met = report(
                f"pipeline efficiency, first epoch ({n} files, {label})", cold / steady["memory"],
                0.95, f"{cold:.0f} img/s (pipeline)", f"{steady['memory']:.0f} img/s (in memory)")
            print(f"  the whole first pass, its start included: {whole:.0f} img/s "
                  f"({whole / steady['memory']:.3f} of in-memory)", flush=True)
            if fill:  # the old way is shown beside, not held to the target
                results["first"] = met

    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("peer ratio: skipped (PyTorch is not installed: pip install -e '.[bench]')", flush=True)
        else:
            t = prep.cfg.train
            torch_measure, threads, files = torch_rate(
                folder / "train", prep.cfg.model.filters, bs, steps, skip, t.optimizer.lr,
                t.optimizer.momentum or 0.0, t.optimizer.weight_decay or 0.0, t.loss.label_smoothing,
                args.train_images)
            torch_measure()  # warm-up
            peer = alternate({"imgclf": fit_rate(model, ds, steps, skip, bs), "torch": torch_measure},
                             args.rounds)
            results["peer"] = report(
                "peer ratio", peer["imgclf"] / peer["torch"], 1.2,
                f"{peer['imgclf']:.0f} img/s imgclf (folder pipeline)",
                f"{peer['torch']:.0f} img/s PyTorch {torch.__version__} ({threads} threads, "
                f"2 loader workers decoding {files} JPEGs with PIL)")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
