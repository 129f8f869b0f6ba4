"""Data: sources (digits, folder, idx, npz), splits, the tf.data pipeline, the file scan."""

from imgclf.data.sources import DataBundle, Split, load_data

__all__ = ["DataBundle", "Split", "load_data"]
