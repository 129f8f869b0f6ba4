"""Data: sources (digits, folder, idx, npz), splits, the tf.data pipeline, the file scan."""

from imgclf.data.bundle import DataBundle, Split
from imgclf.data.sources import load_data

__all__ = ["DataBundle", "Split", "load_data"]
