"""One folder of shards per commit, written by a background thread on every rank: the asynchronous
commit backend of sharded state (``strategy="fsdp"``, ``async_checkpoint=True``).

On the training thread a commit waits for the previous write on every rank (the ranks agree on its
outcome in one control all-reduce: any rank's failure is raised on all), writes the derived files
and the best weights of a new best epoch as :class:`DirectoryBackend` does, makes the temporary
folder, and copies this rank's shards into CPU buffers reused from one commit to the next: that copy
is all training waits for. Each rank's writer thread then wraps the copies as DTensors again and
writes them with DCP on a process group of its own (gloo): DCP's collectives on the default group
while FSDP2 trains on it abort gloo. Once DCP's save returns on rank 0 (it writes ``.metadata``
after every rank's shards), rank 0's thread writes the tree file, renames the folder, fsyncs
``checkpoints/`` and prunes. One write is in flight at a time; a kill during it leaves only a
temporary folder, removed at the next start.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiment.errors import StorageError
from experiment.run.commits.commit import Commit
from experiment.run.commits.directory_backend import DirectoryBackend
from experiment.state.snapshot import Snapshot
from experiment.store import shards
from experiment.store.directory import RunDirectory
from experiment.training.distributed import SINGLE, World
from experiment.training.sharded_tensors import commit_group, from_layouts, local_layouts


@dataclasses.dataclass
class _Write:
    """One commit handed to the writer thread."""

    serial: int
    tree: dict[str, Any]
    local: dict[str, Any]
    layouts: dict[str, Any]
    temporary: Path
    keep: set[int | None]


class AsyncDirectoryBackend(DirectoryBackend):
    """Writes each commit as a folder of shards from every rank's writer thread (a
    :class:`~experiment.run.commits.backend.CommitBackend`); arguments as :class:`DirectoryBackend`."""

    def __init__(
        self,
        directory: RunDirectory,
        world: World = SINGLE,
        on_durable: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(directory, world, on_durable)
        self.snapshot = Snapshot()
        self._group: Any = None
        #: The serial of a commit found durable and not yet reported to ``on_durable`` (rank 0).
        self._durable: int | None = None

    def write(self, commit: Commit, before: Callable[[], None]) -> None:
        """Finish the previous write (its failure raised on every rank), then copy this commit's
        shards and hand them to the writer thread."""
        self._wait_all()
        if self._group is None:
            self._group = commit_group()  # every rank reaches its first commit together
        keep, temporary, tree, tensors = self._prepare(commit, before)
        local, layouts = local_layouts(tensors)
        work = _Write(commit.serial, tree, self.snapshot.take(local), layouts, temporary, keep)
        self.writer.submit(lambda: self._write(work))

    def wait(self, *, quiet: bool = False) -> None:
        """Block until the write in flight is durable or failed; raise a failure of any rank on every
        rank unless ``quiet`` (on the way out after another error, each rank waits on its own)."""
        if quiet:
            self.writer.wait(quiet=True)
            self._report_durable()
            return
        self._wait_all()

    def _start(self, before: Callable[[], None]) -> None:
        before()  # the previous write was waited for by every rank already

    def _wait_all(self) -> None:
        failure: BaseException | None = None
        try:
            self.writer.wait()
        except Exception as error:  # agreed on below, then raised on every rank
            failure = error
        if not self.world.agree_on(failed=int(failure is not None))["failed"]:
            if self.world.is_main:
                self._report_durable()
            return
        messages = self.world.gather(None if failure is None else str(failure))
        message = self.world.broadcast(next((m for m in messages or [] if m), None))
        if failure is not None:
            raise failure
        raise StorageError(f"Another rank failed to write its shards: {message}")

    def _write(self, work: _Write) -> None:
        """In the writer thread of every rank: the shards, then (rank 0) the tree file and rename."""
        self.snapshot.wait_copied()
        try:
            shards.save(from_layouts(work.local, work.layouts), work.temporary, group=self._group)
        except StorageError:
            if self.world.is_main:
                shutil.rmtree(work.temporary, ignore_errors=True)
            raise
        if self.world.is_main:
            self._finish(work.serial, work.tree, work.temporary)
            self._durable = work.serial  # reported on the training thread, at the next wait
            self.retention.prune(work.keep)

    def _report_durable(self) -> None:
        serial, self._durable = self._durable, None
        if serial is not None and self.on_durable is not None:
            self.on_durable(serial)
