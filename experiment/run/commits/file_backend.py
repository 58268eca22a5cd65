"""One file per commit, serialized in the training thread: the synchronous commit backend.

A commit is the file ``checkpoints/state-NNNNNN.pt`` (NNNNNN its serial), written atomically and
durably. The training thread streams ``torch.save`` of the state into a temporary file of the same
folder (no serialized copy is held in memory, and the state is not copied); the background writer
thread then fsyncs it, renames it and fsyncs the folder: the rename is the commit, and training does
not wait for the disk. Rank 0 alone writes; every rank learns the outcome. The commit is durable
before the next one is written and before :meth:`FileBackend.wait` returns; a failure of the
fsyncs or the rename is raised there. A process killed before the rename leaves the previous
commit, which is kept until this one is durable.

When the commit ends an epoch that is a new best, ``best-epochNNNN.pt`` is written after the state,
by the same thread, from a copy of the network's weights or, for a big network, from the committed
file (:mod:`~experiment.run.commits.best_weights`). A process killed before it was written leaves a
state that holds those weights, and resuming writes the file from it.

Two states are kept, the newest and its fallback, each with the best weights it refers to. Older
files are removed by the background thread once the new state is durable: the training thread never
deletes a checkpoint file. :class:`~experiment.run.commits.background_backend.BackgroundFileBackend`
copies the state instead of serializing it and writes everything from that thread.
"""

from __future__ import annotations

from collections.abc import Callable

from experiment.run.commits.background_writer import BackgroundWriter
from experiment.run.commits.best_weights import PendingBestWeights, restore_best_weights
from experiment.run.commits.commit import Commit
from experiment.run.commits.retention import Retention
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory
from experiment.store.files import StagedFile, save_tensors, stage_tensors
from experiment.training.distributed import SINGLE, World


class FileBackend:
    """Serializes each commit into one file in the training thread and makes it durable from the
    writer thread (a :class:`~experiment.run.commits.backend.CommitBackend`).

    Args:
        directory: the run directory.
        world: the ranks of the run (rank 0 writes).
        on_durable: called with a commit's serial once it is durable (rank 0, writer thread).
    """

    def __init__(
        self,
        directory: RunDirectory,
        world: World = SINGLE,
        on_durable: Callable[[int], None] | None = None,
    ) -> None:
        self.directory = directory
        self.world = world
        self.on_durable = on_durable
        #: The thread that writes best weights and removes superseded files (and writes the
        #: commits, in the background backend).
        self.writer = BackgroundWriter()
        self.pending_best = PendingBestWeights()
        self.retention = Retention(directory)

    def write(self, commit: Commit, before: Callable[[], None]) -> None:
        """Wait for the previous background work, serialize the state into a temporary file, then
        let the writer thread run ``before``, make the state durable, write the best weights and
        remove what they supersede (see :class:`CommitBackend`). Every rank's per-rank state is
        gathered to rank 0 first."""
        gathered = commit.gathered(self.world)
        self.world.on_main(lambda: self._write_here(gathered, before))

    def wait(self, *, quiet: bool = False) -> None:
        """Wait for the background work in flight; raise its error unless ``quiet``."""
        if quiet:
            self.writer.wait(quiet=True)
            return
        self.world.on_main(self.writer.wait)

    def resumed_from(self, checkpoint: Checkpoint, *, best_epoch: int | None, epochs_completed: int) -> None:
        """Keep the restored commit, the one before it and the best weights they refer to; remove
        older states and best weights past the restored epoch, and write the restored commit's best
        weights if they are missing and it holds them (what a process killed before its pruning, or
        before its best weights, left); raise a failure on every rank."""
        self.retention.resumed_from(best_epoch)
        self.world.on_main(lambda: self._converge(checkpoint, best_epoch, epochs_completed))

    # ------------------------------------------------------------------- on the writing rank
    def _converge(self, checkpoint: Checkpoint, best_epoch: int | None, epochs_completed: int) -> None:
        self.retention.converge(checkpoint, epochs_completed)
        restore_best_weights(self.directory, checkpoint, best_epoch)

    def _write_here(self, commit: Commit, before: Callable[[], None]) -> None:
        self.writer.wait()
        keep = self.retention.keep(commit)
        commit.refuse_non_finite(self.retention.newest_name)
        checkpoint = Checkpoint(commit.serial, self.directory.state_path(commit.serial))
        staged = stage_tensors(checkpoint.path, commit.state)
        try:
            write_best = None
            if commit.best_weights is not None:
                model = commit.state["nodes"]["model"]
                write_best = self.pending_best.take(self.directory, checkpoint, commit.best_weights, model)
        except BaseException:
            staged.discard()
            raise
        self.writer.submit(lambda: self._after_commit(before, staged, commit.serial, write_best, keep))

    def _after_commit(
        self,
        before: Callable[[], None],
        staged: StagedFile,
        serial: int,
        write_best: Callable[[], None] | None,
        keep: set[int | None],
    ) -> None:
        """In the writer thread: the derived files (``before``), then the state made durable (the
        commit), then the committed epoch's best weights and the removal of what they supersede."""
        try:
            before()
        except BaseException:
            staged.discard()
            raise
        staged.publish()
        self._report_durable(serial)
        if write_best is not None:
            write_best()
        self.retention.prune(keep)

    def _write_files(self, commit: Commit) -> None:
        """All of a commit's files in one go, as the background backend writes them from its copy:
        the best weights, then the state, each atomically and durably."""
        if commit.best_weights is not None:
            # Same folder as the state file, whose folder fsync makes both renames durable.
            path = self.directory.best_path(commit.best_weights)
            save_tensors(path, commit.state["nodes"]["model"], sync_dir=False)
        save_tensors(self.directory.state_path(commit.serial), commit.state)

    def _report_durable(self, serial: int) -> None:
        """In the writer thread, once commit ``serial`` is durable (an error of ``on_durable`` is
        the write's error)."""
        if self.on_durable is not None:
            self.on_durable(serial)
