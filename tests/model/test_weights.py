"""ImageNet weights from a pinned package: loaded offline, checked, and refused in words when wrong."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mics_core.model import weights
from mics_core.model.backbones import create_encoder
from mics_core.model.weights import PACKAGED, WeightsError, imagenet_state


def test_the_packaged_lite0_weights_load_into_timm_and_give_the_recorded_output():
    state = imagenet_state("tf_efficientnet_lite0")
    assert len(state) == 296 and state["classifier.weight"].shape == (1000, 1280)
    encoder = create_encoder("tf_efficientnet_lite0", 64, "imagenet")
    assert torch.equal(encoder.net.conv_stem.weight, state["conv_stem.weight"])
    assert torch.allclose(encoder.mean, torch.full((1, 3, 1, 1), 0.5))  # the TF checkpoint's preprocessing


def test_weights_that_do_not_give_the_recorded_output_are_refused(monkeypatch):
    convert = PACKAGED["tf_efficientnet_lite0"].convert

    def shuffled(state):
        out = convert(state)
        out["classifier.bias"] = out["classifier.bias"].flip(0)
        return out

    broken = dataclasses.replace(PACKAGED["tf_efficientnet_lite0"], convert=shuffled)
    monkeypatch.setitem(PACKAGED, "tf_efficientnet_lite0", broken)
    imagenet_state.cache_clear()
    with pytest.raises(WeightsError, match="do not give the recorded output"):
        imagenet_state("tf_efficientnet_lite0")
    imagenet_state.cache_clear()


def test_a_file_that_is_not_the_pinned_one_is_refused(monkeypatch):
    monkeypatch.setitem(
        PACKAGED, "tf_efficientnet_lite0", dataclasses.replace(PACKAGED["tf_efficientnet_lite0"], sha256="0" * 64)
    )
    imagenet_state.cache_clear()
    with pytest.raises(WeightsError, match="not the pinned file"):
        imagenet_state("tf_efficientnet_lite0")
    imagenet_state.cache_clear()


def test_a_backbone_without_packaged_weights_says_which_have_them():
    with pytest.raises(
        WeightsError, match="no ImageNet weights ship for 'resnet10t'; use one of tf_efficientnet_lite0"
    ):
        imagenet_state("resnet10t")


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(
        PACKAGED,
        "tf_efficientnet_lite0",
        dataclasses.replace(PACKAGED["tf_efficientnet_lite0"], package="not_installed_pkg"),
    )
    imagenet_state.cache_clear()
    with pytest.raises(WeightsError, match="make setup"):
        weights.imagenet_state("tf_efficientnet_lite0")
    imagenet_state.cache_clear()
