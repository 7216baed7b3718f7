"""`MICS_TEST_DEVICE=cuda` runs the learning-core tests of this folder on a GPU.

The tests build their settings at import time (`TINY = TrainSettings().replace(...)`, device
"cpu"), so the device is switched where the library turns a setting into a device: every
`resolve_device` the training code holds (`mics_core.devices` and each module that imported
the name) answers the test device, for the whole session (module-scoped fixtures such as a
trained model included). With the variable set and no CUDA, the tests skip with the reason;
without it nothing changes. Child processes (the torchrun tests) do not see the switch and
stay on the CPU, as their settings say.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch

import mics_core.devices

ENV = "MICS_TEST_DEVICE"
HERE = Path(__file__).resolve().parent
# The modules that import `resolve_device` by name (grep -rn resolve_device mics_core); any other
# mics_core module already imported that holds the same function is switched too.
MODULES = (
    "mics_core.devices",
    "mics_core.train.pretrain",
    "mics_core.train.finetune",
    "mics_core.features",
    "mics_core.evaluation.baselines",
    "mics_core.evaluation.benchmark",
    "mics_core.jobs.worker",
)
# Tests that check a CPU-only promise; on a GPU they skip with this reason.
CPU_ONLY = {
    "test_cpu_training_is_deterministic_with_a_seed": "CPU determinism; CUDA bf16 kernels (atomics in backward) "
    "are not bit-reproducible",
}


def requested_device(environ: Mapping[str, str] = os.environ) -> str | None:
    """The device MICS_TEST_DEVICE asks for, or None (unset, empty or "cpu": nothing changes)."""
    value = environ.get(ENV, "").strip()
    return None if value in ("", "cpu") else value


def unavailable_reason(device: str | None, cuda_available: bool | None = None) -> str | None:
    """Why tests asked to run on `device` cannot, or None when they can (or no device was asked)."""
    if device is None:
        return None
    if not device.startswith("cuda"):
        return f"{ENV}={device!r}: only cuda (or cuda:N) is supported"
    if not (torch.cuda.is_available() if cuda_available is None else cuda_available):
        return f"{ENV}={device} but CUDA is not available on this machine"
    return None


def forced_resolver(device: str) -> Callable[[str], torch.device]:
    """A `resolve_device` that answers `device` whatever the settings name."""
    target = torch.device(device)

    def resolve(name: str) -> torch.device:
        return target

    return resolve


def switch_targets() -> list[tuple[object, str]]:
    """(module, "resolve_device") for every mics_core module that holds the library's function."""
    original = mics_core.devices.resolve_device
    for name in MODULES:
        importlib.import_module(name)
    return [
        (module, "resolve_device")
        for name, module in sorted(sys.modules.items())
        if (name == "mics_core" or name.startswith("mics_core."))
        and getattr(module, "resolve_device", None) is original
    ]


def _ours(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    device = requested_device()
    if device is None:
        return
    reason = unavailable_reason(device)
    for item in items:
        if not _ours(item) or Path(str(item.fspath)).stem == "test_device_option":
            continue
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif item.originalname in CPU_ONLY:
            item.add_marker(pytest.mark.skip(reason=f"{device}: {CPU_ONLY[item.originalname]}"))


@pytest.fixture(scope="session", autouse=True)
def test_device() -> Iterator[torch.device | None]:
    """The device the learning core resolves every setting to for this session (None: unchanged)."""
    device = requested_device()
    if device is None or unavailable_reason(device):
        yield None
        return
    with pytest.MonkeyPatch.context() as patch:
        resolver = forced_resolver(device)
        for module, attribute in switch_targets():
            patch.setattr(module, attribute, resolver)
        yield torch.device(device)
