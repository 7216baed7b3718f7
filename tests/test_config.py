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


def test_settings_are_stored_whole_and_read_back_equal():
    settings = TrainSettings.preset("gpu").replace(seed=3, refit=False, baseline_steps=7)
    stored = settings.to_dict()
    assert set(stored) >= {"pretrain", "finetune", "baseline", "seed", "device"}
    assert TrainSettings.from_dict(stored) == settings


def test_flat_names_address_a_stage_by_prefix_or_by_a_field_only_one_stage_has():
    settings = TrainSettings().replace(pretrain_epochs=3, finetune_epochs=4, baseline_steps=5, backbone="resnet18")
    assert (settings.pretrain.epochs, settings.finetune.epochs, settings.baseline.steps) == (3, 4, 5)
    assert settings.pretrain.backbone == "resnet18"
    with pytest.raises(ValueError, match="unknown training setting 'epochs'"):
        TrainSettings().replace(epochs=3)  # every stage has one: ambiguous


def test_settings_of_a_version_saved_before_the_split_are_read_by_their_flat_names():
    old = {"backbone": "resnet18", "pretrain_epochs": 5, "finetune_lr": 0.01, "baseline_steps": 9, "gone": 1}
    settings = TrainSettings.from_dict(old)
    assert (settings.pretrain.backbone, settings.pretrain.epochs) == ("resnet18", 5)
    assert (settings.finetune.lr, settings.baseline.steps) == (0.01, 9)
