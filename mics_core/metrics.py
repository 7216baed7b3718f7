"""Held-out metrics: accuracy, macro-F1, per-class recall, AUC (one-vs-rest), ECE, Brier, AURC."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, recall_score, roc_auc_score


def bin_count(n: int) -> int:
    """Reliability bins for n cases: about √n (3 for 10 cases, 8 for 60, 15 from 225), so that a bin
    holds enough cases for its accuracy to mean something."""
    return int(np.clip(round(np.sqrt(n)), 3, 15))


def reliability(probs: np.ndarray, target: np.ndarray, bins: int | None = None) -> list[dict[str, float]]:
    """Equal-width confidence bins (`bin_count` of them unless given): each non-empty bin's mean
    confidence, accuracy and share of cases."""
    probs, target = np.asarray(probs, float), np.asarray(target)
    bins = bin_count(len(target)) if bins is None else bins
    confidence = probs.max(1)
    correct = probs.argmax(1) == target
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    return [
        {
            "confidence": float(confidence[which == b].mean()),
            "accuracy": float(correct[which == b].mean()),
            "share": float((which == b).mean()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def expected_calibration_error(probs: np.ndarray, target: np.ndarray, bins: int | None = None) -> float:
    """ECE: sum over the reliability bins of |accuracy - confidence| * share."""
    return float(sum(b["share"] * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, target, bins)))


def ece_interval(
    probs: np.ndarray, target: np.ndarray, level: float = 0.9, draws: int = 500, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap interval of the ECE: with a few dozen held-out cases its value alone says little."""
    probs, target = np.asarray(probs, float), np.asarray(target)
    rng = np.random.default_rng(seed)
    bins = bin_count(len(target))
    samples = [
        expected_calibration_error(probs[rows], target[rows], bins)
        for rows in (rng.integers(len(target), size=len(target)) for _ in range(draws))
    ]
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def brier(probs: np.ndarray, target: np.ndarray) -> float:
    """Multi-class Brier score: mean over cases of sum_k (p_k - y_k)^2."""
    one_hot = np.eye(probs.shape[1])[target]
    return float(((probs - one_hot) ** 2).sum(1).mean())


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk): the error rate among the k most confident cases, for every k."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    errors = np.cumsum(~np.asarray(correct, bool)[order])
    k = np.arange(1, len(order) + 1)
    return k / len(order), errors / k


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean error rate of the k most confident, over all k."""
    return float(risk_coverage(confidence, correct)[1].mean())


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
        "ece_interval": ece_interval(probs, target) if len(target) else (float("nan"), float("nan")),
        "brier": brier(probs, target),
        "aurc": aurc(confidence, predicted == target),
    }


def held_out_report(held_out: dict[str, list], class_names: list[str]) -> dict[str, pd.DataFrame]:
    """The Model quality screen's tables from a version's stored held-out rows: confusion
    matrix, reliability bins before and after temperature scaling, and risk-coverage."""
    target = np.asarray(held_out["target"])
    probs = np.asarray(held_out["probs"], float)
    labels = list(range(len(class_names)))
    matrix = confusion_matrix(target, probs.argmax(1), labels=labels)
    bins = [
        pd.DataFrame(reliability(np.asarray(held_out[key], float), target)).assign(scaling=name)
        for key, name in (("probs_before_scaling", "before"), ("probs", "after"))
    ]
    coverage, risk = risk_coverage(np.asarray(held_out["confidence"]), probs.argmax(1) == target)
    return {
        "confusion": pd.DataFrame(matrix, index=class_names, columns=class_names),
        "reliability": pd.concat(bins, ignore_index=True),
        "risk_coverage": pd.DataFrame({"coverage": coverage, "risk": risk}),
    }


def json_safe(value: object) -> object:
    """`value` with NaN and infinities replaced by None: PostgreSQL's JSON rejects them."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
