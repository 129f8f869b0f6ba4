"""The csv and keras data sources, as a user points imgclf at them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import FAST, write_class_folder
from imgclf.cli import app
from imgclf.config import load_config
from imgclf.data import load_data

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


# ------------------------------------------------------------------ the keras source
@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache; a fetch from it fails at once, as it does without network."""
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    return tmp_path / "keras" / "datasets"


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


def test_flowers_is_read_as_a_folder_from_the_cache(keras_home):
    write_class_folder(keras_home / "flower_photos" / "flower_photos", {"daisy": 6, "roses": 6})
    bundle = load_data(keras_data("data.name=flowers"), 42)
    assert bundle.class_names == ["daisy", "roses"] and bundle.kind == "files"


def test_offline_without_the_file_is_one_line_before_anything_is_made(keras_home, tmp_path):
    result = runner.invoke(app, ["train", "--set", "data.source=keras", "--set", "data.name=cifar10",
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "cifar-10-python.tar.gz" in line
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in line and str(keras_home) in line
    assert not (tmp_path / "runs").exists()


def test_the_keras_source_needs_a_name():
    with pytest.raises(Exception, match="needs data.name"):
        keras_data()
