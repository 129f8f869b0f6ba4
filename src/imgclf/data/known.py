"""The standard sets by name (`data.source: keras`, `data.name`): the files `keras.datasets`
and the Keras tutorials fetch, found in Keras' own cache (``$KERAS_HOME/datasets``, default
``~/.keras/datasets``) or fetched into it with `keras.utils.get_file`. A set already there as
`keras.datasets.<name>.load_data()` left it is read as it is; an archive placed in the cache
under its own name (cifar-10-python.tar.gz, flower_photos.tgz, ...) is extracted there, with
no network. Without network and without the files: one line naming the file, its address and
where to put it.

The cached files are read here rather than through `keras.datasets.*.load_data`, which
checks each file's hash and fetches it again on any mismatch: a cache planted by hand (or a
test) would never be read.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.errors import ConfigError, DataError

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class Known:
    files: tuple[str, ...]  # what get_file fetches into the cache (an archive is extracted beside it)
    url: str  # the one file's address, or the folder of several files
    found: tuple[str, ...]  # where the contents lie under the cache: the first complete one is read
    needs: tuple[str, ...] = ()  # what a found folder must hold to be complete (none: not empty)
    subdir: str = ""  # the files' folder under the cache

    @property
    def archive(self) -> bool:
        return self.files[0].endswith((".tar.gz", ".tgz"))

    def url_of(self, file: str) -> str:
        return self.url + file if self.url.endswith("/") else self.url


KNOWN = {
    "mnist": Known(("mnist.npz",), KERAS_URL + "mnist.npz", ("mnist.npz",)),
    "fashion_mnist": Known(FASHION_FILES, KERAS_URL, ("fashion-mnist",), FASHION_FILES, "fashion-mnist"),
    # extracted where get_file(<archive>) puts it, or where keras.datasets.cifar10.load_data() does
    "cifar10": Known(("cifar-10-python.tar.gz",), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     ("cifar-10-python_extracted/cifar-10-batches-py",
                      "cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"),
                     ("data_batch_1", "test_batch")),
    "cifar100": Known(("cifar-100-python.tar.gz",), "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      ("cifar-100-python_extracted/cifar-100-python",
                       "cifar-100-python-target/cifar-100-python", "cifar-100-python"), ("train", "test")),
    # the tutorials' get_file("flower_photos.tgz" | "flower_photos", extract=True), and Keras 2's untar
    "flowers": Known(("flower_photos.tgz",),
                     "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
                     ("flower_photos_extracted/flower_photos", "flower_photos/flower_photos",
                      "flower_photos")),
}


def cache_dir() -> Path:
    """Keras' own data-set cache."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets"


def cached(name: str, root: Path | None = None) -> Path | None:
    """Where ``name``'s contents lie complete under the cache (``root``), or None; fetches nothing."""
    known = KNOWN[name]
    root = cache_dir() if root is None else root
    for rel in known.found:
        path = root / rel
        if path.is_file() and not known.needs:
            return path
        if path.is_dir() and all((path / n).is_file() for n in known.needs) and any(path.iterdir()):
            return path
    return None


def locate(name: str) -> Path:
    """Where ``name``'s files lie in the cache, fetched (or extracted) first if they are not there."""
    if name not in KNOWN:
        raise ConfigError(f"Unknown `data.name`. Received: name={name} (known: {', '.join(KNOWN)})")
    found = cached(name)
    if found is None:
        found = cached(name, _fetch(name, KNOWN[name]))
    if found is None:
        known = KNOWN[name]
        raise DataError(f"data.name={name}: fetched {', '.join(known.files)}, but found none of "
                        f"{', '.join(known.found)} complete under {cache_dir()}")
    return found


def _fetch(name: str, known: Known) -> Path:
    """get_file for each of ``known``'s files not in the cache; the cache it used."""
    import keras  # the data floor stays free of TensorFlow until a set must be fetched

    root = cache_dir()
    for file in known.files:
        target = root / known.subdir / file
        if target.is_file() and not known.archive:
            continue
        present, url = target.is_file(), known.url_of(file)
        damaged = (f"data.name={name}: cannot extract {target} ({{}}); delete it to fetch it again, or "
                   f"place a good copy of {url} there")
        try:
            with warnings.catch_warnings():  # a file that is no archive: said below, in one line
                warnings.filterwarnings("ignore", message="Could not extract archive")
                got = Path(keras.utils.get_file(file, origin=url, cache_dir=str(root.parent),
                                                cache_subdir=str(Path("datasets", known.subdir)),
                                                extract=known.archive))
        except Exception as exc:  # keras wraps URLError and HTTPError in a plain Exception
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            if present:  # our own copy would not extract: leave no half of it to be read next time
                shutil.rmtree(root / f"{file[:file.find('.')]}_extracted", ignore_errors=True)
                raise DataError(damaged.format(reason)) from None
            raise DataError(f"data.name={name}: cannot download {file} ({reason}); without network, "
                            f"fetch {url} elsewhere and place it at {target}") from None
        if known.archive and not got.is_dir():
            raise DataError(damaged.format("not a complete .tar.gz archive"))
        # get_file may have used /tmp/.keras if the cache was not writable
        root = got.parent if known.archive else got.parents[1 if known.subdir else 0]
    return root


def read_arrays(name: str, path: Path, fine: bool = True):
    """(x_train, y_train, x_test, y_test, class names) of mnist, cifar10 or cifar100 at ``path``;
    a damaged file is one line saying to delete it."""
    try:
        return read_mnist(path) if name == "mnist" else read_cifar(path, fine)
    except (OSError, EOFError, ValueError, KeyError, TypeError, pickle.UnpicklingError,
            zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(f"data.name={name}: cannot read {path} ({reason}); delete it to fetch it "
                        "again") from None


def read_mnist(path: Path):
    with np.load(path, allow_pickle=False) as f:
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
