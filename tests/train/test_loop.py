"""The one training loop: every method gets progress, cancel, a time limit and a stop on a
non-finite loss from it, not from code of its own."""

from __future__ import annotations

import time

import pytest
import torch

from mics_core.progress import Cancelled, Reporter
from mics_core.train.loop import Method, TrainingDiverged, run


class LineFit(Method):
    """Fit y = 3x with one weight; `poison_at` makes that step's loss NaN."""

    phase = "fit"

    def __init__(self, poison_at: int | None = None, pause: float = 0.0) -> None:
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.optimiser = torch.optim.SGD([self.weight], lr=0.1)
        self.poison_at, self.pause = poison_at, pause
        self.after = 0

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        time.sleep(self.pause)
        x = torch.linspace(-1, 1, 8)
        loss = ((self.weight * x - 3 * x) ** 2).mean()
        if step == self.poison_at:
            loss = loss * float("nan")
        return {"total": loss}

    def after_step(self, step: int) -> dict[str, float]:
        self.after += 1
        return {"weight": self.weight.item()}


def test_runs_every_step_and_learns():
    method = LineFit()
    result = run(method, 50)
    assert len(result.history) == 50 and method.after == 50 and not result.stopped_early
    assert abs(method.weight.item() - 3) < 0.05
    assert result.history[-1]["total"] < result.history[0]["total"]
    assert "weight" in result.history[-1]  # what after_step returns is logged with the losses


def test_reports_each_step_of_the_phase():
    steps: list[tuple[str, int, int]] = []
    run(LineFit(), 5, Reporter(on_step=lambda phase, step, total, losses: steps.append((phase, step, total))))
    assert steps == [("fit", i, 5) for i in range(1, 6)]


def test_a_part_of_a_longer_phase_reports_its_place_in_the_whole():
    steps: list[tuple[int, int]] = []
    reporter = Reporter(on_step=lambda phase, step, total, losses: steps.append((step, total)))
    run(LineFit(), 3, reporter.within(0, 5))
    run(LineFit(), 2, reporter.within(3, 5))
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_a_stop_request_cancels_after_the_current_step():
    method = LineFit()
    with pytest.raises(Cancelled, match="fit at step 3 of 10"):
        run(method, 10, Reporter(should_stop=lambda: method.after >= 3))
    assert method.after == 3


def test_the_time_limit_ends_training_early_and_says_so():
    result = run(LineFit(pause=0.02), 1000, time_limit=0.1)
    assert 1 <= len(result.history) < 1000 and result.stopped_early


def test_a_non_finite_loss_stops_training_before_it_reaches_the_weights():
    method = LineFit(poison_at=4)
    with pytest.raises(TrainingDiverged, match="total loss became nan at step 5 of 10"):
        run(method, 10)
    assert torch.isfinite(method.weight) and method.after == 4
