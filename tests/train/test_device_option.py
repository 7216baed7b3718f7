"""The MICS_TEST_DEVICE switch (tests/train/conftest.py), checked on the CPU."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import mics_core.devices
from mics_core.config import TrainSettings
from tests.train import conftest as switch

# `mics_core.train.pretrain` as an attribute is the function the package exports; the module is this
pretrain_module = importlib.import_module("mics_core.train.pretrain")


@dataclass
class FakeItem:
    """What the collection hook reads of a test item."""

    fspath: Path
    originalname: str
    skips: list[str] = field(default_factory=list)

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.skips.append(mark.kwargs["reason"])


def test_without_the_variable_nothing_changes(monkeypatch, test_device):
    monkeypatch.delenv(switch.ENV, raising=False)
    assert switch.requested_device() is None and switch.unavailable_reason(None) is None
    if test_device is None:  # this session was started without the variable
        assert pretrain_module.resolve_device(TrainSettings().device) == torch.device("cpu")
        assert mics_core.devices.resolve_device("cuda") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("value", ["", "cpu", " cpu "])
def test_empty_or_cpu_asks_for_nothing(value):
    assert switch.requested_device({switch.ENV: value}) is None


def test_cuda_without_a_gpu_skips_with_the_reason():
    assert switch.requested_device({switch.ENV: "cuda"}) == "cuda"
    reason = switch.unavailable_reason("cuda", cuda_available=False)
    assert reason is not None and "CUDA is not available" in reason
    assert switch.unavailable_reason("cuda:1", cuda_available=True) is None
    assert "only cuda" in switch.unavailable_reason("mps", cuda_available=True)


def test_the_hook_skips_this_folders_tests_with_the_reason_when_cuda_is_missing(monkeypatch):
    items = [
        FakeItem(switch.HERE / "test_train_mics.py", "test_beats_chance_on_held_out_cases"),
        FakeItem(switch.HERE / "test_device_option.py", "test_empty_or_cpu_asks_for_nothing"),
        FakeItem(switch.HERE.parent / "test_config.py", "test_presets"),
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(switch.ENV, raising=False)
    switch.pytest_collection_modifyitems(None, items)
    assert [item.skips for item in items] == [[], [], []]  # no variable: nothing changes
    monkeypatch.setenv(switch.ENV, "cuda")
    switch.pytest_collection_modifyitems(None, items)
    ours, mechanism, elsewhere = items
    assert len(ours.skips) == 1 and "CUDA is not available" in ours.skips[0]
    assert mechanism.skips == [] and elsewhere.skips == []


def test_on_a_gpu_only_the_cpu_only_tests_skip(monkeypatch):
    items = [
        FakeItem(switch.HERE / "test_train_mics.py", "test_beats_chance_on_held_out_cases"),
        FakeItem(switch.HERE / "test_train_mics.py", "test_cpu_training_is_deterministic_with_a_seed"),
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(switch.ENV, "cuda")
    switch.pytest_collection_modifyitems(None, items)
    assert items[0].skips == [] and "not bit-reproducible" in items[1].skips[0]


def test_the_resolver_answers_the_test_device_for_every_setting():
    resolve = switch.forced_resolver("cuda:0")
    assert resolve("cpu") == resolve("cuda") == torch.device("cuda:0")


def test_every_module_that_imported_resolve_device_is_switched():
    modules = {module.__name__ for module, _ in switch.switch_targets()}
    assert set(switch.MODULES) <= modules
    assert "mics_core.train.pretrain" in modules
