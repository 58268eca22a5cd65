"""One folder of shards per commit, written by a background thread on every rank: the asynchronous
commit backend of sharded state (``strategy="fsdp"``, ``async_checkpoint=True``).

On the training thread a commit waits for this rank's previous write (whose outcome the writers
agreed on: any rank's failure is raised on all), gathers and writes the best weights of a new best
epoch as :class:`DirectoryBackend` does, and copies this rank's shards into CPU buffers reused
from one commit to the next: no other collective, no file and no check happens there, so that the
copy is nearly all training waits for. Each rank's writer thread then works on a process group of
its own (gloo: DCP's collectives on the default group while FSDP2 trains on it abort gloo): rank 0
writes the derived files and makes the temporary folder; every rank checks its copies for NaN and
infinity, the ranks agree, gather their per-rank state to rank 0, and write the shards with DCP;
rank 0 writes the tree file, renames the folder, fsyncs ``checkpoints/``, calls ``on_durable``
and prunes; the ranks agree on the outcome (rank 0's pruning included). One write is in flight at a time; its error comes back at the next commit or
wait, on every rank. A kill during it leaves only a temporary folder, removed at the next start.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiment.run.commits.commit import Commit
from experiment.run.commits.directory_backend import DirectoryBackend, fresh_folder, split_shards
from experiment.state.snapshot import Snapshot
from experiment.store import shards
from experiment.store.directory import RunDirectory
from experiment.training.distributed import SINGLE, World
from experiment.training.sharded_tensors import commit_group, commit_mesh, from_layouts, local_layouts


@dataclasses.dataclass
class _Write:
    """One commit handed to the writer thread: a copy of its tree file (per-rank nodes not yet
    gathered), the copies of this rank's shards and their layouts."""

    commit: Commit
    tree: dict[str, Any]
    copies: dict[str, Any]
    layouts: dict[str, Any]
    keep: set[int | None]
    before: Callable[[], None]


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
        #: The writer threads' view of the ranks: the same ranks on a gloo group of their own.
        self._writers: World | None = None
        #: The CPU mesh over that group of the DTensors that wrap the copies.
        self._mesh: Any = None

    def write(self, commit: Commit, before: Callable[[], None]) -> None:
        """Finish the previous write (its failure raised on every rank), then copy this commit's
        shards and hand them to the writer thread."""
        self.wait()
        if self._writers is None:  # every rank reaches its first commit together
            group = commit_group()
            self._writers = World(self.world.size, self.world.rank, self.world.local_rank, group)
            self._mesh = commit_mesh(group)
        keep = self.retention.keep(commit)
        self._write_best_weights(commit)
        tree, tensors = split_shards(commit.state)
        local, layouts = local_layouts(tensors)
        # The tree is copied too: a node's state_dict() may return live lists or tensors (metric
        # sums) that the next steps change while the writer thread still reads them.
        copies, tree = self.snapshot.take((local, tree))
        work = _Write(commit, tree, copies, layouts, keep, before)
        self.writer.submit(lambda: self._write(work))

    def wait(self, *, quiet: bool = False) -> None:
        """Block until the write in flight is durable or failed; raise its failure (the same on
        every rank: the writers agreed on it) unless ``quiet``."""
        self.writer.wait(quiet=quiet)

    def _write(self, work: _Write) -> None:
        """In the writer thread of every rank; each step that may fail on one rank ends in an
        agreement, so that every rank's writer raises the same error (rank 0 then removes the
        temporary folder)."""
        assert self._writers is not None
        writers, serial = self._writers, work.commit.serial
        temporary = self.directory.temporary_state_dir(serial)
        self.snapshot.wait_copied()
        failure = None
        try:
            if writers.is_main:
                work.before()
                fresh_folder(temporary)
            _refuse_non_finite_copies(work, self.retention.newest_name)
        except Exception as error:  # agreed on below
            failure = error
        self._agree(failure, temporary)
        tree = dataclasses.replace(work.commit, state=work.tree).gathered(writers).state
        try:
            shards.save(from_layouts(work.copies, work.layouts, self._mesh), temporary, group=writers.control)
            if writers.is_main:
                self._finish(serial, tree, temporary)
                if self.on_durable is not None:
                    self.on_durable(serial)
                self.retention.prune(work.keep)
        except Exception as error:  # agreed on below: rank 0's pruning too, as the others wait
            failure = error
        self._agree(failure, temporary)

    def _agree(self, failure: BaseException | None, temporary: Path) -> None:
        """Raise on every rank's writer if any failed; rank 0 removes the temporary folder then."""
        assert self._writers is not None
        try:
            self._writers.raise_any(failure)
        except BaseException:
            if self._writers.is_main:
                shutil.rmtree(temporary, ignore_errors=True)
            raise


def _refuse_non_finite_copies(work: _Write, last: Callable[[], str | None]) -> None:
    """Raise NonFiniteStateError if this rank's copies of the model or optimizer hold NaN or
    infinity (unless the commit is not to be checked)."""
    nodes = {
        name: shards.fill(node["sharded"]["skeleton"], work.copies)
        for name, node in work.tree["nodes"].items()
        if shards.is_sharded_node(node)
    }
    dataclasses.replace(work.commit, state={**work.commit.state, "nodes": nodes}).refuse_non_finite(last)
