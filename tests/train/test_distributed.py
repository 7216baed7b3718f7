"""Stage-1 pre-training under torchrun: two gloo processes on the CPU stand in for two GPUs."""

from __future__ import annotations

import subprocess

import pytest
import torch

from mics_core.config import TrainSettings
from mics_core.data import PairRecord
from mics_core.train import Cancelled, Reporter, pretrain_encoders
from tests.conftest import write_image

TINY = {"backbone": "test_resnet", "image_size": 32, "pretrain_epochs": 1, "pretrain_batch": 4, "device": "cpu"}


@pytest.fixture
def records(tmp_path) -> list[PairRecord]:
    return [PairRecord(f"c{i}", write_image(tmp_path / f"w{i}.png", i, (32, 32)), None, f"{i:032x}") for i in range(8)]


def test_two_processes_pretrain_and_report_every_step(records):
    steps: list[tuple[int, int]] = []
    reporter = Reporter(on_step=lambda phase, step, total, losses: steps.append((step, total)))
    result = pretrain_encoders(records, TrainSettings().replace(**TINY, gpus=2), reporter)
    single = pretrain_encoders(records, TrainSettings().replace(**TINY))
    assert steps == [(1, 2), (2, 2)]
    assert result.state.keys() == single.state.keys()
    assert len(result.history) == 2 and all(torch.isfinite(v).all() for v in result.state.values())
    assert any(not torch.equal(result.state[k], single.state[k]) for k in result.state)  # really trained apart


def test_cancelling_stops_the_whole_process_group(records):
    def stop(phase, step, total, losses):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        pretrain_encoders(records, TrainSettings().replace(**TINY, gpus=2), Reporter(on_step=stop))
    left = subprocess.run(["pgrep", "-f", "mics_core.train.distributed"], capture_output=True, text=True).stdout
    assert not left.strip()
