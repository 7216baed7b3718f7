"""The held-out split that fits the temperature and reports a version's metrics."""

from __future__ import annotations

import numpy as np

from mics_core.metrics import json_safe
from mics_core.train.finetune import calibration_split


def test_every_class_with_three_labels_gives_at_least_one_held_out_case():
    labels = np.array([0] * 7 + [1] * 6 + [2] * 4 + [3] * 3 + [-1] * 5)
    train, held = calibration_split(labels, 0.2, seed=0)
    assert sorted(np.bincount(labels[held], minlength=4)) == [1, 1, 1, 1]
    assert set(train) | set(held) == set(np.flatnonzero(labels >= 0)) and not set(train) & set(held)


def test_classes_with_fewer_than_three_labels_stay_in_training():
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    train, held = calibration_split(labels, 0.2, seed=0)
    assert {0, 1} <= set(labels[train]) and 0 not in labels[held] and len(held) == 2


def test_metrics_are_made_safe_for_postgresql_json():
    assert json_safe({"auc": float("nan"), "per_class": [1.0, float("inf")], "n": 3}) == {
        "auc": None,
        "per_class": [1.0, None],
        "n": 3,
    }
