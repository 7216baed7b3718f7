"""The one training loop. Every way of training — stage-1 pre-training, stage-2 fusion
fine-tuning, each benchmark baseline — is a `Method` that says how one step's losses are
made; the loop does what they share: the optimiser step, progress, cancel, a time limit
and stopping on a non-finite loss. Adding a semi-supervised method is one class.
(The shape of USB/semilearn's `AlgorithmBase.train_step`.)
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from mics_core.progress import SILENT, Reporter


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the weights are left as they were before that step."""


class Method(ABC):
    """One way of training. Subclasses set `phase`, `optimiser` (and optionally `schedule`) and
    implement `train_step`; `after_step` runs after each optimiser step (momentum updates, a
    second optimiser such as a discriminator's) and may return more values to log."""

    phase: str = "train"
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None

    @abstractmethod
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """The losses of step `step` by name; `total` is the one minimised."""

    def after_step(self, step: int) -> dict[str, float]:
        return {}


@dataclass
class LoopResult:
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False  # the time limit ended it before `steps`


def cosine_schedule(optimiser: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from the optimiser's learning rate to zero over `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))


def run(
    method: Method,
    steps: int,
    reporter: Reporter = SILENT,
    time_limit: float | None = None,
) -> LoopResult:
    """Train `method` for `steps` steps, or until `time_limit` seconds have passed.

    Raises:
        Cancelled: the reporter's `should_stop` said so (checked after every step).
        TrainingDiverged: a loss was not finite; no optimiser step was taken with it.
    """
    result = LoopResult()
    started = time.perf_counter()
    for step in range(steps):
        losses = method.train_step(step)
        values = {name: value.item() for name, value in losses.items()}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(
                f"{method.phase}: the {', '.join(bad)} loss became {values[bad[0]]} at step {step + 1} of {steps}; "
                "try a lower learning rate or check the images"
            )
        method.optimiser.zero_grad(set_to_none=True)
        losses["total"].backward()
        method.optimiser.step()
        if method.schedule is not None:
            method.schedule.step()
        values |= method.after_step(step)
        result.history.append(values)
        reporter.step(method.phase, step + 1, steps, values)
        if time_limit is not None and time.perf_counter() - started > time_limit:
            result.stopped_early = step + 1 < steps
            break
    result.seconds = time.perf_counter() - started
    return result
