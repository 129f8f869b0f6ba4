import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_class_folder
from imgclf.config import DataConfig
from imgclf.data import load_data
from imgclf.data.splits import split_indices
from imgclf.errors import ConfigError, DataError


def folder_cfg(path, **kw):
    return DataConfig(source="folder", path=str(path), **kw)


# ------------------------------------------------------------------ sources
def test_digits_source():
    b = load_data(DataConfig(source="digits", val_split=0.2, test_split=0.2), seed=0)
    assert b.class_names == [str(i) for i in range(10)]
    assert sum(len(s) for s in b.splits.values()) == 1797
    x = b.splits["train"].x
    assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 1) and x.max() == 255


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (40, 10, 12, 3), dtype=np.uint8),
             y_train=np.arange(40) % 2, x_test=rng.integers(0, 255, (6, 10, 12, 3), dtype=np.uint8),
             y_test=np.arange(6) % 2, class_names=np.array(["cat", "dog"]))
    b = load_data(DataConfig(source="npz", path=str(path), val_split=0.25), seed=0)
    assert b.class_names == ["cat", "dog"]
    assert [len(b.splits[k]) for k in ("train", "val", "test")] == [30, 10, 6]
    assert b.image_size == (10, 12) and b.channels == 3


def test_npz_float_images_in_unit_range_are_scaled(tmp_path):
    path = tmp_path / "f.npz"
    x = np.full((10, 4, 4), 0.5, dtype=np.float32)
    np.savez(path, x_train=x, y_train=np.arange(10) % 2)
    b = load_data(DataConfig(source="npz", path=str(path), val_split=0.2), seed=0)
    assert b.splits["train"].x.dtype == np.uint8 and int(b.splits["train"].x.max()) == 128


def test_npz_missing_arrays(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 4, 4)))
    with pytest.raises(DataError, match="x_train"):
        load_data(DataConfig(source="npz", path=str(path)), seed=0)


def test_idx_source_uses_the_official_test_set(idx_dir):
    b = load_data(DataConfig(source="idx", path=str(idx_dir), val_split=0.2), seed=0)
    assert len(b.splits["test"]) == 15 and len(b.splits["train"]) + len(b.splits["val"]) == 60
    assert b.image_size == (28, 28) and b.channels == 1
    assert b.splits["test"].ids == list(range(15))


def test_idx_missing_folder(tmp_path):
    with pytest.raises(DataError, match="IDX folder not found"):
        load_data(DataConfig(source="idx", path=str(tmp_path / "nope")), seed=0)


def test_idx_rejects_a_test_holdout(idx_dir):
    with pytest.raises(ConfigError, match="own test set"):
        load_data(DataConfig(source="idx", path=str(idx_dir), holdout_last_n=2), seed=0)


def test_folder_classes_sorted_recursive_case_insensitive(tmp_path):
    root = write_class_folder(tmp_path / "d", {"zebra": 4, "Ant": 4}, exts=(".PNG", ".Jpeg"))
    nested = root / "zebra" / "more" / "deeper"
    nested.mkdir(parents=True)
    (root / "zebra" / "img_000.PNG").rename(nested / "moved.PNG")
    (root / "zebra" / "notes.txt").write_text("not an image")
    (root / "zebra" / ".hidden.png").write_bytes(b"junk")
    b = load_data(folder_cfg(root, val_split=0.25), seed=0)
    assert b.class_names == ["Ant", "zebra"]
    ids = [i for s in b.splits.values() for i in s.ids]
    assert len(ids) == 8 and "zebra/more/deeper/moved.PNG" in ids
    assert not b.bad_files


def test_folder_with_train_val_test_subfolders(tmp_path):
    for split, n in (("train", 6), ("val", 3), ("test", 2)):
        write_class_folder(tmp_path / "d" / split, {"a": n, "b": n}, seed=len(split))
    b = load_data(folder_cfg(tmp_path / "d", val_split=0.5), seed=0)
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 12, "val": 6, "test": 4}
    assert all(i.startswith("val/") for i in b.splits["val"].ids)


