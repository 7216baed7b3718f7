"""Evidential opinions and Dempster–Shafer combination, against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from mics_core.model.evidential import EvidentialHead, Opinion, combine, conflict, evidential_loss


def _opinion(belief, u):
    return Opinion(torch.tensor([belief]), torch.tensor([u]))


def test_opinion_from_evidence():
    opinion = Opinion.from_evidence(torch.tensor([[3.0, 1.0]]))  # alpha = (4, 2), S = 6
    assert opinion.belief.tolist()[0] == pytest.approx([0.5, 1 / 6])
    assert opinion.uncertainty.item() == pytest.approx(1 / 3)
    assert opinion.probabilities.tolist()[0] == pytest.approx([4 / 6, 2 / 6])
    assert opinion.alpha.tolist()[0] == pytest.approx([4.0, 2.0])


def test_dempster_combination_by_hand():
    a, b = _opinion([0.6, 0.2], 0.2), _opinion([0.5, 0.1], 0.4)
    assert conflict(a, b).item() == pytest.approx(0.6 * 0.1 + 0.2 * 0.5)
    fused = combine(a, b)
    assert fused.belief.tolist()[0] == pytest.approx([0.64 / 0.84, 0.12 / 0.84])
    assert fused.uncertainty.item() == pytest.approx(0.08 / 0.84)
    assert fused.belief.sum().item() + fused.uncertainty.item() == pytest.approx(1.0)


def test_agreement_lowers_uncertainty_and_vacuous_opinion_changes_nothing():
    a = _opinion([0.7, 0.1], 0.2)
    assert combine(a, a).uncertainty.item() < a.uncertainty.item()
    vacuous = _opinion([0.0, 0.0], 1.0)
    fused = combine(a, vacuous)
    assert fused.belief.tolist()[0] == pytest.approx([0.7, 0.1])
    assert fused.uncertainty.item() == pytest.approx(0.2)


def test_opposed_confident_opinions_have_high_conflict():
    assert conflict(_opinion([0.9, 0.0], 0.1), _opinion([0.0, 0.9], 0.1)).item() == pytest.approx(0.81)


def test_loss_rewards_evidence_for_the_right_class_and_trains():
    target = torch.tensor([0])
    right = evidential_loss(torch.tensor([[9.0, 0.0, 0.0]]), target, kl_weight=0.1)
    wrong = evidential_loss(torch.tensor([[0.0, 9.0, 0.0]]), target, kl_weight=0.1)
    assert right.item() < wrong.item()
    torch.manual_seed(0)
    head = EvidentialHead(4, 3)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    x[torch.arange(64), y] += 3
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        loss = evidential_loss(head(x), y, 0.05).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    opinion = Opinion.from_evidence(head(x))
    assert (opinion.probabilities.argmax(1) == y).float().mean() > 0.9
    assert head(x).min() >= 0
