"""Stand-ins for what the progress display meets: a terminal, a clock, the trainer's running sums."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def frames(text: str) -> list[str]:
    """What a terminal would have shown, screen state after screen state, colours removed."""
    return [frame.strip() for frame in re.split(r"[\r\n]", ANSI.sub("", text)) if frame.strip()]


class FakeClock:
    """``perf_counter()`` and ``time()`` that move only when the test says so."""

    def __init__(self, now: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now, self.wall = now, wall

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


class RunningSums:
    """The trainer's accumulator as the display reads it: fixed running values; ``copies`` counts
    the reads of them (each a device-to-host copy with real tensors)."""

    def __init__(self, **values: float) -> None:
        self.names, self.values = list(values), list(values.values())
        self.samples = 1
        self.copies = 0

    @property
    def sums(self) -> RunningSums:
        return self

    def __truediv__(self, samples: int) -> RunningSums:
        return self

    def tolist(self) -> list[float]:
        self.copies += 1
        return list(self.values)

    def batch_names(self, prefix: str = "") -> list[str]:
        return [prefix + name for name in self.names]


def fake_trainer(
    epochs_completed: int = 0, steps_in_epoch: int = 0, global_step: int = 0, **values: Any
) -> Any:
    """A trainer with the counters the display reads and running values ``values`` (train and eval)."""
    return SimpleNamespace(
        epochs_completed=epochs_completed,
        steps_in_epoch=steps_in_epoch,
        global_step=global_step,
        train_metrics=RunningSums(**values),
        eval_metrics=RunningSums(**values),
    )