def test_folder_val_class_unknown_to_train(tmp_path):
    write_class_folder(tmp_path / "d" / "train", {"a": 4, "b": 4})
    write_class_folder(tmp_path / "d" / "val", {"a": 2, "c": 2})
    with pytest.raises(DataError, match="not in train"):
        load_data(folder_cfg(tmp_path / "d"), seed=0)


def test_corrupt_files_are_skipped_and_listed(folder_data):
    (folder_data / "ants" / "truncated.jpg").write_bytes(
        (folder_data / "ants" / "img_001.jpg").read_bytes()[:200])
    png = (folder_data / "ants" / "img_000.png").read_bytes()
    (folder_data / "ants" / "cut.png").write_bytes(png[:-20])  # PIL reads it; TensorFlow not
    (folder_data / "ants" / "empty.png").write_bytes(b"")
    (folder_data / "bees" / "text.jpg").write_text("this is not a JPEG")
    Image.new("1", (8, 8)).save(folder_data / "bees" / "onebit.bmp")  # TF reads no 1-bit BMP
    b = load_data(folder_cfg(folder_data), seed=0)
    bad = dict(b.bad_files)
    assert set(bad) == {"ants/truncated.jpg", "ants/cut.png", "ants/empty.png", "bees/text.jpg",
                        "bees/onebit.bmp"}
    assert bad["ants/empty.png"] == "empty file"
    everywhere = [i for s in b.splits.values() for i in s.ids]
    assert not set(bad) & set(everywhere) and len(everywhere) == 24


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_data(folder_cfg(tmp_path / "nope"), seed=0)



def test_single_class(tmp_path):
    root = write_class_folder(tmp_path / "d", {"only": 5})
    with pytest.raises(DataError, match="at least 2"):
        load_data(folder_cfg(root), seed=0)


def test_no_validation_data_is_refused(folder_data):
    with pytest.raises(ConfigError, match="validation"):
        load_data(folder_cfg(folder_data, val_split=0.0), seed=0)


# ------------------------------------------------------------------ splits
def _ids(bundle):
    return {k: list(v.ids) for k, v in bundle.splits.items()}


def test_same_seed_same_split_and_no_leakage(tmp_path):
    root = write_class_folder(tmp_path / "d", {"a": 20, "b": 14, "c": 9})
    cfg = folder_cfg(root, val_split=0.3, test_split=0.2)
    first, again = load_data(cfg, seed=5), load_data(cfg, seed=5)
    assert _ids(first) == _ids(again)
    other = load_data(cfg, seed=6)
    assert _ids(other)["val"] != _ids(first)["val"]
    parts = [set(v) for v in _ids(first).values()]
    assert sum(len(p) for p in parts) == 43 and len(set().union(*parts)) == 43


def test_val_split_is_stratified():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    idx = split_indices(y, val_split=0.2, test_split=0.0, holdout_last_n=0, seed=1,
                        has_val=False, has_test=False)
    assert np.bincount(y[idx["val"]]).tolist() == [10, 6, 4]


def test_val_and_test_split_are_both_fractions_of_the_whole():
    """val_split 0.15 with test_split 0.15 is 70/15/15, not 72/13/15 (val taken from the rest)."""
    y = np.array([0] * 100 + [1] * 60 + [2] * 40)
    idx = split_indices(y, val_split=0.15, test_split=0.15, holdout_last_n=0, seed=1,
                        has_val=False, has_test=False)
    assert {k: len(v) for k, v in idx.items()} == {"test": 30, "val": 30, "train": 140}
    assert np.bincount(y[idx["val"]]).tolist() == [15, 9, 6]
    b = load_data(DataConfig(source="digits", val_split=0.15, test_split=0.15), seed=0)
    assert len(b.splits["val"]) == len(b.splits["test"]) == 270  # 15% of 1797, rounded up
    with pytest.raises(ConfigError, match="val_split.*test_split"):
        split_indices(y, val_split=0.5, test_split=0.5, holdout_last_n=0, seed=1, has_val=False,
                      has_test=False)


