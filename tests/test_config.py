"""Training presets: the GPU preset is only checked on a GPU when one is lent, so its models
are at least built and run forward here, on the CPU, at their real sizes (gradients are
checked on tiny models in tests/model)."""

from __future__ import annotations

import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.model.fusion import FusionClassifier
from mics_core.model.pretraining import SynergisticPretrainer


def test_the_gpu_preset_builds_the_papers_models_and_both_stages_run_forward():
    settings = TrainSettings.preset("gpu", device="cpu", queue_size=8)
    torch.manual_seed(0)
    pretrainer = SynergisticPretrainer(settings.pretrain)
    wli, nbi = torch.rand(2, 3, 224, 224), torch.rand(2, 3, 224, 224)
    losses, _, _ = pretrainer.losses(wli, nbi, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(loss) for loss in losses.values())

    with torch.no_grad():
        tokens = [pretrainer.encoders[m](x) for m, x in (("wli", wli), ("nbi", nbi))]
    assert tokens[0].shape == (2, 196, 384)  # ViT-S/16 at 224 px: 14 × 14 patch tokens
    fusion = FusionClassifier.from_settings(384, 3, settings.finetune)
    assert fusion.predict(*tokens)["probs"].shape == (2, 3)


def test_the_preset_is_chosen_by_MICS_PRESET_and_overridden_by_MICS_variables(monkeypatch):
    monkeypatch.setenv("MICS_PRESET", "gpu")
    monkeypatch.setenv("MICS_IMAGE_SIZE", "160")
    settings = TrainSettings.from_env()
    assert (settings.pretrain.backbone, settings.pretrain.image_size) == ("vit_small_patch16_224", 160)
    monkeypatch.delenv("MICS_PRESET")
    assert TrainSettings.from_env().pretrain.backbone == TrainSettings().pretrain.backbone


def test_an_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        TrainSettings.preset("tpu")
