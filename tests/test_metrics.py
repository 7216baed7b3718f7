"""Metric functions, against scikit-learn where it has them and by hand where not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score

from mics_core.metrics import (
    aurc,
    brier,
    evaluate,
    expected_calibration_error,
    held_out_report,
    reliability,
    risk_coverage,
)


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3))
    logits[np.arange(300), target] += 1.2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, target


def test_evaluate_matches_scikit_learn(predictions):
    probs, target = predictions
    result = evaluate(probs, target, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(accuracy_score(target, probs.argmax(1)))
    assert result["macro_f1"] == pytest.approx(f1_score(target, probs.argmax(1), average="macro"))
    assert result["auc"] == pytest.approx(roc_auc_score(target, probs, multi_class="ovr", average="macro"))
    assert set(result["per_class_recall"]) == {"a", "b", "c"}


def test_brier_matches_scikit_learn_multiclass(predictions):
    probs, target = predictions
    # scikit-learn >= 1.7 halves the multi-class score unless told not to
    assert brier(probs, target) == pytest.approx(brier_score_loss(target, probs, scale_by_half=False))


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    target = np.array([0, 1, 0, 0])
    # bin 0.9: accuracy 0.5, confidence 0.9; bin 0.6: accuracy 1.0, confidence 0.6
    assert expected_calibration_error(probs, target) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_aurc_by_hand():
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, True])
    # risks at coverage 1..4: 0, 1/2, 1/3, 1/4
    assert aurc(confidence, correct) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert aurc(confidence, np.ones(4, bool)) == 0.0


def test_auc_with_a_missing_class_uses_the_present_ones():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    result = evaluate(probs, np.array([0, 1, 0]), ["a", "b", "c"])
    assert result["auc"] == pytest.approx(1.0) and result["per_class_recall"]["c"] == 0.0


def test_reliability_bins_cover_every_case(predictions):
    probs, target = predictions
    bins = reliability(probs, target)
    assert sum(b["share"] for b in bins) == pytest.approx(1.0)
    assert all(0 < b["share"] <= 1 and 0 <= b["accuracy"] <= 1 for b in bins)
    confidences = [b["confidence"] for b in bins]
    assert confidences == sorted(confidences) and len(bins) <= 15  # only non-empty bins, lowest first


def test_ece_is_the_share_weighted_gap_between_accuracy_and_confidence(predictions):
    probs, target = predictions
    gap = sum(b["share"] * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, target))
    assert expected_calibration_error(probs, target) == pytest.approx(gap)
    assert gap > 0


def test_reliability_by_hand():
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.45, 0.55]])
    target = np.array([0, 0, 0, 0])
    # confidence 0.95: one right, one wrong; confidence 0.55: one right, one wrong
    assert reliability(probs, target, bins=10) == [
        {"confidence": pytest.approx(0.55), "accuracy": 0.5, "share": 0.5},
        {"confidence": pytest.approx(0.95), "accuracy": 0.5, "share": 0.5},
    ]


def test_risk_coverage_by_hand():
    confidence = np.array([0.6, 0.9, 0.7, 0.8])
    correct = np.array([True, False, False, True])
    # most confident first: 0.9 wrong, 0.8 right, 0.7 wrong, 0.6 right
    coverage, risk = risk_coverage(confidence, correct)
    assert list(coverage) == [0.25, 0.5, 0.75, 1.0]
    assert list(risk) == pytest.approx([1.0, 1 / 2, 2 / 3, 2 / 4])
    assert aurc(confidence, correct) == pytest.approx(risk.mean())


def test_held_out_report_tables():
    held_out = {  # as stored in a model version's metrics (see tests.conftest.add_model)
        "target": [0, 1, 2, 0, 1, 2],
        "probs": [
            [0.8, 0.1, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.3, 0.6, 0.1],  # a normal case predicted polyp
            [0.1, 0.8, 0.1],
            [0.2, 0.2, 0.6],
        ],
        "probs_before_scaling": [[0.9, 0.05, 0.05], [0.1, 0.85, 0.05]] + [[0.05, 0.05, 0.9]] * 4,
        "confidence": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    }
    report = held_out_report(held_out, ["normal", "polyp", "ulcer"])

    confusion = report["confusion"]  # rows: true class, columns: predicted class
    assert list(confusion.index) == list(confusion.columns) == ["normal", "polyp", "ulcer"]
    assert confusion.to_numpy().tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]

    bins = report["reliability"]
    assert set(bins["scaling"]) == {"before", "after"}
    assert {"confidence", "accuracy", "share"} <= set(bins.columns)
    assert bins.groupby("scaling")["share"].sum().to_dict() == pytest.approx({"before": 1.0, "after": 1.0})

    curve = report["risk_coverage"]
    assert list(curve.columns) == ["coverage", "risk"] and len(curve) == 6
    # ranked by the stored confidence, the only error (the fourth case) comes fourth
    assert list(curve["risk"]) == pytest.approx([0, 0, 0, 1 / 4, 1 / 5, 1 / 6])
    assert curve["coverage"].iloc[-1] == 1.0
