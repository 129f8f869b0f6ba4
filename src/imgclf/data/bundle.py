"""What every data source returns: a DataBundle of named Splits (labels with images or files)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Split:
    y: np.ndarray  # int labels
    ids: list  # what predictions.csv calls each item: a relative path or an index
    x: np.ndarray | None = None  # uint8 (N, H, W, C) for array sources
    files: list[str] | None = None  # absolute paths for the folder source

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def concat(parts: list[Split]) -> Split:
        """The items of ``parts``, one after the other."""
        return Split(
            y=np.concatenate([p.y for p in parts]),
            ids=[i for p in parts for i in p.ids],
            x=None if parts[0].x is None else np.concatenate([p.x for p in parts]),
            files=None if parts[0].files is None else [f for p in parts for f in p.files],
        )

    def take(self, idx: np.ndarray) -> Split:
        return Split(
            y=self.y[idx],
            ids=[self.ids[i] for i in idx],
            x=None if self.x is None else self.x[idx],
            files=None if self.files is None else [self.files[i] for i in idx],
        )


@dataclass
class DataBundle:
    class_names: list[str]
    splits: dict[str, Split]
    channels: int  # the data's own channel count
    image_size: tuple[int, int] | None  # the arrays' own size; None for folders (they vary)
    kind: str  # "arrays" or "files"
    id_column: str  # "index" or "file"
    bad_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        parts = [f"{name} {len(s)}" for name, s in self.splits.items()]
        return f"{self.num_classes} classes; " + ", ".join(parts)
