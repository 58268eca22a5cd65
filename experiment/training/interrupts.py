"""SIGINT, SIGTERM and SIGHUP during training: ask the loop to commit and stop; a second signal
stops at once.

SIGHUP is what a process gets when its terminal or ssh session closes: it is handled like SIGTERM,
so that closing the window of a run commits its position (and the run exits with 128 + 1 = 129).

Under a scheduler (SLURM) more signals may ask for the same stop (the time-limit warning), and a
repeated signal must not cut the commit short: SLURM sends SIGTERM twice to ``srun`` tasks, and
again after the job is requeued; its SIGKILL, after KillWait, is the hard stop there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: The signals that stop training cleanly (SIGHUP where the platform has it).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class TrainingInterrupted(Exception):
    """Raised out of the loop after a signal asked it to stop and its checkpoint is committed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"training interrupted by signal {signum}")
        self.signum = signum


class InterruptFlag:
    """Set from a signal handler; read by the loop between batches."""

    def __init__(self) -> None:
        self.signum: int | None = None
        #: The handlers a block with ``once`` replaced and left ignored (see
        #: :func:`interrupt_on_signals`), to put back by :meth:`restore_handlers`.
        self.ignored: dict[int, Any] = {}

    def restore_handlers(self) -> None:
        """Put back the handlers that a stopped block left ignored: the process did not exit after
        all (the stop's commit failed), and the user's script must stay interruptible."""
        ignored, self.ignored = self.ignored, {}
        _restore(ignored)


class SignalHandler:
    """The handler :func:`interrupt_on_signals` installs for each of :data:`SIGNALS`.

    Its ``flag`` attribute is part of its interface: the progress display reads
    ``signal.getsignal(signum).flag.signum`` to end its bar line before the loop commits and the
    interrupt is reported, without a reference to the loop.
    """

    def __init__(self, flag: InterruptFlag, previous: dict[int, Any], *, once: bool = False) -> None:
        self.flag = flag
        self.previous = previous
        self.once = once

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.flag.signum is not None:
            if self.once:
                return  # the first signal's commit goes on
            _restore(self.previous)
            raise KeyboardInterrupt
        self.flag.signum = signum


@contextlib.contextmanager
def interrupt_on_signals(
    flag: InterruptFlag, *, extra: tuple[int, ...] = (), once: bool = False
) -> Iterator[InterruptFlag]:
    """Route SIGINT, SIGTERM, SIGHUP and ``extra`` signals to ``flag`` for the duration of the block
    (main thread only).

    The first signal only sets ``flag.signum``; the loop commits a checkpoint at the end of the
    current batch and stops. A second signal restores the previous handlers and raises
    ``KeyboardInterrupt`` at once; the last committed checkpoint is unaffected. With ``once``, later
    signals are ignored instead, and stay ignored after a block that a signal stopped, so that the
    process finishes its commit and exits in its own time (a scheduler kills it if it must);
    ``flag.restore_handlers()`` puts them back where the process goes on instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous: dict[int, Any] = {}
    handler = SignalHandler(flag, previous, once=once)
    for signum in dict.fromkeys((*SIGNALS, *extra)):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        if once and flag.signum is not None:
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
            flag.ignored = previous
        else:
            _restore(previous)


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
