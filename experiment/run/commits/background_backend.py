"""One file per commit, written by a background thread: the asynchronous commit backend
(``async_checkpoint=True``).

On the training thread a commit waits for the previous write (raising its error), writes the
derived files, and copies the state into CPU buffers reused from one commit to the next
(:class:`~experiment.state.snapshot.Snapshot`): that copy is all training waits for. The writer
thread then checks the copy for NaN and infinity, writes the same files as
:class:`~experiment.run.commits.file_backend.FileBackend` (the best weights of a new best epoch
first, then the state), and alone removes what they supersede.
One write is in flight at a time; its error comes back at the next commit or wait.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from experiment.run.commits.commit import Commit
from experiment.run.commits.file_backend import FileBackend
from experiment.state.snapshot import Snapshot
from experiment.store.directory import RunDirectory
from experiment.training.distributed import SINGLE, World


class BackgroundFileBackend(FileBackend):
    """Writes each commit as one file from the writer thread (a
    :class:`~experiment.run.commits.backend.CommitBackend`); arguments as :class:`FileBackend`."""

    def __init__(
        self,
        directory: RunDirectory,
        world: World = SINGLE,
        on_durable: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(directory, world, on_durable)
        self.snapshot = Snapshot()

    def _write_here(self, commit: Commit, before: Callable[[], None]) -> None:
        self.writer.wait()
        before()
        keep = self.retention.keep(commit)
        copied = dataclasses.replace(commit, state=self.snapshot.take(commit.state))
        self.writer.submit(lambda: self._write(copied, keep))

    def _write(self, commit: Commit, keep: set[int | None]) -> None:
        """In the writer thread: check the copy, write its files, then prune older ones."""
        self.snapshot.wait_copied()
        commit.refuse_non_finite(self.retention.newest_name)
        self._write_files(commit)
        self._report_durable(commit.serial)
        self.retention.prune(keep)
