"""Metric functions, against scikit-learn where it has them and by hand where not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score

from mics_core.metrics import aurc, brier, evaluate, expected_calibration_error


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
