"""evaluate (one run, --data, --tta, --ensemble) and the report pages, checked against
scikit-learn and against the members' own probabilities."""

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm
from typer.testing import CliRunner

from conftest import pattern_image, sklearn_metrics
from imgclf.cli import app
from imgclf.reports.metrics import METRIC_KEYS
from imgclf.runs import prob_columns

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = {"metrics.json", "per_class.csv", "predictions.csv", "confusion_matrix.csv",
                "confusion_matrix_normalized.csv", "confusion_matrix.png", "roc.png",
                "misclassified.png", "reliability.png", "report.html"}


def evaluate(*args):
    result = runner.invoke(app, ["evaluate", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result, Path(result.output.strip().splitlines()[-1])


def classes(run):
    return json.loads((run / "classes.json").read_text())


def probs_of(folder, names):
    preds = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    return preds, preds[prob_columns(names)].to_numpy()


def assert_matches_sklearn(metrics, rows, names, skip=()):
    _, _, expected = sklearn_metrics(rows, names)
    assert set(expected) == set(METRIC_KEYS)
    for key in set(METRIC_KEYS) - set(skip):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key


def test_evaluate_recomputes_the_runs_numbers(digits_runs):
    run = digits_runs[0]
    result, out = evaluate(run)
    assert out == run / "eval" / "test"
    assert REPORT_FILES | {"eval.json"} <= {p.name for p in out.iterdir()}
    assert "test: accuracy" in result.output

    names = classes(run)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"n", "top_k", "ece", *METRIC_KEYS}  # one split: flat
    preds, _ = probs_of(out, names)
    assert set(preds["split"]) == {"test"} and metrics["n"] == len(preds) == 360
    assert_matches_sklearn(metrics, preds, names)
    # the saved model, loaded again, gives the numbers training wrote for its test split
    trained = json.loads((run / "metrics.json").read_text())["test"]
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(trained[key], abs=1e-5), key
    for split in ("val", "test"):
        rows = pd.read_csv(run / "predictions.csv", keep_default_na=False)
        assert_matches_sklearn(trained if split == "test" else
                               json.loads((run / "metrics.json").read_text())["val"],
                               rows[rows["split"] == split], names)


def test_ensemble_is_the_mean_of_member_probabilities(digits_runs, tmp_path):
    names = classes(digits_runs[0])
    members = [probs_of(evaluate(run, "--split", "val")[1], names)[1] for run in digits_runs]
    result, ens = evaluate("--ensemble", *digits_runs, "--split", "val", "--out", tmp_path)
    assert ens.parent == tmp_path
    preds, probs = probs_of(ens, names)
    np.testing.assert_allclose(probs, np.mean(members, axis=0), atol=1e-6)
    assert not np.allclose(members[0], members[1], atol=1e-3)  # two different models

    manifest = json.loads((ens / "run.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["members"] == [str(r.resolve()) for r in digits_runs]
    assert manifest["model"] == "ensemble(simple_cnn + mlp)"
    metrics = json.loads((ens / "metrics.json").read_text())
    assert set(metrics) == {"val"}  # reported like a run: one object per split
    assert_matches_sklearn(metrics["val"], preds, names)
    assert REPORT_FILES <= {p.name for p in ens.iterdir()}


def test_ensemble_lands_beside_its_members_and_each_member_keeps_its_tta(digits_runs, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    a, b = (shutil.copytree(run, runs / run.name) for run in digits_runs)
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["train"]["tta"] = "flip"
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    names = classes(a)
    plain = probs_of(evaluate(a, "--split", "val")[1], names)[1]
    flipped = probs_of(evaluate(b, "--split", "val", "--tta", "flip")[1], names)[1]
    unflipped = probs_of(evaluate(b, "--split", "val", "--name", "plain")[1], names)[1]
    assert not np.allclose(flipped, unflipped, atol=1e-4)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the config's relative output.dir is not where it goes
    _, ens = evaluate("--ensemble", a, b, "--split", "val")
    assert ens.parent == runs and list(elsewhere.iterdir()) == []
    np.testing.assert_allclose(probs_of(ens, names)[1], (plain + flipped) / 2, atol=1e-6)
    result = runner.invoke(app, ["compare", str(runs)])
    assert result.exit_code == 0 and ens.name in result.output, result.output
    # --tta given: every member flips, whatever its config says
    _, ens = evaluate("--ensemble", a, b, "--split", "val", "--tta", "flip")
    flipped_a = probs_of(evaluate(a, "--split", "val", "--tta", "flip")[1], names)[1]
    np.testing.assert_allclose(probs_of(ens, names)[1], (flipped_a + flipped) / 2, atol=1e-6)


def test_ensemble_refuses_members_split_differently(digits_runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(digits_runs[1], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["data"]["val_split"] = 0.3
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["evaluate", "--ensemble", str(digits_runs[0]), str(other)])
    assert result.exit_code == 2
    assert "val_split is 0.2" in result.output and "0.3" in result.output
    assert "Traceback" not in result.output


def test_tta_flip_averages_the_mirrored_images():
    import keras
    import tensorflow as tf

    from imgclf.evaluate import predict_probs

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).uniform(0, 255, (5, 4, 4, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    plain = model.predict(x, verbose=0)
    mirrored = model.predict(x[:, :, ::-1, :], verbose=0)
    np.testing.assert_allclose(predict_probs(model, ds), plain, atol=1e-6)
    np.testing.assert_allclose(predict_probs(model, ds, "flip"), (plain + mirrored) / 2, atol=1e-6)


def test_tta_flip_shift_weighs_six_views_as_the_fast_recipes_do():
    """flip_shift: half on the image and its mirror, half on the four one-pixel shifts (up-left
    and down-right, border reflected), each with and without the mirror; the same from a
    dataset (evaluate, train) and from one batch (predict, the Python API)."""
    import keras
    import tensorflow as tf

    from imgclf.evaluate import predict_probs
    from imgclf.inference import batch_probs

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 4, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(1).uniform(0, 255, (5, 5, 4, 2)).astype("float32")
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    up_left, down_right = padded[:, 2:, 2:], padded[:, :-2, :-2]  # x[i + 1, j + 1], x[i - 1, j - 1]
    np.testing.assert_array_equal(up_left[:, :-1, :-1], x[:, 1:, 1:])

    def p(images):
        return model.predict(images, verbose=0).astype(np.float64)

    pair = [(v, v[:, :, ::-1]) for v in (x, up_left, down_right)]
    want = 0.25 * (p(x) + p(x[:, :, ::-1])) + 0.125 * sum(p(a) + p(b) for a, b in pair[1:])
    want /= want.sum(axis=1, keepdims=True)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    np.testing.assert_allclose(predict_probs(model, ds, "flip_shift"), want, atol=1e-6)
    np.testing.assert_allclose(batch_probs(model, x, "flip_shift"), want, atol=1e-6)
    assert np.abs(want - p(x)).max() > 1e-3  # the views change the answer


class _Refs(HTMLParser):
    """Every attribute that can load something, and inline CSS urls."""

    def __init__(self):
        super().__init__()
        self.imgs, self.other = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if tag == "img" and name == "src":
                self.imgs.append(value)
            elif name in ("src", "href", "srcset", "data", "poster", "action", "background"):
                self.other.append((tag, name, value))
            elif name == "style" and "url(" in (value or ""):
                self.other.append((tag, name, value))
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.other.append((tag, "", ""))


def assert_self_contained(page: Path, n_images: int):
    text = page.read_text()
    refs = _Refs()
    refs.feed(text)
    assert refs.other == []
    assert "url(" not in text.split("<body>")[0]  # no fonts or images fetched by the styles
    assert len(refs.imgs) == n_images
    for src in refs.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG


def test_report_html_references_only_embedded_images(folder_run):
    # the end of train wrote it; evaluate writes the same page for its folder
    # curves, confusion, ROC, misclassified, reliability, Grad-CAM
    assert_self_contained(folder_run / "report.html", 6)
    text = (folder_run / "report.html").read_text()
    for word in ("macro F1", "roc_auc_ovr", "cohen_kappa", "Per class", "ants", "Config", "simple_cnn"):
        assert word in text
    _, out = evaluate(folder_run)
    assert_self_contained(out / "report.html", 6)
    assert (out / "misclassified.png").read_bytes()[:8] == PNG


def test_evaluate_on_another_folder_skips_unreadable_files(folder_run, tmp_path):
    rng = np.random.default_rng(5)
    data = tmp_path / "new"
    for label, name in enumerate(["ants", "wasps"]):  # a subset of the classes is fine
        (data / name).mkdir(parents=True)
        for i in range(4):
            pattern_image(2 * label, rng).save(data / name / f"x{i}.png")
    (data / "ants" / "broken.jpg").write_bytes(b"not an image")
    result, out = evaluate(folder_run, "--data", data, "--name", "fresh")
    assert out == folder_run / "eval" / "fresh"
    assert "broken.jpg" in result.output
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted(preds["file"]) == [f"{c}/x{i}.png" for c in ("ants", "wasps") for i in range(4)]
    assert json.loads((out / "eval.json").read_text())["skipped_unreadable"] == 1
    names = classes(folder_run)
    metrics = json.loads((out / "metrics.json").read_text())
    assert_matches_sklearn(metrics, preds, names, skip=["roc_auc_ovr"])
    # no bees here: scikit-learn's one-vs-rest AUC is undefined for them, ours averages the others
    y = preds["true_label"].map(names.index).to_numpy()
    probs = preds[prob_columns(names)].to_numpy()
    present = [skm.roc_auc_score(y == c, probs[:, c]) for c in (0, 2)]
    assert metrics["roc_auc_ovr"] == pytest.approx(np.mean(present), abs=1e-6)


def test_a_class_missing_from_the_data_is_named_and_left_out_of_macro_averages(folder_run, tmp_path):
    rng = np.random.default_rng(7)
    data = tmp_path / "two"
    for label, name in enumerate(["ants", "wasps"]):  # no bees
        (data / name).mkdir(parents=True)
        for i in range(5):
            pattern_image(2 * label, rng).save(data / name / f"x{i}.png")
    result, out = evaluate(folder_run, "--data", data)
    warnings = [ln for ln in result.output.splitlines() if "bees" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), result.output
    assert "ants" not in warnings[0] and "wasps" not in warnings[0]
    names = classes(folder_run)
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    y = preds["true_label"].map(names.index).to_numpy()
    pred = preds[prob_columns(names)].to_numpy().argmax(1)
    metrics = json.loads((out / "metrics.json").read_text())
    scores = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}
    for key, score in scores.items():
        expected = score(y, pred, average="macro", labels=[0, 2], zero_division=0)
        assert metrics[f"{key}_macro"] == pytest.approx(expected, abs=1e-6), key
    page = " ".join((out / "report.html").read_text(encoding="utf-8").split())
    assert "no images of bees" in page and "the 2 classes present" in page


def test_unfinished_runs_are_flagged(digits_runs, tmp_path):
    run = tmp_path / "halfway"
    shutil.copytree(digits_runs[0], run, ignore=shutil.ignore_patterns("eval"))
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    result, out = evaluate(run, "--split", "val")
    assert f"warning: run {run.name} is interrupted" in result.output
    assert "interrupted" in (out / "report.html").read_text()

    (run / "model.keras").unlink()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 2 and "has no model.keras (run status: interrupted)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--split", "train"], "Unknown `--split`. Received: split=train"),
    (["--tta", "rotate"], "Unknown `--tta` mode. Received: tta=rotate"),
    (["EXTRA"], "evaluate takes one run directory"),
])
def test_evaluate_bad_arguments_are_one_line(digits_runs, args, message):
    result = runner.invoke(app, ["evaluate", str(digits_runs[0]), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_data_folder_for_a_run_without_a_data_path(digits_runs, tmp_path):
    """digits reads no path: --data FOLDER evaluates that folder's images, never digits again."""
    rng = np.random.default_rng(3)
    data = tmp_path / "mine"
    for name in ("3", "7"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            pattern_image(int(name), rng, (8, 8), "L").save(data / name / f"x{i}.png")
    _, out = evaluate(digits_runs[0], "--data", data, "--name", "mine")
    preds = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert sorted(preds["file"]) == [f"{c}/x{i}.png" for c in ("3", "7") for i in range(3)]
    assert sorted(set(preds["true_label"])) == ["3", "7"]
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"")
    result = runner.invoke(app, ["evaluate", str(digits_runs[0]), "--data", str(npz)])
    assert result.exit_code == 2 and "folder not found" in result.output


def test_data_folder_with_split_folders_but_not_the_one_asked(folder_run, tmp_path):
    data = tmp_path / "layout"
    shutil.copytree(folder_run.parent.parent / "data", data / "test")
    result = runner.invoke(app, ["evaluate", str(folder_run), "--data", str(data), "--split", "val"])
    assert result.exit_code == 2
    assert f"--data {data} has no val/ folder (it has test/)" in result.output


def test_evaluate_name_is_one_folder(folder_run):
    result = runner.invoke(app, ["evaluate", str(folder_run), "--name", "../outside"])
    assert result.exit_code == 2 and "Received: name=../outside" in result.output
    assert not (folder_run / "outside").exists()
