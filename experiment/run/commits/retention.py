"""Which checkpoints a run keeps: the rule every commit backend applies, whatever its layout.

Two commits stay, the newest and its fallback (the one before it), each with the best weights it
refers to; older commits, and best weights that neither refers to, are removed once a newer commit
is durable, by the backend's writer thread (the training thread never deletes a checkpoint). On
resume, what a process killed before its pruning left is removed, and so are best weights of
epochs past the restored one. Checkpoints are listed and removed as units
(:meth:`RunDirectory.checkpoints <experiment.store.directory.RunDirectory.checkpoints>`), a file
or a folder alike.
"""

from __future__ import annotations

from experiment.run.commits.commit import Commit
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory


class Retention:
    """The checkpoints of ``directory`` to keep and to remove, as its commits go by."""

    def __init__(self, directory: RunDirectory) -> None:
        self.directory = directory
        #: The best epoch the previous commit refers to (its best weights stay with it).
        self._previous_best: int | None = None

    def keep(self, commit: Commit) -> set[int | None]:
        """The best epochs whose weights stay once ``commit`` is durable: its own and its
        fallback's (the commit before it)."""
        keep = {commit.best_epoch, self._previous_best}
        self._previous_best = commit.best_epoch
        return keep

    def prune(self, keep: set[int | None]) -> None:
        """Remove commits older than the two newest, and best weights of epochs not in ``keep``."""
        for checkpoint in self.directory.checkpoints()[2:]:
            checkpoint.remove()
        for epoch, path in self.directory.best_paths().items():
            if epoch not in keep:
                path.unlink(missing_ok=True)

    def resumed_from(self, best_epoch: int | None) -> None:
        """Go on from a restored commit whose best epoch is ``best_epoch`` (every rank)."""
        self._previous_best = best_epoch

    def converge(self, checkpoint: Checkpoint, epochs_completed: int) -> None:
        """On the writing rank, after a resume from ``checkpoint``: keep it and the one before it;
        remove older commits and best weights past the restored epoch (what a process killed
        before its pruning left)."""
        checkpoints = self.directory.checkpoints()
        if checkpoint in checkpoints:
            for older in checkpoints[checkpoints.index(checkpoint) + 2 :]:
                older.remove()
        for epoch, path in self.directory.best_paths().items():
            if epoch > epochs_completed:
                path.unlink(missing_ok=True)

    def newest_name(self) -> str | None:
        """The name of the newest durable commit (None: none yet)."""
        newest = self.directory.checkpoints()[:1]
        return newest[0].name if newest else None
