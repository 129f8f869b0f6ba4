"""Folder decode efficiency: images/s of imgclf's folder pipeline (read, decode, resize,
channel conversion, batch, one-hot: data/pipeline.py, nothing cached) over a bare tf.data
loop of tf.io.read_file + tf.io.decode_image + tf.image.resize on the same files, with the
same parallelism (AUTOTUNE) and batch size, each pipeline built once and read in full every
round (the build, which reads the JPEG headers the scan found, is timed apart). Target >= 0.9.

    python benchmarks/decode.py [--folder DIR] [--size 224] [--rounds 5]

The default folder is ../shared/datasets/hymenoptera (real JPEG photos of many sizes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, alternate, report, timed  # noqa: E402

DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "hymenoptera"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(DEFAULT_FOLDER), help="a folder of class folders of images")
    ap.add_argument("--size", type=int, default=224, help="resize to SIZE x SIZE")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    from imgclf._tf import import_tensorflow

    tf = import_tensorflow()
    from imgclf.data import Split
    from imgclf.data.pipeline import make_dataset
    from imgclf.data.scan import find_images, unreadable_images, visible_subdirs

    root = Path(args.folder)
    if not root.is_dir():
        sys.exit(f"no such folder: {root}")
    files = [str(f) for d in visible_subdirs(root) for f in find_images(d)]

    split = Split(y=np.zeros(len(files), dtype=np.int64), ids=files, files=files)
    # a run scans its files before it builds the pipeline (data/scan.py, cached); the pipeline
    # plans its decoding from the headers that scan read
    unreadable_images([Path(f) for f in files])
    size = (args.size, args.size)
    print(f"{len(files)} files under {root}, resized to {size[0]}x{size[1]}, batch {args.batch_size}",
          flush=True)

    def build_ours():
        return make_dataset(split, image_size=size, channels=3, num_classes=2, batch_size=args.batch_size,
                            training=False, seed=0, cache=False)

    def build_bare():
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.map(lambda p: tf.image.resize(tf.io.decode_image(tf.io.read_file(p), channels=3,
                                                                 expand_animations=False), size),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(args.batch_size).prefetch(tf.data.AUTOTUNE)

    # each pipeline is built once (a run builds its pipeline once and reads it every epoch) and
    # read in full each round, nothing cached; the build, timed apart, is printed too
    built = {}
    for name, build in (("imgclf", build_ours), ("bare", build_bare)):
        start = time.perf_counter()
        built[name] = build()
        print(f"{name} pipeline built in {time.perf_counter() - start:.2f} s", flush=True)

    def read(ds):
        return sum(int((x[0] if isinstance(x, tuple) else x).shape[0]) for x in ds)

    read(built["imgclf"]), read(built["bare"])  # warm the file cache and trace both
    rates = alternate({name: (lambda ds=ds: timed(lambda: read(ds))) for name, ds in built.items()},
                      args.rounds)
    ok = report("folder decode efficiency", rates["imgclf"] / rates["bare"], 0.9,
                f"{rates['imgclf']:.0f} img/s (imgclf folder pipeline)",
                f"{rates['bare']:.0f} img/s (bare decode + resize)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
