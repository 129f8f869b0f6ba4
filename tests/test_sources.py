"""The csv and keras data sources, as a user points imgclf at them."""

from __future__ import annotations

import json
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import FAST, write_class_folder, write_idx
from imgclf.cli import app
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.errors import DataError
from imgclf.reports.images import load_images

runner = CliRunner()


def csv_of(tmp_path: Path, extra_rows: str = "", split: bool = False) -> Path:
    """data/<class>/img_*.png|jpg, listed in data/labels.csv: relative paths, and one absolute."""
    root = write_class_folder(tmp_path / "data", {"ants": 10, "bees": 10})
    rows = ["path,label" + (",split" if split else "")]
    for i, f in enumerate(sorted(root.rglob("img_*"))):
        name = f.relative_to(root).as_posix() if i else str(f)  # the first one absolute
        cut = (",test" if i % 5 == 0 else ",") if split else ""
        rows.append(f"{name},{f.parent.name}{cut}")
    path = root / "labels.csv"
    path.write_text("\n".join(rows) + "\n" + extra_rows)
    return path


def data_of(path: Path, *more: str):
    return load_config(None, ["data.source=csv", f"data.path={path}", *more]).data


def test_a_csv_of_relative_and_absolute_paths_is_read_like_a_folder(tmp_path):
    path = csv_of(tmp_path)
    bundle = load_data(data_of(path), 42)
    assert bundle.class_names == ["ants", "bees"] and bundle.id_column == "file"
    ids = bundle.splits["train"].ids + bundle.splits["val"].ids
    assert len(ids) == 20 and sum(Path(i).is_absolute() for i in ids) == 1
    assert all(Path(f).is_file() for s in bundle.splits.values() for f in s.files)


def test_a_split_column_puts_its_rows_where_it_says(tmp_path):
    bundle = load_data(data_of(csv_of(tmp_path, split=True), "data.split_column=split"), 42)
    assert len(bundle.splits["test"]) == 4 and len(bundle.splits["train"]) + len(bundle.splits["val"]) == 16


def test_a_split_column_of_train_and_test_gives_val_from_the_train_rows(tmp_path):
    path = csv_of(tmp_path, split=True)
    path.write_text(path.read_text().replace(",\n", ",train\n"))  # every row train or test
    bundle = load_data(data_of(path, "data.split_column=split", "data.val_split=0.25"), 42)
    assert {k: len(s) for k, s in bundle.splits.items()} == {"train": 12, "val": 4, "test": 4}


def test_whole_number_labels_are_classes_in_number_order(tmp_path):
    path = csv_of(tmp_path)
    path.write_text(path.read_text().replace(",ants\n", ",10\n").replace(",bees\n", ",9\n"))
    assert load_data(data_of(path), 42).class_names == ["9", "10"]


def test_a_folder_for_a_csv_says_so(tmp_path):
    with pytest.raises(DataError, match="is a folder, not a CSV"):
        load_data(data_of(csv_of(tmp_path).parent), 42)


