"""Pre-training views of a pair."""

from __future__ import annotations

import torch

from mics_core.data import pair_views


def _pairs() -> torch.Tensor:
    """Two pairs whose WLI and NBI are the same picture: a bright square in one corner."""
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :8, :8] = 200
    return torch.stack([torch.stack([image, image])] * 2)


def test_both_views_of_a_pair_share_one_geometry():
    for seed in range(10):
        wli, nbi = pair_views(_pairs(), torch.Generator().manual_seed(seed), jitter=0.0)
        assert torch.equal(wli, nbi)


def test_colour_jitter_is_drawn_per_view_but_keeps_the_geometry():
    wli, nbi = pair_views(_pairs(), torch.Generator().manual_seed(0), jitter=0.4)
    assert not torch.allclose(wli, nbi)
    assert torch.equal(wli.mean(1) > wli.mean(), nbi.mean(1) > nbi.mean())  # the bright square in the same place
