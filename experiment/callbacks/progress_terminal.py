"""The progress display's step line on a terminal: redrawn in place, ended before other output.

A line redrawn with carriage returns leaves the cursor at its end, so whatever else is printed
meanwhile (a warning, the report of an interrupt) would continue it. :class:`TerminalLine` ends the
line first: warnings go through a wrapper of ``warnings.showwarning`` installed while the line is
shown, and the callback ends the line when a signal asked the loop to stop
(:meth:`TerminalLine.stop_requested`), before the loop commits and the interrupt is reported.
"""

from __future__ import annotations

import errno
import shutil
import signal
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from experiment.callbacks.progress_format import silence_stdout
from experiment.callbacks.progress_line import Field, fit_line, visible_width

_GONE = (errno.EPIPE, errno.EIO)  # a reader that went away; a terminal that was closed

_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def stop_flag() -> Any:
    """The flag that the training loop's signal handler sets when a signal asks it to stop, or None.

    The loop's handler (``experiment.training.interrupts.SignalHandler``) exposes its flag; another
    handler (none installed, or the user's own) has none.
    """
    for signum in _STOP_SIGNALS:
        flag = getattr(signal.getsignal(signum), "flag", None)
        if flag is not None:
            return flag
    return None


class TerminalLine:
    """One terminal line, redrawn in place; :meth:`release` when done with it.

    Args:
        write: writes text to the terminal (and flushes it); the callback's guarded writer.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self.shown = 0  # columns drawn on the line; 0: the cursor is at the start of a line
        self._previous: Any = None
        self._hook: Any = None
        self._stop_flag = stop_flag()  # looked up once: the handler stays for the whole phase

    def stop_requested(self) -> bool:
        """Whether a signal asked the training loop to stop since the line was made."""
        return self._stop_flag is not None and self._stop_flag.signum is not None

    def draw(self, text: str) -> None:
        """Replace the line with ``text`` (spaces erase what a longer previous text left)."""
        width = visible_width(text)
        self._write("\r" + text + " " * max(self.shown - width, 0))
        self.shown = max(width, 1)

    def draw_fields(self, fields: Sequence[Field], draw_bar: Callable[[int], str] | None, end: str) -> None:
        """Draw ``fields`` fitted to the terminal's width (:func:`fit_line`), then ``end``."""
        width = shutil.get_terminal_size().columns - 1  # the last column wraps on some terminals
        self.draw(fit_line(fields, width, draw_bar) + end)

    def clear(self) -> None:
        """Erase the line and leave the cursor at its start."""
        if self.shown:
            self._write("\r" + " " * self.shown + "\r")
            self.shown = 0

    def end_line(self) -> None:
        """Leave the line as it is and move to the next one, for other output to start on."""
        if self.shown:
            self.shown = 0
            self._write("\n")

    def hook_warnings(self) -> None:
        """Until :meth:`release`, end the line before ``warnings.showwarning`` prints a warning."""
        if self._hook is not None:
            return
        previous = warnings.showwarning

        def show(
            message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
        ) -> None:
            self.end_line()
            previous(message, category, filename, lineno, file, line)

        self._previous, self._hook = previous, show
        warnings.showwarning = show

    def release(self) -> None:
        """Put back the ``warnings.showwarning`` found by :meth:`hook_warnings` (unless replaced since)."""
        if self._hook is not None and warnings.showwarning is self._hook:
            warnings.showwarning = self._previous
        self._previous = self._hook = None


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` says it is a terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed stream
        return False


def write_through(stream: TextIO, text: str) -> bool:
    """Write ``text`` and flush; False when the output is gone (a broken pipe, a closed terminal).

    Once it is gone, the process's stdout (when ``stream`` is it) is pointed at the null device, so
    that its last flush at exit goes nowhere instead of failing.
    """
    try:
        stream.write(text)
        stream.flush()
    except OSError as error:
        if not isinstance(error, BrokenPipeError) and error.errno not in _GONE:
            raise
        silence_stdout(stream)
        return False
    return True
