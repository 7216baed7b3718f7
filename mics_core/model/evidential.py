"""Evidential (Dirichlet) outputs and their Dempster–Shafer combination.

Following Trusted Multi-View Classification (Han et al., 2021): a head's non-negative
evidence e gives Dirichlet parameters alpha = e + 1, with S = sum(alpha), belief masses
b = e / S and uncertainty mass u = K / S (so sum(b) + u = 1). Two opinions combine by
Dempster's rule:

    C = sum_{i != j} b1_i * b2_j            (conflict between the two)
    b = (b1 * b2 + b1 * u2 + b2 * u1) / (1 - C)
    u = u1 * u2 / (1 - C)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class EvidentialHead(nn.Module):
    """Linear layer whose softplus output is Dirichlet evidence."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.linear(features))


@dataclass
class Opinion:
    belief: torch.Tensor  # (B, K)
    uncertainty: torch.Tensor  # (B,)

    @classmethod
    def from_evidence(cls, evidence: torch.Tensor) -> Opinion:
        strength = evidence.sum(-1) + evidence.shape[-1]
        return cls(evidence / strength[:, None], evidence.shape[-1] / strength)

    @property
    def alpha(self) -> torch.Tensor:
        strength = self.belief.shape[-1] / self.uncertainty.clamp(min=1e-12)
        return self.belief * strength[:, None] + 1

    @property
    def probabilities(self) -> torch.Tensor:
        """The Dirichlet mean alpha / S."""
        alpha = self.alpha
        return alpha / alpha.sum(-1, keepdim=True)


def conflict(a: Opinion, b: Opinion) -> torch.Tensor:
    """Dempster's conflict C: the belief mass the two opinions put on different classes."""
    return a.belief.sum(-1) * b.belief.sum(-1) - (a.belief * b.belief).sum(-1)


def combine(a: Opinion, b: Opinion) -> Opinion:
    """Dempster's rule of combination for two opinions over the same K classes."""
    scale = 1 / (1 - conflict(a, b)).clamp(min=1e-12)
    belief = a.belief * b.belief + a.belief * b.uncertainty[:, None] + b.belief * a.uncertainty[:, None]
    return Opinion(belief * scale[:, None], a.uncertainty * b.uncertainty * scale)


def evidential_loss(evidence: torch.Tensor, target: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """Expected cross-entropy under Dir(alpha) plus a KL term that removes misleading evidence.

    `target` holds class indices; rows may be weighted by the caller through `reduction`.
    """
    n_classes = evidence.shape[-1]
    alpha = evidence + 1
    strength = alpha.sum(-1, keepdim=True)
    one_hot = F.one_hot(target, n_classes).float()
    expected_ce = (one_hot * (torch.digamma(strength) - torch.digamma(alpha))).sum(-1)
    alpha_tilde = one_hot + (1 - one_hot) * alpha
    return expected_ce + kl_weight * _kl_to_uniform(alpha_tilde)


def _kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) per row."""
    k = alpha.shape[-1]
    strength = alpha.sum(-1, keepdim=True)
    first = (
        torch.lgamma(strength).squeeze(-1)
        - torch.lgamma(torch.tensor(float(k), device=alpha.device))
        - torch.lgamma(alpha).sum(-1)
    )
    second = ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(strength))).sum(-1)
    return first + second
