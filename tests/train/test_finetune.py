"""The held-out split that fits the temperature and reports a version's metrics, and the refit on every label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.metrics import json_safe
from mics_core.train.finetune import calibration_split, finetune

SMALL = TrainSettings().replace(fusion_dim=16, fusion_blocks=1, fusion_heads=2, shift_atoms=4, finetune_epochs=2)


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


@pytest.mark.parametrize("refit", [False, True])
def test_the_versions_model_learns_from_every_label_only_with_refit(refit: bool):
    """The class shift vectors are the mean atom offsets of the labelled rows the model trained on."""
    labels = np.array([0] * 10 + [1] * 10 + [-1] * 6)
    tokens = torch.randn(len(labels), 2, 3, 8, generator=torch.Generator().manual_seed(0))
    result = finetune(tokens, labels, ["a", "b"], SMALL.replace(refit=refit))
    train, held = calibration_split(labels, SMALL.finetune.calibration_fraction, SMALL.seed)
    dictionary = result.model.dictionary
    pooled = tokens.mean(2)
    offsets = 0.5 * (dictionary.offset(pooled[:, 0]) + dictionary.offset(pooled[:, 1]))
    rows = np.flatnonzero(labels >= 0) if refit else train
    expected = torch.stack([offsets[rows][labels[rows] == y].mean(0) for y in (0, 1)])
    torch.testing.assert_close(dictionary.class_shift, expected)
    assert result.metrics["n"] == len(held) == 4  # the figures still come from cases the first model never saw
    steps_per_round = 2 * 8  # epochs × the floor of 8 steps per epoch
    assert len(result.history) == steps_per_round * (2 if refit else 1)
