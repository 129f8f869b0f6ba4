"""Shared fixtures: small real image files and arrays the tests make themselves."""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the scan cache (data/scan.py) of this test session, not the user's ~/.cache/imgclf
os.environ["IMGCLF_CACHE_DIR"] = tempfile.mkdtemp(prefix="imgclf-test-cache-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# tiny, fast training settings for end-to-end tests
FAST = [
    "train.epochs=2",
    "data.batch_size=8",
    "model.filters=[8]",
    "model.dense_units=8",
    "train.verbose=0",
]


def pattern_image(label: int, rng: np.random.Generator, size=(16, 16), mode="RGB") -> Image.Image:
    """Class 0 is bright on top, class 1 bright at the bottom, class 2 bright on the left...:
    a pattern a small model learns in a few steps, with noise so no two images match."""
    h, w = size
    img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    region = [np.s_[: h // 2], np.s_[h // 2 :], np.s_[:, : w // 2], np.s_[:, w // 2 :]][label % 4]
    img[region] = rng.integers(190, 255, size=img[region].shape, dtype=np.uint8)
    im = Image.fromarray(img, "RGB")
    return im.convert(mode) if mode != "RGB" else im


def write_class_folder(root: Path, classes: dict[str, int], seed: int = 0, exts=(".png", ".jpg")) -> Path:
    """root/<class>/img_<i><ext>, ``classes`` maps class name -> number of images."""
    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            ext = exts[i % len(exts)]
            pattern_image(label, rng).save(folder / f"img_{i:03d}{ext}")
    return root


@pytest.fixture
def folder_data(tmp_path) -> Path:
    """Two classes of 12 small images each, PNG and JPEG mixed."""
    return write_class_folder(tmp_path / "data", {"ants": 12, "bees": 12})


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """IDX files shaped like Fashion-MNIST's, 3 classes of 28x28 pattern images."""
    rng = np.random.default_rng(1)
    root = tmp_path / "idx"
    root.mkdir()
    for prefix, n in (("train", 60), ("t10k", 15)):
        y = np.arange(n) % 3
        x = np.stack([np.asarray(pattern_image(c, rng, (28, 28), "L")) for c in y])
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def sklearn_metrics(rows, class_names):
    """Recompute a split's metrics with scikit-learn from predictions.csv rows."""
    from sklearn import metrics as skm

    index = {c: i for i, c in enumerate(class_names)}
    y = rows["true_label"].astype(str).map(index).to_numpy()
    probs = rows[[f"prob_{c}" for c in class_names]].to_numpy()
    pred = probs.argmax(1)
    labels = list(range(len(class_names)))
    out = {"accuracy": skm.accuracy_score(y, pred), "loss": skm.log_loss(y, probs, labels=labels)}
    present = sorted(np.unique(y).tolist())  # imgclf averages over the classes present as true labels
    for avg in ("macro", "weighted"):
        kw = dict(average=avg, labels=present, zero_division=0)
        out[f"precision_{avg}"] = skm.precision_score(y, pred, **kw)
        out[f"recall_{avg}"] = skm.recall_score(y, pred, **kw)
        out[f"f1_{avg}"] = skm.f1_score(y, pred, **kw)
    out["cohen_kappa"] = skm.cohen_kappa_score(y, pred, labels=labels)
    k = max(1, min(5, len(class_names) - 1))
    if len(class_names) == 2:  # scikit-learn takes the positive class's scores for two classes
        out["top_k_accuracy"] = skm.top_k_accuracy_score(y, probs[:, 1], k=k, labels=labels)
        out["roc_auc_ovr"] = skm.roc_auc_score(y, probs[:, 1])
    else:
        out["top_k_accuracy"] = skm.top_k_accuracy_score(y, probs, k=k, labels=labels)
        out["roc_auc_ovr"] = skm.roc_auc_score(y, probs, multi_class="ovr", labels=labels)
    return y, pred, out


# ----------------------------------------------------- trained runs, shared by the report tests
def train_cli(out: Path, *overrides: str):
    """`imgclf train` through the CLI with FAST settings; returns typer's result (exit code, output)."""
    from typer.testing import CliRunner

    from imgclf.cli import app

    args = ["train", "--out", str(out)]
    for o in [*FAST, *overrides]:
        args += ["--set", o]
    return CliRunner().invoke(app, args)


def train_run(out: Path, *overrides: str) -> Path:
    """Train through the CLI with FAST settings; returns the run directory."""
    result = train_cli(out, *overrides)
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def digits_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished runs on the same digits split (val and test): a CNN and an MLP."""
    out = tmp_path_factory.mktemp("digits_runs")
    cnn = train_run(out, "data.test_split=0.2", "output.name=cnn")
    mlp = train_run(out, "data.test_split=0.2", "model.name=mlp", "model.hidden_units=[32]",
                    "output.name=mlp")
    return cnn, mlp


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory) -> Path:
    """A finished run on three classes of 16x16 image files (val split only)."""
    root = tmp_path_factory.mktemp("folder_run")
    data = write_class_folder(root / "data", {"ants": 10, "bees": 10, "wasps": 10})
    return train_run(root / "runs", "data.source=folder", f"data.path={data}", "data.image_size=[16,16]",
                     "data.val_split=0.4")


def interrupt_after(monkeypatch, stop_after: int):
    """Make the checkpoint of epoch ``stop_after`` the last thing a run does (Ctrl-C)."""
    from imgclf.training.callbacks import Checkpoint

    save = Checkpoint.on_epoch_end

    def interrupt(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch + 1 == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "on_epoch_end", interrupt)
    return lambda: monkeypatch.setattr(Checkpoint, "on_epoch_end", save)