def test_holdout_last_n_takes_the_last_sorted_files(tmp_path):
    root = write_class_folder(tmp_path / "d", {"a": 6, "b": 5})
    b = load_data(folder_cfg(root, holdout_last_n=2, val_split=0.25), seed=0)
    assert b.splits["test"].ids == ["a/img_004.png", "a/img_005.jpg", "b/img_003.jpg", "b/img_004.png"]
    rest = set(b.splits["train"].ids) | set(b.splits["val"].ids)
    assert len(rest) == 7 and not rest & set(b.splits["test"].ids)


def test_holdout_cannot_take_a_whole_class(tmp_path):
    root = write_class_folder(tmp_path / "d", {"a": 6, "b": 2})
    with pytest.raises(DataError, match="holdout_last_n"):
        load_data(folder_cfg(root, holdout_last_n=2), seed=0)


# ----------------------------------------------------------------- pipeline
def _batches(split, **kw):
    from imgclf.data.pipeline import make_dataset

    args = dict(image_size=(16, 16), channels=3, num_classes=2, batch_size=4, training=False,
                seed=0)
    args.update(kw)
    return list(make_dataset(split, **args).as_numpy_iterator())


def test_pipeline_decodes_resizes_and_one_hots(folder_data):
    b = load_data(folder_cfg(folder_data), seed=0)
    batches = _batches(b.splits["val"], image_size=(12, 20))
    x, y = batches[0]
    assert x.shape == (4, 12, 20, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 150  # raw pixels, not 0..1
    assert y.shape == (4, 2) and set(np.unique(y)) <= {0.0, 1.0}
    labels = np.concatenate([bt[1].argmax(1) for bt in batches])
    assert labels.tolist() == b.splits["val"].y.tolist()  # eval order is split order


@pytest.mark.parametrize("want", [1, 3])
def test_pipeline_converts_channels(folder_data, want):
    b = load_data(folder_cfg(folder_data), seed=0)
    x, _ = _batches(b.splits["val"], channels=want)[0]
    assert x.shape[-1] == want


def test_pipeline_gray_arrays_to_rgb_and_resize():
    b = load_data(DataConfig(source="digits"), seed=0)
    x, _ = _batches(b.splits["val"], image_size=(16, 16), channels=3, num_classes=10)[0]
    assert x.shape == (4, 16, 16, 3)
    assert np.allclose(x[..., 0], x[..., 1]) and np.allclose(x[..., 1], x[..., 2])


def test_pipeline_shuffles_training_data_by_seed():
    b = load_data(DataConfig(source="digits"), seed=0)

    def order(seed):
        return np.concatenate([y.argmax(1) for _, y in _batches(
            b.splits["train"], image_size=(8, 8), channels=1, num_classes=10, training=True,
            seed=seed)])

    assert order(1).tolist() == order(1).tolist()
    assert order(1).tolist() != order(2).tolist()
    assert sorted(order(1).tolist()) == sorted(b.splits["train"].y.tolist())


def test_empty_val_folder_falls_back_to_val_split(tmp_path):
    write_class_folder(tmp_path / "d" / "train", {"a": 10, "b": 10})
    (tmp_path / "d" / "val" / "a").mkdir(parents=True)
    b = load_data(folder_cfg(tmp_path / "d", val_split=0.2), seed=0)
    assert len(b.splits["val"]) == 4 and len(b.splits["train"]) == 16


def test_npz_whole_float_labels_are_accepted_and_empty_arrays_refused(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, x_train=np.zeros((10, 4, 4), np.uint8), y_train=(np.arange(10) % 2).astype("float32"))
    b = load_data(DataConfig(source="npz", path=str(path), val_split=0.2), seed=0)
    assert b.splits["train"].y.dtype == np.int64
    np.savez(path, x_train=np.zeros((10, 4, 4), np.uint8), y_train=np.arange(10) * 0.5)
    with pytest.raises(DataError, match="whole numbers"):
        load_data(DataConfig(source="npz", path=str(path)), seed=0)
    np.savez(path, x_train=np.zeros((0, 4, 4), np.uint8), y_train=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="no images"):
        load_data(DataConfig(source="npz", path=str(path)), seed=0)


def test_corrupt_idx_file(idx_dir):
    target = idx_dir / "train-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 50)[:-12] + b"garbage!")
    with pytest.raises(DataError, match="IDX"):
        load_data(DataConfig(source="idx", path=str(idx_dir)), seed=0)


def test_shrinking_averages_and_growing_interpolates():
    """Folder images shrunk 3x or more are area-averaged (1-pixel stripes become their mean
    grey, not a moire of black and white); grown ones are interpolated."""
    import tensorflow as tf

    from imgclf.data.decode import resize_image

    stripes = np.zeros((32, 32, 3), np.float32)
    stripes[:, ::2] = 255.0
    small = resize_image(tf.constant(stripes), (8, 8)).numpy()
    np.testing.assert_allclose(small, 127.5, atol=1e-3)
    ramp = np.tile(np.linspace(0, 255, 4, dtype=np.float32)[None, :, None], (4, 1, 3))
    big = resize_image(tf.constant(ramp), (8, 8)).numpy()
    assert big.shape == (8, 8, 3)
    assert np.all(np.diff(big[0, :, 0]) >= 0) and len(np.unique(big[0, :, 0].round(3))) > 4  # smooth ramp


@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_the_pipeline_decodes_every_kind_of_file_as_predict_does(tmp_path, size):
    """make_dataset reads JPEG headers to decode groups of alike files without branches (a
    scaled JPEG decode, then the same resize); every image must come out pixel for pixel as
    decode_image (what predict, explain and evaluate's file loading use) gives it."""
    import tensorflow as tf

    from imgclf.data.decode import decode_image
    from imgclf.data.pipeline import decode_files

    rng = np.random.default_rng(0)
    shapes = [(32, 32), (48, 40), (100, 80), (400, 300), (1000, 700), (60, 500), (33, 31)]
    files = []
    for i, (h, w) in enumerate(shapes):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        img.save(tmp_path / f"c{i}.jpg", quality=90)
        files.append(tmp_path / f"c{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(tmp_path / "gray.jpg")
    rgb = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (90, 64, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    Image.fromarray(rng.integers(0, 255, (90, 64, 3), dtype=np.uint8)).save(tmp_path / "jpeg_named.png",
                                                                          format="JPEG")
    files += [tmp_path / n for n in ("gray.jpg", "cmyk.jpg", "p.png", "jpeg_named.png")]
    files = [str(f) for f in files]
    from imgclf.data.scan import HEADERS, unreadable_images

    unscanned = list(decode_files(files, size).as_numpy_iterator())  # headers read from the files
    assert unreadable_images([Path(f) for f in files]) == []  # the scan, as a run does first
    assert all(str(Path(f).absolute()) in HEADERS for f in files)
    scanned = list(decode_files(files, size).as_numpy_iterator())  # headers from the scan
    assert len(unscanned) == len(scanned) == len(files)
    for f, a, b in zip(files, unscanned, scanned):
        want = decode_image(tf.constant(f), size).numpy()
        assert a.shape == (*size, 3) and np.array_equal(a, want) and np.array_equal(b, want), f
    # JPEGs all of one size (CIFAR's kind) take one branch-free map: the same pixels again
    for shape in [size, (100, 90), (500, 420)]:
        alike = []
        for i in range(3):
            alike.append(str(tmp_path / f"alike_{shape[0]}_{i}.jpg"))
            Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(alike[-1])
        unreadable_images([Path(f) for f in alike])
        for f, img in zip(alike, decode_files(alike, size).as_numpy_iterator()):
            assert np.array_equal(img, decode_image(tf.constant(f), size).numpy()), f


def test_a_folder_of_grayscale_images_is_read_with_one_channel_unless_asked(tmp_path):
    """Its own channel count: 1 when every image is grayscale (saved as L PNGs and grayscale
    JPEGs), 3 as soon as one is in colour, and data.channels decides over both."""
    import yaml

    from conftest import pattern_image, train_run

    rng = np.random.default_rng(0)
    gray = tmp_path / "gray"
    for name in ("a", "b"):
        (gray / name).mkdir(parents=True)
        for i in range(4):
            pattern_image(i % 2, rng).convert("L").save(gray / name / f"{i}.{'png' if i % 2 else 'jpg'}")

    def channels(*extra):
        run = train_run(tmp_path / "runs", "data.source=folder", f"data.path={gray}", "data.val_split=0.25",
                        "data.image_size=[16,16]", "train.epochs=1", "output.gradcam=0", *extra)
        return yaml.safe_load((run / "config.yaml").read_text())["data"]["channels"]

    assert load_data(DataConfig(source="folder", path=str(gray), val_split=0.25), seed=0).channels == 1
    assert channels() == 1
    assert channels("data.channels=3") == 3
    pattern_image(0, rng).save(gray / "a" / "colour.png")
    assert load_data(DataConfig(source="folder", path=str(gray), val_split=0.25), seed=0).channels == 3


def test_runs_made_before_the_whole_set_split_rule_are_told_apart():
    from imgclf.data.splits import older_split_note

    both = DataConfig(val_split=0.15, test_split=0.15)
    assert "--split test" in older_split_note("0.1.0", both)
    assert older_split_note("0.2.0", both) is None and older_split_note(None, both) is None
    alone = DataConfig(val_split=0.2, test_split=0.0)
    assert older_split_note("0.1.0", alone) is None  # a val split alone: the same rule before and after


def test_training_batches_mix_classes_of_a_class_sorted_split():
    """A folder lists its files class by class; with a shuffle buffer smaller than the split,
    every training batch must still draw from the whole split, not from two or three classes."""
    from imgclf.data import Split
    from imgclf.data.pipeline import make_dataset

    y = np.repeat(np.arange(10), 100)  # sorted by class, as a folder's scan gives them
    x = np.broadcast_to(y[:, None, None, None], (1000, 4, 4, 1)).astype(np.uint8)
    split = Split(y=y, ids=list(range(1000)), x=x)
    ds = make_dataset(split, image_size=(4, 4), channels=1, num_classes=10, batch_size=64,
                      training=True, seed=0, shuffle_buffer=50)
    batches = [np.argmax(labels, axis=1) for _, labels in ds.as_numpy_iterator()]
    assert all(len(set(b)) >= 8 for b in batches[:-1])  # each batch spans (almost) every class
    assert sorted(np.concatenate(batches)) == sorted(y)  # still each image once per epoch


def test_a_filled_folder_split_is_decoded_before_training_in_the_same_order(folder_data):
    """``fill`` decodes every file into the cache when the dataset is made: the files can go
    and every epoch still reads them; the batches are those of the lazy pipeline, shuffle and all."""
    import shutil

    b = load_data(folder_cfg(folder_data), seed=0)
    split = b.splits["train"]
    kw = dict(training=True, seed=3, shuffle_buffer=5)
    lazy = _batches(split, cache=False, **kw)
    from imgclf.data.pipeline import make_dataset

    filled = make_dataset(split, image_size=(16, 16), channels=3, num_classes=2, batch_size=4,
                          fill=True, **kw)
    shutil.rmtree(folder_data)
    first, second = (list(filled.as_numpy_iterator()) for _ in range(2))
    assert len(first) == len(lazy)
    assert all(np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]) for a, c in zip(first, lazy))
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(first, second))  # reshuffled each epoch
    assert sorted(np.concatenate([y.argmax(1) for _, y in second])) == sorted(split.y)


def test_a_filled_source_is_batched_again_at_a_new_size_without_its_files(folder_data):
    """Batch growth batches the training split's decoded cache again: the files can go, and the
    bigger batches hold the same images, each once an epoch."""
    import shutil

    from imgclf.data.pipeline import make_dataset, split_source

    split = load_data(folder_cfg(folder_data), seed=0).splits["train"]
    kw = dict(image_size=(16, 16), training=True, seed=3, shuffle_buffer=5)
    source = split_source(split, fill=True, **kw)
    shutil.rmtree(folder_data)

    def epoch(batch_size):
        ds = make_dataset(split, channels=3, num_classes=2, batch_size=batch_size, source=source, **kw)
        return list(ds.as_numpy_iterator())

    small, large = epoch(4), epoch(8)
    assert [len(x) for x, _ in large] == [8, 8, len(split) - 16]
    assert len(small) == -(-len(split) // 4)

    def images(batches):
        return sorted(image.tobytes() for x, _ in batches for image in x)

    assert len(images(large)) == len(split) and images(small) == images(large)
