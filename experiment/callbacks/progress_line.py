"""The step line of the progress display: its pace, its fields, and fitting them to a width.

Helpers of :mod:`experiment.callbacks.progression` that read no clock and write to no stream: the
callback passes the time and the terminal width in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from experiment.callbacks.progress_format import format_interval, format_rate

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
BAR_MIN_WIDTH = 10  # narrower, a bar says nothing: leave it out
BAR_MAX_WIDTH = 40


def visible_width(text: str) -> int:
    """The columns ``text`` takes on a terminal (its colour codes take none)."""
    return len(ANSI_ESCAPE.sub("", text))


class _Average:
    """tqdm's exponential moving average, with its start-up bias corrected."""

    def __init__(self, smoothing: float) -> None:
        self.alpha = smoothing
        self.last = 0.0
        self.calls = 0

    def add(self, value: float) -> None:
        self.last = self.alpha * value + (1 - self.alpha) * self.last
        self.calls += 1

    @property
    def value(self) -> float:
        return self.last / (1 - (1 - self.alpha) ** self.calls) if self.calls else 0.0


class Pace:
    """Steps per second of a phase, from the readings the display makes (step count, time).

    With ``smoothing`` > 0, the rate is the ratio of moving averages of the steps and seconds between
    two readings, which weighs recent steps more (tqdm's estimate); with 0, it is the average since
    the phase began.
    """

    def __init__(self, smoothing: float, now: float, steps: int) -> None:
        self.smoothing = smoothing
        self.start_time, self.start_steps = now, steps
        self.time, self.steps = now, steps
        self._steps = _Average(smoothing)
        self._seconds = _Average(smoothing)

    def update(self, steps: int, now: float) -> None:
        """Record a reading: ``steps`` done in the phase at time ``now``."""
        if self.smoothing:
            self._steps.add(steps - self.steps)
            self._seconds.add(now - self.time)
        self.time, self.steps = now, steps

    @property
    def elapsed(self) -> float:
        """Seconds from the phase's start to the last reading."""
        return self.time - self.start_time

    def rate(self) -> float | None:
        """Steps per second, or None before a step was timed."""
        if self.smoothing:
            seconds = self._seconds.value
            return self._steps.value / seconds if seconds > 0 and self._steps.value > 0 else None
        done = self.steps - self.start_steps
        return done / self.elapsed if done > 0 and self.elapsed > 0 else None


@dataclass(frozen=True, eq=False)  # told apart by identity
class Field:
    """A piece of the step line.

    Attributes:
        text: what it shows (colour codes allowed).
        priority: the lowest is kept longest; a line too wide drops its highest first.
        is_bar: the progress bar, drawn in whatever width the other fields leave (``text`` unused).
    """

    text: str = ""
    priority: int = 0
    is_bar: bool = False


def fit_line(fields: Sequence[Field], width: int, draw_bar: Callable[[int], str] | None = None) -> str:
    """The fields joined by spaces in at most ``width`` columns, never cut inside a word.

    The bar field takes the room the others leave (up to :data:`BAR_MAX_WIDTH` columns) when that is
    at least :data:`BAR_MIN_WIDTH`; otherwise it goes first, then the other fields, highest priority
    number first, until the rest fits. When the first field alone is too wide, its last words are
    dropped (and its colours with them).

    Args:
        draw_bar: ``draw_bar(columns) -> str``; without it the bar field is left out.
    """
    kept = [field for field in fields if not field.is_bar]
    room = width - _joined_width(kept) - 1
    if draw_bar is not None and room >= BAR_MIN_WIDTH:
        bar = draw_bar(min(room, BAR_MAX_WIDTH))
        return " ".join(bar if field.is_bar else field.text for field in fields)
    while len(kept) > 1 and _joined_width(kept) > width:
        kept.remove(max(kept, key=lambda field: field.priority))
    if _joined_width(kept) > width:
        return _cut_words(ANSI_ESCAPE.sub("", kept[0].text) if kept else "", width)
    return " ".join(field.text for field in kept)