def test_inspect_takes_a_csv(tmp_path):
    path = csv_of(tmp_path, "ants/gone.jpg,ants\n")
    result = runner.invoke(app, ["inspect", str(path), "--grid", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    assert "data: csv" in result.output and (tmp_path / "grid.png").is_file()
    assert "ants/gone.jpg: file not found" in result.output


def test_missing_and_broken_files_are_skipped_and_listed(tmp_path):
    path = csv_of(tmp_path, "ants/gone.jpg,ants\nbees/broken.png,bees\n")
    (path.parent / "bees" / "broken.png").write_bytes(b"not a png")
    bundle = load_data(data_of(path), 42)
    assert sum(len(s) for s in bundle.splits.values()) == 20
    assert dict(bundle.bad_files).keys() == {"ants/gone.jpg", "bees/broken.png"}
    assert dict(bundle.bad_files)["ants/gone.jpg"] == "file not found"


@pytest.mark.parametrize("rows, columns, fragment", [
    ("ants/img_000.png,\n", [], "labels.csv line 22: empty label"),
    ("ants/img_000.png,0.5\n", [], "line 22: label 0.5 is a fraction"),
    ("/nowhere/x.jpg,ants\n", [], "line 22: /nowhere/x.jpg does not exist (outside the CSV's folder"),
    ("", ["data.label_column=kind"], "data.label_column: "),
    ("", ["data.split_column=split"], "has no column 'split'"),
])
def test_bad_rows_and_columns_are_one_line_naming_them(tmp_path, rows, columns, fragment):
    path = csv_of(tmp_path, rows)
    sets = ["data.source=csv", f"data.path={path}", *columns]
    args = [a for c in sets for a in ("--set", c)]
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_csv_keys_belong_to_the_csv_source():
    with pytest.raises(Exception, match="label_column is for source: csv"):
        load_config(None, ["data.label_column=kind"])


def test_train_predict_and_evaluate_on_a_csv(tmp_path):
    path = csv_of(tmp_path, split=True)
    sets = [*FAST, "data.source=csv", f"data.path={path}", "data.split_column=split",
            "data.image_size=[16,16]"]
    args = [a for o in sets for a in ("--set", o)]
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    preds = pd.read_csv(run / "predictions.csv")
    assert sorted(preds.query("split == 'test'").file) == sorted(
        r.path for r in pd.read_csv(path).itertuples() if r.split == "test")
    result = runner.invoke(app, ["predict", str(run), str(path), "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "p.csv")
    assert len(rows) == 20 and rows.file.tolist()[:2] == ["ants/img_000.png", "ants/img_001.jpg"]  # CSV order
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(path)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((Path(result.output.strip().splitlines()[-1]) / "eval.json").read_text())
    assert evaluated["split"] == "test" and evaluated["n"] == 4
    # another CSV, without the run's split column: all its rows, the missing file listed
    other = path.with_name("other.csv")
    other.write_text("path,label\nants/img_002.png,ants\nbees/img_003.jpg,bees\nants/gone.png,ants\n")
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(other)])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip().splitlines()[-1])
    assert json.loads((out / "eval.json").read_text())["n"] == 2
    assert "ants/gone.png" in (out / "bad_files.txt").read_text()


# ------------------------------------------------------------------ the keras source
@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download in this file fails at once, as it does without network: keras.utils.get_file
    runs for real (its cache, its extraction) but cannot reach anything."""
    from keras.src.utils import file_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache (KERAS_HOME), its datasets/ folder returned."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "datasets"


def tar_of(archive: Path, folder: Path) -> Path:
    """``folder`` and what it holds as a .tar.gz at ``archive``, as the real archives are made."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def keras_data(*more: str):
    return load_config(None, ["data.source=keras", *more]).data


def test_mnist_from_a_planted_cache_with_its_official_test_split(keras_home):
    keras_home.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(keras_home / "mnist.npz", x_train=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
             y_train=np.arange(40) % 10, x_test=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
             y_test=np.arange(20) % 10)
    bundle = load_data(keras_data("data.name=mnist", "data.val_split=0.25"), 42)
    assert {k: len(s) for k, s in bundle.splits.items()} == {"train": 30, "val": 10, "test": 20}
    assert bundle.class_names == [str(i) for i in range(10)] and bundle.image_size == (28, 28)


def plant_cifar100(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 30), ("test", 10)):
        rows = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                b"fine_labels": list(np.arange(n) % 3), b"coarse_labels": list(np.arange(n) % 2)}
        (folder / name).write_bytes(pickle.dumps(rows))
    meta = {b"fine_label_names": [b"apple", b"bee", b"cloud"], b"coarse_label_names": [b"fruit", b"insect"]}
    (folder / "meta").write_bytes(pickle.dumps(meta))


@pytest.mark.parametrize("mode, names", [("fine", ["apple", "bee", "cloud"]),
                                         ("coarse", ["fruit", "insect"])])
def test_cifar100_fine_and_coarse_labels_from_a_planted_cache(keras_home, mode, names):
    plant_cifar100(keras_home / "cifar-100-python-target" / "cifar-100-python")
    bundle = load_data(keras_data("data.name=cifar100", f"data.label_mode={mode}"), 42)
    assert bundle.class_names == names and len(bundle.splits["test"]) == 10
    assert bundle.splits["train"].x.shape[1:] == (32, 32, 3)


