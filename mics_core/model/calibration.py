"""Temperature scaling (Guo et al., 2017) fitted on held-out labelled pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(probabilities: torch.Tensor, target: torch.Tensor, max_iter: int = 100) -> float:
    """The T > 0 that minimises held-out NLL of softmax(log p / T); 1.0 without data."""
    if len(target) == 0:
        return 1.0
    log_p = probabilities.clamp(min=1e-12).log().detach()
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(log_p / log_t.exp(), target)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def apply_temperature(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(probabilities.clamp(min=1e-12).log() / temperature, dim=-1)
