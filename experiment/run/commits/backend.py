"""The commit backend protocol: how a commit's bytes reach the disk, durably, and how superseded
checkpoints leave it.

The commit policy (:mod:`~experiment.run.commits.policy`) decides when to commit and what a commit
holds; the restorer (:mod:`~experiment.run.commits.restorer`) chooses, checks and loads; neither
knows how a checkpoint is laid out on disk. A backend does, and nothing else does:

- :class:`~experiment.run.commits.file_backend.FileBackend`: one file per commit, serialized in the
  training thread (``torch.save`` streamed into a temporary file) and made durable by a background
  thread (fsync, rename, fsync the folder), which then writes a new best epoch's weights.
- :class:`~experiment.run.commits.background_backend.BackgroundFileBackend`: the same file, written
  by a background thread from a copy in reused CPU buffers (``async_checkpoint=True``).

A new backend is a new module with a class of this protocol, chosen where the run's backend is
chosen (:func:`~experiment.run.commits.one_file_backend` today). It receives each commit's state
tree (its nodes as the run's strategy produced them, full or sharded), serial and reason; it owns
its layout on disk (a sharded backend: a folder per commit, written under a temporary name, fsynced
and renamed into place), reports each commit durable through ``on_durable``, and prunes its own
checkpoints. The read side lists committed units with :meth:`RunDirectory.checkpoints
<experiment.store.directory.RunDirectory.checkpoints>` and reads them through
:class:`~experiment.store.checkpoint_unit.Checkpoint`.

Every method is called on every rank of a distributed run, at the same point of the run: the
backend decides which ranks write, and makes every rank raise the same error when a write fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from experiment.run.commits.commit import Commit
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory
from experiment.training.distributed import World

#: Called by a backend on the writing rank (rank 0) with a commit's serial once the commit is durable,
#: before the backend's next write: in the thread that made it durable, or at the next write or wait.
OnDurable = Callable[[int], None]


class CommitBackend(Protocol):
    """Makes commits durable and removes the checkpoints they supersede."""

    def write(self, commit: Commit, before: Callable[[], None]) -> None:
        """Make ``commit`` durable, or start to (a background write).

        The previous commit's write (its best weights included) is finished first (its error
        raised here); then ``before`` runs on the writing rank, in the training thread or the
        writer's (the policy writes the derived files there), before this commit becomes durable.
        Checkpoints that this one supersedes are removed only once it is durable.

        Raises:
            NonFiniteStateError: the state holds NaN or infinity (see :class:`Commit`); nothing
                of it is written.
            StorageError: this write (its serialization, synchronous) or the previous one (its
                background part) failed.
        """
        ...

    def wait(self, *, quiet: bool = False) -> None:
        """Block until every write handed over is durable or failed; raise its error on every
        rank unless ``quiet`` (on the way out after another error, each rank waits on its own)."""
        ...

    def resumed_from(self, checkpoint: Checkpoint, *, best_epoch: int | None, epochs_completed: int) -> None:
        """The run was restored from ``checkpoint``, whose best epoch is ``best_epoch``: converge on
        what a commit leaves (remove what a process killed before its pruning left behind, write
        the best weights of a commit killed before they were written); raise a failure on every
        rank."""
        ...


#: How a run builds its backend: ``factory(directory, world, on_durable)``.
BackendFactory = Callable[[RunDirectory, World, OnDurable], CommitBackend]
