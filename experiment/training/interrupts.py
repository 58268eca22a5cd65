"""SIGINT and SIGTERM during training: ask the loop to commit and stop; a second signal stops at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised out of the loop after a signal asked it to stop and its checkpoint is committed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"training interrupted by signal {signum}")
        self.signum = signum


class InterruptFlag:
    """Set from a signal handler; read by the loop between batches."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def interrupt_on_signals(flag: InterruptFlag) -> Iterator[InterruptFlag]:
    """Route SIGINT/SIGTERM to ``flag`` for the duration of the block (main thread only).

    The first signal only sets ``flag.signum``; the loop commits a checkpoint at the end of the
    current batch and stops. A second signal restores the previous handlers and raises
    ``KeyboardInterrupt`` at once; the last committed checkpoint is unaffected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        if flag.signum is not None:
            _restore(previous)
            raise KeyboardInterrupt
        flag.signum = signum

    for signum in SIGNALS:
        previous[signum] = signal.signal(signum, handle)
    try:
        yield flag
    finally:
        _restore(previous)


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
