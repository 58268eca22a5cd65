"""One writer thread for asynchronous commits: one write in flight, its error raised on the
training thread at the next wait.

Example:
    >>> writer = BackgroundWriter()
    >>> writer.submit(lambda: save_tensors(path, state))   # waits for the previous write first
    >>> writer.wait()                                      # raises the write's StorageError, if any
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class BackgroundWriter:
    """Runs one write at a time in a thread; its failure comes back at :meth:`wait`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        """Whether a write is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, write: Callable[[], None]) -> None:
        """Wait for the previous write (raising its error), then start ``write`` in a new thread.

        The thread is not a daemon: an interpreter that exits waits for the write to end.
        """
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(write,), name="experiment-commit-writer")
        self._thread.start()

    def wait(self, *, quiet: bool = False) -> None:
        """Block until the write in flight is durable or failed; raise its error unless ``quiet``
        (then it is logged: an error already propagating must not be hidden by it)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is None:
            return
        if quiet:
            logger.error("The background checkpoint write failed too: %s", error)
            return
        raise error

    def _run(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as error:  # handed to the training thread at the next wait
            self._error = error
