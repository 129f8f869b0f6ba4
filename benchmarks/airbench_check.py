"""Accuracy cross-check for the CIFAR-10 recipe: airbench's published method (Jordan 2024),
written out here in plain PyTorch from its paper's description, on the same JPEG folder.

    python benchmarks/airbench_check.py [--folder ../shared/datasets/cifar10]
                                        [--widths 32,128,128] [--epochs 6] [--seed 2]

Compare its test accuracy with `imgclf train -c configs/cifar10.yaml --set seed=2 --set
'model.filters=[32,128,128]' --set train.epochs=6` (README, Performance: the recipe search).
What it has that imgclf does not: Lookahead (every 5 steps the weights move to an average
whose decay grows as (step/total)^3), alternating flips (each image mirrored every other
epoch), batch norm with eps 1e-12 and momentum 0.6, a summed loss at batch 1024 with its
rate (11.5 per 1024 examples) and decay, a warm-up to 23% then a fall to 0.07, the whitening
bias frozen after 3 epochs. The same: the whitened 2x2 first layer, identity-initialised
convs, GELU, logits / 9, label smoothing 0.2, 2-pixel reflected shifts, 6-view TTA (logits).
Held out: 2,000 random training images, as the config; standardised by the rest's mean/std.
Needs the `bench` extra (torch) and about 13 minutes for the default on a 2-core AVX2 CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CIFAR10_DIR, image_folder  # noqa: E402


def load(folder: Path):
    """uint8 images (N, 32, 32, 3) and class indices of folder/<class>/, as ImageFolder lists them."""
    from PIL import Image

    samples = image_folder(folder)
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in samples])
    return images, np.array([label for _, label in samples])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=CIFAR10_DIR)
    ap.add_argument("--widths", default="32,128,128", help="the three conv pairs' widths")
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args(argv)
    if not (args.folder / "train").is_dir():
        sys.exit(f"no train/ folder under {args.folder}")
    import torch
    import torch.nn.functional as F
    from torch import nn

    from imgclf.models.fastnet import LOGIT_SCALE

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    widths = [int(w) for w in args.widths.split(",")]
    start = time.time()
    xtr, ytr = load(args.folder / "train")
    xte, yte = load(args.folder / "test")
    keep = np.random.default_rng(args.seed).permutation(len(xtr))[2000:]

    def tensor(x):
        return torch.tensor(x).permute(0, 3, 1, 2).float() / 255

    xtr, ytr, xte, yte = tensor(xtr[keep]), torch.tensor(ytr[keep]), tensor(xte), torch.tensor(yte)
    mean, std = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    print(f"{len(xtr)} training and {len(xte)} test images loaded in {time.time() - start:.0f} s", flush=True)

    class BatchNorm(nn.BatchNorm2d):  # no learned scale
        def __init__(self, n):
            super().__init__(n, eps=1e-12, momentum=0.4)
            self.weight.requires_grad = False

    class Conv(nn.Conv2d):  # the first in-channels filters start as the identity
        def __init__(self, cin, cout):
            super().__init__(cin, cout, 3, padding="same", bias=False)

        def reset_parameters(self):
            super().reset_parameters()
            nn.init.dirac_(self.weight.data[:self.weight.size(1)])

    class Scale(nn.Module):
        def forward(self, x):
            return x * LOGIT_SCALE

    def pair(cin, cout):
        return [Conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout), nn.GELU(),
                Conv(cout, cout), BatchNorm(cout), nn.GELU()]

    whiten = nn.Conv2d(3, 24, 2, bias=True)
    net = nn.Sequential(whiten, nn.GELU(), *pair(24, widths[0]), *pair(widths[0], widths[1]),
                        *pair(widths[1], widths[2]), nn.MaxPool2d(3), nn.Flatten(),
                        nn.Linear(widths[2], 10, bias=False), Scale()).to(memory_format=torch.channels_last)
    with torch.no_grad():  # eigenvectors of 5,000 images' 2x2 patches, eps 5e-4 in standardised units
        patches = xtr[:5000].unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 12).double()
        values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (vectors.T.reshape(-1, 3, 2, 2) / torch.sqrt(values + 5e-4).view(-1, 1, 1, 1)).float()
        whiten.weight.copy_(torch.cat([filters, -filters]))
        whiten.weight.requires_grad = False

    batch, momentum = 1024, 0.85
    total = int(args.epochs * -(-len(xtr) // batch))
    kilo = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilo, 0.0153 * batch / kilo
    norm_biases = [m.bias for m in net.modules() if isinstance(m, BatchNorm)]
    others = [p for p in net.parameters() if p.requires_grad and all(p is not b for b in norm_biases)]
    opt = torch.optim.SGD([dict(params=norm_biases, lr=64 * lr, weight_decay=wd / (64 * lr)),
                           dict(params=others, lr=lr, weight_decay=wd / lr)],
                          momentum=momentum, nesterov=True)
    warm = int(0.23 * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.2 + 0.8 * s / warm if s < warm else 1 - 0.93 * (s - warm) / (total - warm))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")
    slow = {k: v.clone() for k, v in net.state_dict().items()}

    def lookahead(decay):
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if v.dtype == torch.float32:
                    slow[k].lerp_(v, 1 - decay)
                    v.copy_(slow[k])

    padded = F.pad(xtr, (2,) * 4, mode="reflect")
    flipped = torch.rand(len(xtr)) < 0.5
    rows, step, start = torch.arange(32), 0, time.time()
    for epoch in range(int(np.ceil(args.epochs))):
        if epoch == 3:
            whiten.bias.requires_grad = False
        net.train()
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr), batch):
            if step >= total:
                break
            idx = order[i:i + batch]
            dy, dx = torch.randint(0, 5, (2, len(idx)))
            img = padded[idx].gather(2, (dy[:, None] + rows)[:, None, :, None].expand(-1, 3, -1, 36))
            img = img.gather(3, (dx[:, None] + rows)[:, None, None, :].expand(-1, 3, 32, -1))
            img = torch.where((flipped[idx] ^ bool(epoch % 2))[:, None, None, None], img.flip(-1), img)
            loss = loss_fn(net(img.contiguous(memory_format=torch.channels_last)), ytr[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            if step % 5 == 0:
                lookahead(0.95 ** 5 * (step / total) ** 3)
        print(f"epoch {epoch + 1}: loss {loss.item() / len(idx):.4f}, {time.time() - start:.0f} s",
              flush=True)
    lookahead(1.0)
    train_s = time.time() - start

    net.eval()
    with torch.no_grad():
        def logits(x):
            return torch.cat([net(x[i:i + 1000].contiguous(memory_format=torch.channels_last))
                              for i in range(0, len(x), 1000)])

        def mirrored(x):
            return 0.5 * logits(x) + 0.5 * logits(x.flip(-1))

        pad = F.pad(xte, (1,) * 4, mode="reflect")
        plain, mirror = logits(xte), mirrored(xte)
        shifted = 0.5 * mirrored(pad[:, :, :32, :32]) + 0.5 * mirrored(pad[:, :, 2:, 2:])
        views = {"plain": plain, "mirror": mirror, "6-view TTA": 0.5 * mirror + 0.5 * shifted}
    accuracy = ", ".join(f"{(z.argmax(1) == yte).float().mean().item():.4f} {name}"
                         for name, z in views.items())
    print(f"widths {widths}, {args.epochs:g} epochs, seed {args.seed}: test accuracy {accuracy}; "
          f"training {train_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
