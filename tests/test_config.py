"""Training presets: the GPU preset is only checked on a GPU when one is lent, so its models
are at least built and run forward here, on the CPU, at their real sizes (gradients are
checked on tiny models in tests/model)."""

from __future__ import annotations

import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.model.heads import FusionHead
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
    pooled = torch.stack([t.mean(1) for t in tokens], 1)
    for hidden in settings.finetune.heads:
        head = FusionHead(384, 3, hidden, settings.finetune.shift_atoms)
        assert head.predict(pooled)["logits"].shape == (2, 3)


def test_the_preset_is_chosen_by_MICS_PRESET_and_overridden_by_MICS_variables(monkeypatch):
    monkeypatch.setenv("MICS_PRESET", "gpu")
    monkeypatch.setenv("MICS_IMAGE_SIZE", "160")
    settings = TrainSettings.from_env()
    assert (settings.pretrain.backbone, settings.pretrain.image_size) == ("vit_small_patch16_224", 160)
    monkeypatch.delenv("MICS_PRESET")
    assert TrainSettings.from_env().pretrain.backbone == TrainSettings.preset("cpu").pretrain.backbone


def test_an_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        TrainSettings.preset("tpu")


def test_settings_are_stored_whole_and_read_back_equal():
    settings = TrainSettings.preset("gpu").replace(seed=3, shift=True, baseline_steps=7)
    stored = settings.to_dict()
    assert set(stored) >= {"pretrain", "finetune", "baseline", "seed", "device"}
    assert TrainSettings.from_dict(stored) == settings


def test_flat_names_address_a_stage_by_prefix_or_by_a_field_only_one_stage_has():
    settings = TrainSettings().replace(pretrain_epochs=3, finetune_steps=4, baseline_steps=5, backbone="resnet18")
    assert (settings.pretrain.epochs, settings.finetune.steps, settings.baseline.steps) == (3, 4, 5)
    assert settings.pretrain.backbone == "resnet18"
    with pytest.raises(ValueError, match="unknown training setting 'steps'"):
        TrainSettings().replace(steps=3)  # more than one stage has one: ambiguous


def test_settings_of_a_version_saved_before_the_split_are_read_by_their_flat_names():
    old = {"backbone": "resnet18", "pretrain_epochs": 5, "finetune_lr": 0.01, "baseline_steps": 9, "gone": 1}
    settings = TrainSettings.from_dict(old)
    assert (settings.pretrain.backbone, settings.pretrain.epochs) == ("resnet18", 5)
    assert (settings.finetune.lr, settings.baseline.steps) == (0.01, 9)


def test_a_nested_version_with_fields_since_removed_still_reads():
    stored = TrainSettings().to_dict()
    stored["finetune"] |= {"fusion_dim": 128, "refit": True, "heads": [0, 64]}  # JSON gives a list
    settings = TrainSettings.from_dict(stored)
    assert settings.finetune.heads == (0, 64) and TrainSettings.from_dict(settings.to_dict()) == settings


def test_the_cpu_preset_stands_on_packaged_imagenet_weights_without_stage_one():
    part = TrainSettings.preset("cpu").pretrain
    assert (part.backbone, part.image_size, part.weights, part.epochs) == ("tf_efficientnet_lite0", 224, "imagenet", 0)


def test_MICS_WEIGHTS_none_asks_for_random_init(monkeypatch):
    monkeypatch.setenv("MICS_WEIGHTS", "none")
    assert TrainSettings.from_env().pretrain.weights is None
