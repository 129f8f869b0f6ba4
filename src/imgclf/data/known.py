"""The standard sets by name (`data.source: keras`, `data.name`): the files `keras.datasets`
and the Keras tutorials fetch, found in Keras' own cache (``$KERAS_HOME/datasets``, default
``~/.keras/datasets``) or fetched into it with `keras.utils.get_file`. Without network and
without the files: one line naming the file, its address and where to put it.

The cached files are read here rather than through `keras.datasets.*.load_data`, which
checks each file's hash and fetches it again on any mismatch: a cache planted by hand (or a
test) would never be read.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.errors import ConfigError, DataError

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"]


@dataclass(frozen=True)
class Known:
    fetched: str  # the file get_file fetches
    url: str
    cached: tuple[str, ...]  # where its contents lie under the cache, the first that exists
    extract: bool = False


KNOWN = {
    "mnist": Known("mnist.npz", KERAS_URL + "mnist.npz", ("mnist.npz",)),
    "fashion_mnist": Known("fashion-mnist/*.gz", KERAS_URL, ("fashion-mnist",)),
    "cifar10": Known("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     ("cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"), extract=True),
    "cifar100": Known("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      ("cifar-100-python-target/cifar-100-python", "cifar-100-python"), extract=True),
    "flowers": Known("flower_photos.tgz",
                     "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
                     ("flower_photos_extracted/flower_photos", "flower_photos/flower_photos",
                      "flower_photos"), extract=True),
}


def cache_dir() -> Path:
    """Keras' own data-set cache."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets"


def locate(name: str) -> Path:
    """Where ``name``'s files lie in the cache, fetched first if they are not there."""
    if name not in KNOWN:
        raise ConfigError(f"Unknown `data.name`. Received: name={name} (known: {', '.join(KNOWN)})")
    known = KNOWN[name]
    found = _cached(known)
    if found is None:
        _fetch(name, known)
        found = _cached(known)
    if found is None:
        raise DataError(f"data.name={name}: fetched {known.fetched}, but found none of "
                        f"{', '.join(known.cached)} under {cache_dir()}")
    return found


def _cached(known: Known) -> Path | None:
    for rel in known.cached:
        path = cache_dir() / rel
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return path
    return None


def _fetch(name: str, known: Known) -> None:
    import keras  # the data floor stays free of TensorFlow until a set must be fetched

    try:
        if name == "fashion_mnist":
            for f in FASHION_FILES:
                keras.utils.get_file(f, origin=known.url + f, cache_subdir="datasets/fashion-mnist")
        else:
            stem = known.cached[0].split("/")[0].removesuffix("_extracted")  # Keras' own layout
            keras.utils.get_file(stem if known.extract else known.fetched, origin=known.url,
                                 extract=known.extract)
    except Exception as exc:  # keras wraps URLError and HTTPError in a plain Exception
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        where = cache_dir() / known.cached[-1]
        raise DataError(f"data.name={name}: cannot fetch {known.fetched} ({reason}); without network, "
                        f"fetch {known.url} elsewhere and place its contents at {where}") from None


def read_mnist(path: Path):
    with np.load(path) as f:
        return f["x_train"], f["y_train"], f["x_test"], f["y_test"], [str(i) for i in range(10)]


def read_cifar(folder: Path, fine: bool = True):
    """CIFAR's pickled batches: 10,000 rows of 3072 bytes (channel planes) and their labels."""
    def batch(name: str, key: str):
        with open(folder / name, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(d[key.encode()], dtype=np.int64)

    if (folder / "data_batch_1").is_file():  # CIFAR-10
        names = [f"data_batch_{i}" for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
        parts = [batch(n, "labels") for n in names]
        x_test, y_test = batch("test_batch", "labels")
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return x, y, x_test, y_test, CIFAR10
    key = "fine_labels" if fine else "coarse_labels"
    x, y = batch("train", key)
    x_test, y_test = batch("test", key)
    names = None
    if (folder / "meta").is_file():
        with open(folder / "meta", "rb") as fh:
            meta = pickle.load(fh, encoding="bytes")
        names = [n.decode() for n in meta[(key.removesuffix("s") + "_names").encode()]]
    return x, y, x_test, y_test, names
