"""The phase the progress display shows (a training epoch, a validation, a test), from the moment
it opens to the moment it closes.

:class:`~experiment.callbacks.progression.ProgressionCallback` opens a :class:`ShownPhase` at each
phase's start and closes it at its end. After each step the phase decides whether a line is due
(every n-th step, at most once per interval), reads the pace, and redraws its line in place on a
terminal or prints a step line elsewhere; when a signal asked the loop to stop, it leaves its
terminal line as it stands, so that the report of the interrupt starts on a line of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from experiment.callbacks.progress_format import RESET, format_values
from experiment.callbacks.progress_line import Phase, bar_drawer, running_values, step_fields
from experiment.callbacks.progress_terminal import TerminalLine


class ShownPhase:
    """A phase on show: its memory (:class:`~experiment.callbacks.progress_line.Phase`) and, on a
    terminal, its :class:`~experiment.callbacks.progress_terminal.TerminalLine`.

    Args:
        phase: the phase's name, head, steps, pace, and when its next line is due.
        write: the display's writer (which writes nothing more once the output is gone).
        live: whether the output is a terminal, where the line is redrawn in place.
        interval: the shortest time in seconds between two lines.
        color: the escape sequence of a field (``text``, ``ratio``, ``time``, ``metric_value``,
            ``progress_bar``), read at each line ("" for none).
        progress_bar: whether a terminal line has a bar.
        encoding: the output's encoding (the bar's characters must fit it).
        trainer: whose running loss and metrics are shown (None: none are).
    """

    def __init__(
        self,
        phase: Phase,
        write: Callable[[str], None],
        *,
        live: bool,
        interval: float,
        color: Callable[[str], str],
        progress_bar: bool,
        encoding: str | None,
        trainer: Any,
    ) -> None:
        self.phase = phase
        self._write = write
        self.interval = interval
        self.color = color
        self.progress_bar = progress_bar
        self.encoding = encoding
        self.trainer = trainer
        self.line = TerminalLine(write) if live else None

    def start(self, now: float) -> None:
        """On a terminal, draw the line now (and end it before any warning is printed); elsewhere
        the first step line waits for the interval."""
        if self.line is not None:
            self.line.hook_warnings()
            self.show(now)

    def step(self, batch_number: int, clock: Callable[[], float]) -> bool:
        """After step ``batch_number``: show a line if one is due (``clock()`` is read only then).

        Returns:
            True when a signal asked the loop to stop: the line was left as it stands, on a line
            of its own, and the phase is closed.
        """
        phase = self.phase
        if batch_number % phase.every == 0:
            now = clock()
            if now >= phase.due:
                phase.pace.update(batch_number, now)
                self.show(now)
        if self.line is None or not self.line.stop_requested():
            return False
        if phase.pace.steps != batch_number:
            phase.pace.update(batch_number, clock())
            self.show(phase.pace.time)
        self.close(keep_line=True)
        return True

    def show(self, now: float) -> None:
        """Draw the phase's line (on a terminal) or print it (elsewhere)."""
        phase = self.phase
        phase.due = now + self.interval
        values = running_values(self.trainer, phase.name) if self.trainer is not None else {}
        colors = {field: self.color(field) for field in ("text", "ratio", "time")}
        fields = step_fields(phase, format_values(values, colors["text"], self.color("metric_value")), colors)
        if self.line is None:
            self._write(" ".join(field.text for field in fields if not field.is_bar) + "\n")
            return
        bar = bar_drawer(phase, self.color("progress_bar"), self.encoding) if self.progress_bar else None
        self.line.draw_fields(fields, bar, RESET if colors["text"] else "")

    def close(self, *, keep_line: bool = False) -> None:
        """Erase the terminal line, or leave it and move to the next line."""
        line, self.line = self.line, None
        if line is not None:
            line.release()
            line.end_line() if keep_line else line.clear()
