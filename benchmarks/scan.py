"""Cached scan cost: seconds of a scan of an unchanged folder (find_images + unreadable_images,
every verdict from the cache of data/scan.py) over the first scan of it (every file decoded by
TensorFlow), both in one process on a fresh temporary IMGCLF_CACHE_DIR. The first scan runs
once; the cached one ``--rounds`` times, and its median counts. Target <= 0.05.

    python benchmarks/scan.py [--folder DIR] [--rounds 5]

The default folder is ../shared/datasets/cifar10 (60,000 32x32 JPEG files in train/<class>/
and test/<class>/).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, report  # noqa: E402

DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "cifar10"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(DEFAULT_FOLDER), help="a folder of image files (any depth)")
    ap.add_argument("--rounds", type=int, default=5, help="cached scans to take the median of")
    args = ap.parse_args(argv)
    root = Path(args.folder)
    if not root.is_dir():
        sys.exit(f"no such folder: {root}")

    with tempfile.TemporaryDirectory(prefix="imgclf-scan-bench-") as cache:
        os.environ["IMGCLF_CACHE_DIR"] = cache  # read when the scan looks for its cache
        from imgclf._tf import import_tensorflow

        import_tensorflow()  # imported before the clock starts, as a run has it by its scan
        from imgclf.data.scan import LAST_SCAN, find_images, unreadable_images

        def scan() -> tuple[float, float, int]:
            start = time.perf_counter()
            files = find_images(root)
            listed = time.perf_counter()
            unreadable_images(files)
            return listed - start, time.perf_counter() - listed, len(files)

        listing, check, n = scan()
        first = listing + check
        print(f"first scan: {n:,} files in {first:.2f} s ({n / first:,.0f} files/s; listing {listing:.2f} s, "
              f"check {check:.2f} s, {LAST_SCAN['decoded']:,} decoded)", flush=True)
        cached = []
        for _ in range(args.rounds):
            listing, check, _ = scan()
            cached.append(listing + check)
            print(f"cached scan: {listing + check:.3f} s (listing {listing:.3f} s, check {check:.3f} s, "
                  f"{LAST_SCAN['decoded']:,} decoded)", flush=True)
    median = statistics.median(cached)
    ok = report("cached scan / first scan", median / first, 0.05,
                f"{median:.3f} s ({n / median:,.0f} files/s, median of {len(cached)} cached scans)",
                f"{first:.2f} s ({n / first:,.0f} files/s, first scan)", above=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
