"""How long-running training reports progress and learns it should stop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class Cancelled(Exception):
    """Raised inside a training loop when its `should_stop` says so."""


@dataclass
class Reporter:
    """`on_step(phase, step, total, losses)` after every step; `should_stop()` checked after it."""

    on_step: Callable[[str, int, int, dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None

    def step(self, phase: str, step: int, total: int, losses: dict[str, float]) -> None:
        if self.on_step is not None:
            self.on_step(phase, step, total, losses)
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"stopped during {phase} at step {step} of {total}")

    def within(self, offset: int, total: int) -> Reporter:
        """This reporter for one part of a longer phase: step n is reported as `offset + n` of `total`."""
        on_step = self.on_step
        return Reporter(
            (lambda phase, step, _, losses: on_step(phase, offset + step, total, losses)) if on_step else None,
            self.should_stop,
        )


SILENT = Reporter()
