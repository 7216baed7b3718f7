"""Stage-1 losses: shapes, finite values, and gradients that reach both encoders."""

from __future__ import annotations

import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.model.pretraining import SynergisticPretrainer, info_nce, patch_mask


def _model(backbone: str) -> SynergisticPretrainer:
    torch.manual_seed(0)
    settings = TrainSettings().replace(backbone=backbone, image_size=64, queue_size=16, proj_dim=8)
    return SynergisticPretrainer(settings.pretrain)


def _grads_reach(model, loss) -> dict[str, bool]:
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {
        m: any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[m].parameters())
        for m in ("wli", "nbi")
    }


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_every_loss_is_finite_and_sends_gradient_to_both_encoders(backbone):
    model = _model(backbone)
    wli, nbi = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    losses, recon, real = model.losses(wli, nbi, torch.Generator().manual_seed(0))
    assert set(losses) == {"consistency", "reconstruction", "adversarial", "aligned"}
    assert recon.shape == real.shape == (8, 3, 64, 64)
    for name, loss in losses.items():
        assert loss.ndim == 0 and torch.isfinite(loss), name
        assert _grads_reach(model, loss) == {"wli": True, "nbi": True}, name


def test_adversarial_term_trains_the_encoders_not_the_discriminator():
    model = _model("test_resnet")
    losses, _, _ = model.losses(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    model.zero_grad()
    losses["adversarial"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["wli"].parameters())
    discriminator_ids = {id(p) for p in model.discriminator.parameters()}
    assert not discriminator_ids & {id(p) for p in model.generator_parameters()}


def test_discriminator_loss_does_not_reach_the_encoders():
    model = _model("test_resnet")
    _, recon, real = model.losses(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    model.zero_grad()
    model.discriminator_loss(recon, real).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoders["wli"].parameters())
    assert any(p.grad is not None for p in model.discriminator.parameters())


def test_momentum_update_and_queue():
    model = _model("test_resnet")
    model.losses(torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64))
    before = next(model.momentum_encoders["wli"].parameters()).clone()
    with torch.no_grad():
        for p in model.encoders["wli"].parameters():
            p.add_(1.0)
    model.after_step()
    after = next(model.momentum_encoders["wli"].parameters())
    assert torch.allclose(after, before + (1 - model.settings.momentum), atol=1e-6)
    assert int(model.queue_ptr) == 4


def test_patch_mask_masks_the_requested_share():
    mask = patch_mask(3, 4, 0.75, torch.Generator().manual_seed(0), "cpu")
    assert mask.shape == (3, 16) and mask.sum(1).tolist() == [12, 12, 12]


def test_info_nce_is_low_for_matching_pairs():
    a = torch.eye(8)
    assert info_nce(a, a, 0.07) < 0.01 < info_nce(a, a.roll(1, 0), 0.07)
