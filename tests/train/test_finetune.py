"""Stage 2: folds, the head chosen by cross-validation, the out-of-fold temperature, and
FixMatch consistency on cached views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.metrics import expected_calibration_error, json_safe
from mics_core.model.heads import HeadEnsemble
from mics_core.predict import predict_features
from mics_core.train.finetune import FusionFinetuning, finetune, fold_assignment
from mics_core.train.loop import run

SMALL = TrainSettings().replace(heads=(0, 16), finetune_steps=60, shift_atoms=4, folds=3)


def _blobs(n_per_class: int, n_classes: int, dim: int = 8, views: int = 1, separation: float = 3.0, seed: int = 0):
    """(N, 1 + 2 * views, 2, dim) features: one Gaussian blob per class, in both views and every view."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 2, dim, generator=g) * separation
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    base = centres[y] + torch.randn(len(y), 2, dim, generator=g)
    noise = torch.randn(len(y), 1 + 2 * views, 2, dim, generator=g) * 0.3
    return base[:, None] + noise, y.numpy()


def test_folds_are_stratified_and_bounded_by_the_smallest_class():
    labels = np.array([0] * 7 + [1] * 6 + [2] * 3 + [-1] * 5)
    fold = fold_assignment(labels, folds=5, seed=0)
    assert fold.max() + 1 == 3  # the smallest class with two labels has 3
    assert (fold[labels < 0] == -1).all()
    for y in (0, 1, 2):
        assert sorted(np.bincount(fold[labels == y], minlength=3)) in ([2, 2, 3], [2, 2, 2], [1, 1, 1])


def test_a_class_with_one_label_always_trains():
    labels = np.array([0] + [1] * 6)
    fold = fold_assignment(labels, folds=5, seed=0)
    assert fold[0] == -1 and (fold[1:] >= 0).all()
    assert (fold_assignment(np.array([0, 1, -1]), 5, 0) == -1).all()  # nothing can be held out


def test_the_head_is_chosen_by_out_of_fold_log_loss_and_recorded():
    features, labels = _blobs(12, 3)
    result = finetune(features, labels, ["a", "b", "c"], SMALL)
    losses = result.metrics["head_log_loss"]
    assert set(losses) == {"0", "16"}
    assert result.metrics["head_hidden"] == min((0, 16), key=lambda h: losses[str(h)])
    assert isinstance(result.model, HeadEnsemble) and len(result.model.members) == result.metrics["folds"] == 3
    assert result.metrics["n"] == len(labels)  # every label held out once
    assert len(result.history) == 2 * 3 * 60  # heads × folds × steps


def test_too_few_labels_to_hold_out_train_one_uncalibrated_model():
    features, labels = _blobs(1, 2)
    result = finetune(features, labels, ["a", "b"], SMALL)
    assert result.temperature == 1.0 and result.metrics["folds"] == 0


def test_the_out_of_fold_temperature_lowers_the_ece_of_an_over_confident_model():
    """A quarter of the labels are flipped, in training and test alike: a head trained long and
    unregularised memorises them and is sure of every answer, right only three times in four. The
    temperature, fitted on folds it never saw, brings its confidence down towards that."""

    def noisy(n: int, seed: int):
        features, labels = _blobs(n, 2, dim=32, seed=0)
        flip = np.random.default_rng(seed).random(len(labels)) < 0.25
        return features, np.where(flip, 1 - labels, labels)

    features, labels = noisy(40, seed=1)
    test_features, test_labels = noisy(200, seed=2)
    eager = SMALL.replace(
        heads=(64,), finetune_steps=300, finetune_lr=1e-2, finetune_weight_decay=0.0, semi_supervised=False
    )
    result = finetune(features, labels, ["a", "b"], eager)
    raw = predict_features(result.model, test_features[:, 0], 1.0)["probs"]
    scaled = predict_features(result.model, test_features[:, 0], result.temperature)["probs"]
    assert result.temperature > 1.5
    assert expected_calibration_error(scaled, test_labels) < expected_calibration_error(raw, test_labels) - 0.05


def test_unlabelled_pairs_teach_through_their_strong_views():
    """Two labels per class and many unlabelled pairs: FixMatch makes pseudo-labels and a loss of them."""
    features, labels = _blobs(30, 2, views=2)
    few = labels.copy()
    few[np.r_[2:30, 32:60]] = -1
    method = FusionFinetuning(features, few, 0, 2, SMALL)
    history = run(method, 60).history
    assert history[-1]["pseudo_labelled"] > 0.5 and "unlabelled" in history[-1]
    out = predict_features(method.model, features[:, 0])
    assert (out["probs"].argmax(1) == labels).mean() > 0.9


def test_semi_supervision_off_trains_on_labels_alone():
    features, labels = _blobs(10, 2, views=2)
    few = np.where(np.arange(len(labels)) % 2 == 0, labels, -1)
    history = run(FusionFinetuning(features, few, 0, 2, SMALL.replace(semi_supervised=False)), 5).history
    assert "unlabelled" not in history[-1]


@pytest.mark.parametrize("shift", [False, True])
def test_the_shift_dictionary_moves_labelled_views_towards_their_class(shift: bool):
    features, labels = _blobs(10, 2)
    method = FusionFinetuning(features, labels, 0, 2, SMALL.replace(shift=shift))
    dictionary = method.model.dictionary
    assert bool(dictionary.class_shift.abs().sum() > 0) is shift
    run(method, 5)


def test_uncertainty_is_the_calibrated_probability_of_being_wrong():
    features, labels = _blobs(12, 3)
    result = finetune(features, labels, ["a", "b", "c"], SMALL)
    out = predict_features(result.model, features[:, 0], result.temperature)
    np.testing.assert_allclose(out["uncertainty"], 1 - out["probs"].max(1), rtol=1e-6)
    assert ((out["conflict"] >= 0) & (out["conflict"] <= 1)).all()
    assert out["embedding"].shape == (len(labels), 32)


def test_metrics_are_made_safe_for_postgresql_json():
    assert json_safe({"auc": float("nan"), "per_class": [1.0, float("inf")], "n": 3}) == {
        "auc": None,
        "per_class": [1.0, None],
        "n": 3,
    }
