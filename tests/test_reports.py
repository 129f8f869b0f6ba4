"""Reports are computed from the files in a run directory; check them against scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import sklearn_metrics
from imgclf.reports import write_reports

CLASSES = ["cat", "dog", "0", "bird"]  # "0" must stay a name, not become a number


def fake_run(tmp_path, seed=0, splits=(("val", 40), ("test", 30))):
    rng = np.random.default_rng(seed)
    run = tmp_path / "run"
    run.mkdir()
    (run / "classes.json").write_text(json.dumps(CLASSES))
    frames = []
    for split, n in splits:
        y = rng.integers(0, len(CLASSES), n)
        logits = rng.normal(size=(n, len(CLASSES))) + 2.0 * np.eye(len(CLASSES))[y]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        frame = pd.DataFrame({"split": split, "index": np.arange(n),
                              "true_label": np.array(CLASSES)[y],
                              "pred_label": np.array(CLASSES)[probs.argmax(1)]})
        frame[[f"prob_{c}" for c in CLASSES]] = probs
        frames.append(frame)
    pd.concat(frames).to_csv(run / "predictions.csv", index=False, float_format="%.10g")
    pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "accuracy": [0.5, 0.7],
                  "val_loss": [1.1, 0.8], "val_accuracy": [0.4, 0.6], "lr": [1e-3, 1e-3]}
                 ).to_csv(run / "history.csv", index=False)
    return run


def test_metrics_json_agrees_with_sklearn(tmp_path):
    run = fake_run(tmp_path)
    write_reports(run)
    metrics = json.loads((run / "metrics.json").read_text())
    preds = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    for split in ("val", "test"):
        _, _, expected = sklearn_metrics(preds[preds["split"] == split], CLASSES)
        for key, value in expected.items():
            assert metrics[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    assert set(metrics) == {"val", "test"}
    cm = pd.read_csv(run / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 30  # the confusion matrix shows the test split


def test_per_class_and_confusion_matrix(tmp_path):
    run = fake_run(tmp_path, seed=3)
    write_reports(run)
    preds = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    test = preds[preds["split"] == "test"]
    y, pred, _ = sklearn_metrics(test, CLASSES)

    per_class = pd.read_csv(run / "per_class.csv", keep_default_na=False, dtype={"class": str})
    rows = per_class[per_class["split"] == "test"]
    assert rows["class"].tolist() == CLASSES
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    np.testing.assert_allclose(rows["precision"], p, atol=1e-6)
    np.testing.assert_allclose(rows["recall"], r, atol=1e-6)
    np.testing.assert_allclose(rows["f1"], f, atol=1e-6)
    assert rows["support"].tolist() == s.tolist()
    np.testing.assert_allclose(rows["accuracy"], r, atol=1e-6)  # share of each class got right

    cm = pd.read_csv(run / "confusion_matrix.csv", index_col=0)
    assert [str(c) for c in cm.columns] == CLASSES and [str(i) for i in cm.index] == CLASSES
    np.testing.assert_array_equal(cm.to_numpy(), skm.confusion_matrix(y, pred, labels=range(4)))
    norm = pd.read_csv(run / "confusion_matrix_normalized.csv", index_col=0).to_numpy()
    present = cm.to_numpy().sum(1) > 0
    np.testing.assert_allclose(norm.sum(1)[present], 1.0, atol=1e-5)


def test_plots_are_real_pngs(tmp_path):
    run = fake_run(tmp_path)
    write_reports(run)
    for name in ("confusion_matrix.png", "curves.png"):
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_val_only_runs_report_on_val(tmp_path):
    run = fake_run(tmp_path, splits=(("val", 25),))
    metrics = write_reports(run)
    assert set(metrics) == {"val"}
    assert pd.read_csv(run / "confusion_matrix.csv", index_col=0).to_numpy().sum() == 25


def test_macro_averages_skip_classes_absent_from_the_split():
    """Evaluating on a folder without one of the model's classes: that class has no items, so
    it must not pull the macro averages down (a perfect model scores 1)."""
    from imgclf.reports.metrics import split_metrics

    y = np.array([0, 0, 1, 1])
    probs = np.full((4, 3), 0.1)
    probs[np.arange(4), y] = 0.8
    m = split_metrics(y, probs)
    for key in ("precision_macro", "recall_macro", "f1_macro"):
        assert m[key] == pytest.approx(1.0), key
    # a class predicted but absent as a true label is not averaged in either (issue 19): the
    # wrong prediction costs class 1 its recall, not a third class a zero precision
    probs[3] = [0.1, 0.1, 0.8]
    m = split_metrics(y, probs)
    pred = probs.argmax(1)
    expected = skm.precision_score(y, pred, average="macro", labels=[0, 1], zero_division=0)
    assert m["precision_macro"] == pytest.approx(expected) == pytest.approx(1.0)
    assert m["recall_macro"] == pytest.approx(0.75)


def test_expected_calibration_error_is_the_weighted_gap_per_confidence_bin():
    from imgclf.reports.metrics import expected_calibration_error, reliability

    # four items at confidence 0.95 (3 right), two at 0.55 (1 right), in 15 equal bins
    probs = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 2)
    y = np.array([0, 0, 0, 1, 0, 1])
    table = reliability(y, probs)
    assert len(table) == 15 and table.n.sum() == 6
    assert table.loc[table.n == 4, "accuracy"].item() == pytest.approx(0.75)
    expected = (4 / 6) * abs(0.75 - 0.95) + (2 / 6) * abs(0.5 - 0.55)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)
    assert expected_calibration_error(np.zeros(3, int), np.array([[1.0, 0.0]] * 3)) == pytest.approx(0.0)


def test_every_report_has_its_reliability_diagram_and_ece(digits_runs):
    run = digits_runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(0.0 <= metrics[s]["ece"] <= 1.0 for s in ("val", "test"))
    assert (run / "reliability.png").stat().st_size > 0
    assert "<h2>Calibration</h2>" in (run / "report.html").read_text()