def bar_drawer(phase: Phase, color: str, encoding: str | None) -> Callable[[int], str]:
    """``draw(columns)``: the phase's bar in ``columns`` columns, in blocks where ``encoding`` has them."""
    fraction = min(phase.pace.steps / phase.total, 1.0) if phase.total else 0.0
    full = "\u2588" if _can_encode("\u2588", encoding) else "#"

    def draw(columns: int) -> str:
        filled = int(fraction * (columns - 2))
        return f"{color}|{full * filled}{' ' * (columns - 2 - filled)}|"

    return draw


def _can_encode(text: str, encoding: str | None) -> bool:
    try:
        text.encode(encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


def running_values(trainer: Any, phase: str) -> dict[str, float]:
    """The running loss and batch metrics of ``phase`` (``"train"``, ``"val"``, ``"test"``) as the
    trainer's accumulators hold them: one device-to-host copy."""
    accumulator = trainer.train_metrics if phase == "train" else trainer.eval_metrics
    if accumulator.sums is None or not accumulator.samples:
        return {}
    prefix = "" if phase == "train" else f"{phase}_"
    values = (accumulator.sums / accumulator.samples).tolist()
    return dict(zip(accumulator.batch_names(prefix), values, strict=True))


def _joined_width(fields: Sequence[Field]) -> int:
    return sum(visible_width(field.text) for field in fields) + max(len(fields) - 1, 0)


def _cut_words(text: str, width: int) -> str:
    """``text`` without the words that end past ``width`` (one word cut only when it is alone)."""
    if len(text) <= width:
        return text
    cut = text[: width + 1].rsplit(" ", 1)[0] if " " in text[: width + 1] else text[:width]
    return cut.rstrip()


@dataclass(eq=False)
class Phase:
    """The display's memory of the phase it shows: a training epoch, a validation or a test.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        head: the start of its lines (``"Epoch: 2/20 "``, ``"... Valid "``, ``"Test "``), coloured.
        total: its number of steps, when known.
        every: show only every n-th step.
        pace: its steps and their times.
        due: the time from which the next step may be shown.
        epochs_left: training epochs planned after this one (for the run's ETA).
    """

    name: str
    head: str
    total: int | None
    every: int
    pace: Pace
    due: float
    epochs_left: int = 0


#: Field priorities: the lowest is dropped last. Metrics after the first go before the run's ETA.
_KEEP, _FIRST_METRIC, _ETA, _RATE, _RUN_ETA, _MORE_METRICS, _BAR = 0, 1, 2, 3, 4, 10, 10_000


def step_fields(phase: Phase, metrics: Sequence[str], colors: dict[str, str]) -> list[Field]:
    """The fields of a step line: step count, bar, ETAs, pace, then ``metrics`` (``"loss: 0.12"``).

    Args:
        colors: ``text``, ``ratio`` and ``time`` escape sequences ("" for none).
    """
    text, ratio, time_c = colors["text"], colors["ratio"], colors["time"]
    steps, total, rate = phase.pace.steps, phase.total, phase.pace.rate()
    count = f"{steps}/{total} {100 * steps / total:5.1f}%" if total else f"{steps}"
    fields = [Field(f"{phase.head}{text}Step: {ratio}{count}", _KEEP)]
    if total:
        fields.append(Field(is_bar=True, priority=_BAR))
        left = max(total - steps, 0)
        eta = format_interval(left / rate) if rate else "?"
        fields.append(Field(f"{text}ETA: {time_c}{eta}", _ETA))
        if phase.epochs_left > 0 and rate:
            run_eta = format_interval((left + phase.epochs_left * total) / rate)
            fields.append(Field(f"{text}Run ETA: {time_c}{run_eta}", _RUN_ETA))
    else:
        fields.append(Field(f"{time_c}{format_interval(phase.pace.elapsed)}", _ETA))
    if rate:
        fields.append(Field(f"{time_c}{format_rate(rate)}", _RATE))
    fields += [
        Field(metric, _FIRST_METRIC if index == 0 else _MORE_METRICS + index)
        for index, metric in enumerate(metrics)
    ]
    return fields
