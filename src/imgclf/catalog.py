"""The model registry as `imgclf models` shows it, read from catalog.json without Keras.

Importing the registry imports every model family, and so Keras and TensorFlow: seconds, for a
table. The table's rows (name, family, default input size, backbone parameters, ImageNet
weights, the whole description) are kept in catalog.json beside this file instead;
models/registry.py writes it (`write_catalog()`) and tests/test_models.py checks it matches.
"""

from __future__ import annotations

import fnmatch
import json
import textwrap
from pathlib import Path

CATALOG = Path(__file__).with_name("catalog.json")
COLUMNS = ("name", "family", "input", "params", "imagenet")


def rows(pattern: str = "*") -> list[dict]:
    """The catalog's rows whose name matches the shell-style ``pattern``, by name."""
    every = json.loads(CATALOG.read_text(encoding="utf-8"))
    return sorted((r for r in every if fnmatch.fnmatch(r["name"], pattern)), key=lambda r: r["name"])


def write(entries: list[dict]) -> None:
    CATALOG.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")


def table(entries: list[dict], width: int = 100) -> list[str]:
    """The table's lines, each description wrapped (never cut) in its column of a ``width``-wide
    terminal, and at least 40 characters wide whatever the terminal."""
    cells = [[r["name"], r["family"], "x".join(map(str, r["input"])) if r["input"] else "any",
              f"{r['params']:,}" if r["params"] is not None else "by config",
              "yes" if r["imagenet"] else "no"]
             for r in entries]
    widths = [max(len(c[i]) for c in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]

    def line(cols: list[str]) -> str:
        parts = [c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))]
        return "  ".join(parts) + "  "

    indent = len(line(list(COLUMNS)))
    out = [line(list(COLUMNS)) + "description"]
    for cols, r in zip(cells, entries):
        wrapped = textwrap.wrap(r["description"], max(width - indent, 40)) or [""]
        out.append(line(cols) + wrapped[0])
        out += [" " * indent + more for more in wrapped[1:]]
    return out
