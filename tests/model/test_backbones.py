"""The encoder factory: token layout read off the model, input normalisation from timm's
per-model configuration, and the table of backbones the Train screen and presets offer."""

from __future__ import annotations

import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.model.backbones import SUPPORTED, create_encoder


def test_a_vit_registered_outside_timms_vision_transformer_module_is_still_a_vit():
    encoder = create_encoder("deit_tiny_distilled_patch16_224", 32)  # registered by timm's deit module
    assert encoder.is_vit
    tokens = encoder(torch.zeros(2, 3, 32, 32))
    assert tokens.shape == (2, 4, 192)  # 2 x 2 patch tokens; its class and distillation tokens dropped


def test_a_cnn_gives_one_token_per_feature_map_cell():
    encoder = create_encoder("test_resnet", 64)
    assert not encoder.is_vit
    assert encoder(torch.zeros(1, 3, 64, 64)).shape[1] == (64 // encoder.patch) ** 2


def test_each_backbone_normalises_with_the_statistics_timm_records_for_it():
    resnet, vit = create_encoder("resnet10t", 32), create_encoder("vit_small_patch16_224", 32)
    grey = torch.full((1, 3, 4, 4), 127.5)
    assert torch.allclose(vit.normalise(grey), torch.zeros(1, 3, 4, 4))  # mean = std = 0.5
    assert torch.allclose(resnet.normalise(grey)[0, :, 0, 0], torch.tensor([0.0655, 0.1964, 0.4178]), atol=1e-3)


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_every_preset_uses_an_offered_backbone(preset):
    assert TrainSettings.preset(preset).pretrain.backbone in SUPPORTED


def test_an_unknown_backbone_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"did you mean.*resnet18"):
        create_encoder("resnet-18", 32)
