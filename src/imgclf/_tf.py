"""Import TensorFlow without its C++ start-up chatter on stderr.

TensorFlow prints CUDA probes and CPU-feature notes to file descriptor 2 before its own
log settings apply, so TF_CPP_MIN_LOG_LEVEL alone cannot hide them. The import runs with
fd 2 pointed at a temporary file; if the import fails, what it printed is shown after all.
Set IMGCLF_TF_LOGS=1 to see everything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


def import_tensorflow(setup=None):
    """TensorFlow, imported quietly. ``setup()`` runs after the import and before TensorFlow's
    first op: what must be configured at program start (MultiWorkerMirroredStrategy)."""
    if "tensorflow" in sys.modules or os.environ.get("IMGCLF_TF_LOGS"):
        import tensorflow as tf

        if setup is not None:
            setup()
        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import keras  # noqa: F401  (imports tensorflow, the backend)
        import tensorflow as tf

        if setup is not None:
            setup()
        tf.constant(0) + 1  # the first op loads the device plugins: more chatter
    return tf


@contextmanager
def quiet_stderr():
    """File descriptor 2 pointed at a temporary file for the block (C++ libraries' notes:
    TensorFlow's, the TFLite converter's and interpreter's); shown after all if it fails."""
    if os.environ.get("IMGCLF_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
