"""Find image files under a folder and check that each one decodes, in parallel, once."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
# What TensorFlow's decode_image reads; anything else is reported as a bad file.
DECODABLE_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "MPO"}


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def visible_subdirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not is_hidden(p.name)), key=lambda p: p.name
    )


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order; hidden files and folders
    are skipped and symlinked folders are not followed (no loops)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in files:
            if not is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found)


def check_image(path: Path) -> str | None:
    """None when the file decodes, else a short reason."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            if im.format not in DECODABLE_FORMATS:
                return f"unsupported format {im.format}"
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads every byte
            im.load()
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, ValueError, SyntaxError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def check_images(paths: list[Path], workers: int | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into (readable, [(path, reason)]) keeping the order."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(check_image, paths))
    good = [p for p, r in zip(paths, reasons) if r is None]
    bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    return good, bad
