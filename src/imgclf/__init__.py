"""imgclf: image-classification experiments with Keras 3 on TensorFlow, from one YAML file.

The Python API (imgclf.api) loads on first use: ``import imgclf`` stays free of TensorFlow,
so `imgclf --help` never waits for it.
"""

import os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512_VNNI and newer; on an
# AVX2 CPU they train convolutions 1.4-1.9x faster than its default Eigen ones (README,
# Performance). Read once, when TensorFlow loads: set before it, and a user's own 0 wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from imgclf._version import __version__
from imgclf.errors import ConfigError, DataError, ImgclfError, ModelError, TrainingError

_API = ("train", "resume", "tune", "load", "compare", "Run", "Evaluation")

__all__ = ["ConfigError", "DataError", "ImgclfError", "ModelError", "TrainingError", "__version__", *_API]


def __getattr__(name: str):
    """``imgclf.train`` and the rest of the API (PEP 562), imported on first use with
    TensorFlow first, quietly."""
    if name not in _API:
        raise AttributeError(f"module 'imgclf' has no attribute {name!r}")
    from imgclf._tf import import_tensorflow

    import_tensorflow()
    from imgclf import api

    globals().update({n: getattr(api, n) for n in _API})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
