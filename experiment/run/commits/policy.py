"""When a run commits and what each commit holds: the commit points its loop signals.

The loop asks :meth:`CommitPolicy.due` after each optimizer step and calls
:meth:`CommitPolicy.commit` at the moments it signals: ``"step"`` (a step checkpoint is due: every
``checkpoint_every`` optimizer steps), ``"interrupt"`` (a signal asks the run to stop) and
``"epoch"`` (an epoch has ended). The policy prepares the commit and hands it to the run's backend
(:mod:`~experiment.run.commits.backend`), which alone knows how it reaches the disk. At an epoch
end it first updates the best epoch, and has the epoch's derived files (log.tsv, TensorBoard)
written on the writing rank before the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from experiment.run.commits.backend import CommitBackend
from experiment.run.commits.commit import Commit, plain_nodes
from experiment.run.recording import EpochRecorder
from experiment.state.best_tracker import BestTracker
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.store.migration import TREE_FORMAT
from experiment.training.distributed import SINGLE, World


class CommitPolicy:
    """The commit points of a run (:class:`~experiment.training.plan.CommitPoints`).

    Args:
        tree: the run's state tree (:func:`~experiment.run.run_state.run_state_tree`).
        backend: writes each commit.
        progress: the tree's progress node (its history gives each epoch's logs).
        best: the tree's best-epoch tracker.
        recorder: writes log.tsv and TensorBoard at each epoch end.
        checkpoint_every: also commit every this many optimizer steps (None: not between epochs).
        world: the ranks of the run (every rank takes part in each commit).
        run_id: gives the run's identity (experiment.json's ``run_id``) when a commit is written
            (None: none is recorded).
    """

    def __init__(
        self,
        tree: StateTree,
        backend: CommitBackend,
        *,
        progress: Progress,
        best: BestTracker,
        recorder: EpochRecorder,
        checkpoint_every: int | None = None,
        world: World = SINGLE,
        run_id: Callable[[], str | None] | None = None,
    ) -> None:
        self.tree = tree
        self.backend = backend
        self.progress = progress
        self.best = best
        self.recorder = recorder
        self.checkpoint_every = checkpoint_every
        self.world = world
        self.run_id = run_id
        #: The serial of the last commit (0: none yet; the restored one's after a resume).
        self.serial = 0

    def due(self, global_step: int) -> bool:
        """Whether a step checkpoint is due after ``global_step`` optimizer steps."""
        return self.checkpoint_every is not None and global_step % self.checkpoint_every == 0

    def commit(self, reason: str) -> None:
        """Commit the whole state now (``reason``: "step", "epoch" or "interrupt").

        Raises:
            NonFiniteStateError: the network or the optimizer holds NaN or infinity (unless a
                callback is stopping training); nothing of it is written.
            ConfigurationError: a node's state is not plain data and tensors; nothing is written.
            StorageError: this write (synchronous) or the previous one (asynchronous) failed.
        """
        self.tree.before_commit()
        logs = self.progress.history[-1] if reason == "epoch" else None
        improved = logs is not None and self.best.update(logs)
        self.serial += 1
        commit = Commit(
            self._state(reason),  # after the best is updated, before any file is written
            best_epoch=self.best.epoch,
            best_weights=int(logs["epoch"]) if logs is not None and improved else None,
            non_finite_message=None if self.progress.stop_training else self._non_finite_message(),
        )
        self.backend.write(commit, before=lambda: self._record(logs))

    def resumed_at(self, serial: int) -> None:
        """Go on from the restored commit ``serial``: the next commit is ``serial + 1``."""
        self.serial = serial

    def _state(self, reason: str) -> dict[str, Any]:
        return {
            "format": TREE_FORMAT,
            "serial": self.serial,
            "reason": reason,
            "run_id": None if self.run_id is None else self.run_id(),
            "world_size": self.world.size,
            "classes": self.tree.classes(),
            "nodes": plain_nodes(self.tree),
        }

    def _record(self, logs: dict[str, Any] | None) -> None:
        """On the writing rank, before the state: the epoch's row and scalars."""
        if logs is not None:
            self.recorder.record(logs)

    def _non_finite_message(self) -> str:
        """The message of a non-finite state at this commit, ``{culprit}`` and ``{last}`` to fill."""
        progress = self.progress
        return (
            f"The {{culprit}} holds NaN or infinity at global step {progress.global_step} (epoch "
            f"{progress.epochs_completed + 1}), although the loss was finite. Nothing of it was "
            "committed: the last checkpoint ({last}) is intact. Clip gradients (ClipNorm), lower "
            "the learning rate, check the data and the loss for NaN, or add the TerminateOnNaN "
            "callback to stop cleanly instead."
        )
