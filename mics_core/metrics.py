"""Held-out metrics: accuracy, macro-F1, per-class recall, AUC (one-vs-rest), ECE, Brier, AURC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, recall_score, roc_auc_score


def expected_calibration_error(probs: np.ndarray, target: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == target
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def brier(probs: np.ndarray, target: np.ndarray) -> float:
    """Multi-class Brier score: mean over cases of sum_k (p_k - y_k)^2."""
    one_hot = np.eye(probs.shape[1])[target]
    return float(((probs - one_hot) ** 2).sum(1).mean())


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean error rate of the k most confident, over all k."""
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~correct[order])
    return float((errors / np.arange(1, len(order) + 1)).mean())


def one_vs_rest_auc(probs: np.ndarray, target: np.ndarray) -> float:
    """Macro AUC over the classes present in `target` (NaN if fewer than two are)."""
    present = np.unique(target)
    if len(present) < 2:
        return float("nan")
    scores = [roc_auc_score(target == k, probs[:, k]) for k in present]
    return float(np.mean(scores))


def evaluate(
    probs: np.ndarray, target: np.ndarray, class_names: list[str], confidence: np.ndarray | None = None
) -> dict[str, object]:
    """Every held-out metric; `confidence` (default max probability) ranks cases for AURC."""
    probs, target = np.asarray(probs, float), np.asarray(target)
    predicted = probs.argmax(1)
    labels = list(range(len(class_names)))
    recall = recall_score(target, predicted, labels=labels, average=None, zero_division=0)
    confidence = probs.max(1) if confidence is None else np.asarray(confidence)
    return {
        "n": len(target),
        "accuracy": float((predicted == target).mean()),
        "macro_f1": float(f1_score(target, predicted, labels=labels, average="macro", zero_division=0)),
        "per_class_recall": dict(zip(class_names, map(float, recall), strict=True)),
        "auc": one_vs_rest_auc(probs, target),
        "ece": expected_calibration_error(probs, target),
        "brier": brier(probs, target),
        "aurc": aurc(confidence, predicted == target),
    }
