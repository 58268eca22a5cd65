"""The commits of one run: its policy, its backend and its restorer, built together.

The run's session holds a :class:`Committer`: it restores the run (:attr:`Committer.restorer`),
gives the loop the commit points of :attr:`Committer.policy`, and waits for the backend's writes
(:meth:`Committer.wait`) before the status changes and before the directory's lock is released.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from experiment.run.commits.backend import BackendFactory
from experiment.run.commits.policy import CommitPolicy
from experiment.run.commits.restorer import Check, Reshare, Restorer
from experiment.run.recording import EpochRecorder
from experiment.state.best_tracker import BestTracker
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.store.directory import RunDirectory
from experiment.training.distributed import SINGLE, World


class Committer:
    """Writes the state tree of a run at the commit points of its loop, and restores it.

    Args:
        directory: the run directory.
        tree: the run's state tree (:func:`~experiment.run.run_state.run_state_tree`).
        progress: the tree's progress node.
        best: the tree's best-epoch tracker.
        recorder: writes log.tsv and TensorBoard at each epoch end.
        backend: builds the backend that writes the commits
            (:func:`~experiment.run.commits.one_file_backend`).
        checkpoint_every: also commit every this many optimizer steps (None: at epoch ends only).
        callbacks: the run's callbacks, to match the callback states of a format-1 checkpoint.
        world: the ranks of the run.
        run_id: gives the run's identity (experiment.json's ``run_id``), written into each commit.
        on_first_commit: called on rank 0 once the run's first checkpoint is durable.
        reshare: shares out a checkpoint written by another number of processes (elastic runs;
            None: refused).
    """

    def __init__(
        self,
        directory: RunDirectory,
        tree: StateTree,
        *,
        progress: Progress,
        best: BestTracker,
        recorder: EpochRecorder,
        backend: BackendFactory,
        checkpoint_every: int | None = None,
        callbacks: Sequence[Any] = (),
        world: World = SINGLE,
        run_id: Callable[[], str | None] | None = None,
        on_first_commit: Callable[[], None] | None = None,
        reshare: Reshare | None = None,
    ) -> None:
        self.progress = progress
        self.best = best
        self._on_first_commit = on_first_commit
        self.backend = backend(directory, world, self._durable)
        self.policy = CommitPolicy(
            tree,
            self.backend,
            progress=progress,
            best=best,
            recorder=recorder,
            checkpoint_every=checkpoint_every,
            world=world,
            run_id=run_id,
        )
        self.restorer = Restorer(directory, tree, world=world, callbacks=callbacks, reshare=reshare)

    def restore(self, epochs: int, check: Check | None = None) -> bool:
        """Restore the newest good checkpoint (see :meth:`Restorer.restore`) and go on from it;
        return False when there is none."""
        restored = self.restorer.restore(epochs, check)
        if restored is None:
            return False
        self.policy.resumed_at(restored.serial)
        self.backend.resumed_from(
            restored.checkpoint, best_epoch=self.best.epoch, epochs_completed=self.progress.epochs_completed
        )
        return True

    @property
    def restored_run_id(self) -> str | None:
        """The run the restored checkpoint belongs to (None: none restored, or not recorded)."""
        return None if self.restorer.restored is None else self.restorer.restored.run_id

    def restored_from(self) -> dict[str, Any]:
        """The name and time of the checkpoint restored (see :meth:`Restorer.restored_from`)."""
        return self.restorer.restored_from()

    def wait(self, *, quiet: bool = False) -> None:
        """Wait for the backend's writes in flight; raise their error (on every rank) unless
        ``quiet``, on the way out after another error."""
        self.backend.wait(quiet=quiet)

    def _durable(self, serial: int) -> None:
        if serial == 1 and self._on_first_commit is not None:
            self._on_first_commit()
            self._on_first_commit = None