def test_cifar10_archive_placed_in_the_cache_is_extracted_offline(keras_home, tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 40), ("test_batch", 20)):
        rows = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(np.arange(n) % 10)}
        (batches / name).write_bytes(pickle.dumps(rows))
    tar_of(keras_home / "cifar-10-python.tar.gz", batches)  # where the offline line says to put it
    bundle = load_data(keras_data("data.name=cifar10", "data.val_split=0.25"), 42)
    assert bundle.class_names[:3] == ["airplane", "automobile", "bird"] and bundle.class_names[-1] == "truck"
    assert {k: len(s) for k, s in bundle.splits.items()} == {"train": 30, "val": 10, "test": 20}
    assert bundle.splits["test"].x.shape == (20, 32, 32, 3)


def test_fashion_mnist_from_its_cache_folder_with_its_names(keras_home):
    folder = keras_home / "fashion-mnist"  # where keras.datasets.fashion_mnist.load_data() leaves it
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    bundle = load_data(keras_data("data.name=fashion_mnist", "data.val_split=0.25"), 42)
    assert bundle.class_names[:2] == ["T-shirt/top", "Trouser"] and bundle.class_names[-1] == "Ankle boot"
    assert {k: len(s) for k, s in bundle.splits.items()} == {"train": 30, "val": 10, "test": 20}


def test_coarse_labels_are_cifar100s_alone():
    with pytest.raises(Exception, match="label_mode is for source: keras, name: cifar100"):
        keras_data("data.name=cifar10", "data.label_mode=coarse")


@pytest.mark.parametrize("name, file, fragment", [
    ("mnist", "mnist.npz", r"cannot read .*mnist.npz .*delete it to fetch it again"),
    ("flowers", "flower_photos.tgz", r"cannot extract .*flower_photos.tgz .*delete it to fetch it again"),
    ("cifar10", "cifar-10-python.tar.gz", r"cannot extract .*cifar-10-python.tar.gz .*delete it"),
])
def test_a_damaged_cached_file_is_one_line_saying_to_delete_it(keras_home, tmp_path, name, file, fragment):
    keras_home.mkdir(parents=True)
    if name == "cifar10":  # a real archive cut short: extraction fails half way
        (tmp_path / "cifar-10-batches-py").mkdir()
        (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(np.random.bytes(300_000))
        whole = tar_of(tmp_path / "whole.tar.gz", tmp_path / "cifar-10-batches-py").read_bytes()
        (keras_home / file).write_bytes(whole[: len(whole) // 2])
    else:
        (keras_home / file).write_bytes(b"half a download")
    with pytest.raises(DataError, match=fragment):
        load_data(keras_data(f"data.name={name}"), 42)
    assert sorted(p.name for p in keras_home.iterdir()) == [file]  # nothing half extracted is left


def test_flowers_archive_in_the_cache_trains_evaluates_and_reports(keras_home, tmp_path):
    photos = write_class_folder(tmp_path / "flower_photos", {"daisy": 8, "roses": 8})
    (photos / "LICENSE.txt").write_text("the photos' licences")
    tar_of(keras_home / "flower_photos.tgz", photos)
    cfg = load_config(None, ["data.source=keras", "data.name=flowers"])
    bundle = load_data(cfg.data, 42)
    assert bundle.class_names == ["daisy", "roses"] and bundle.kind == "files"
    # the images behind prediction rows are found in the cache (the misclassified grid)
    thumbs = load_images(cfg, "val", "file", bundle.splits["val"].ids)
    assert all(t.shape == (16, 16, 3) for t in thumbs)
    sets = [*FAST, "data.source=keras", "data.name=flowers", "data.image_size=[16,16]"]
    args = [a for o in sets for a in ("--set", o)]
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    assert (run / "report.html").is_file()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output


def test_offline_without_the_file_is_one_line_before_anything_is_made(keras_home, tmp_path):
    result = runner.invoke(app, ["train", "--set", "data.source=keras", "--set", "data.name=cifar10",
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    # keras.utils.get_file's own progress line (it streams a real download), then the error's one line
    *before, line = result.output.strip().splitlines()
    assert before == ["Downloading data from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert line.startswith("imgclf: error: data.name=cifar10: cannot download cifar-10-python.tar.gz")
    assert "no network in the tests" in line  # keras.utils.get_file tried, and could not reach it
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in line
    assert f"place it at {keras_home / 'cifar-10-python.tar.gz'}" in line
    assert not (tmp_path / "runs").exists() and not [p for p in keras_home.rglob("*") if p.is_file()]


def test_the_keras_source_needs_a_name():
    with pytest.raises(Exception, match="needs data.name"):
        keras_data()
