"""Choosing, checking and loading the checkpoint a run resumes from.

Rank 0 chooses the newest checkpoint that loads (falling back past damaged ones with a warning, see
:func:`~experiment.store.checkpoints.load_newest_state`) and checks it against this run before
anything is applied: the number of processes that wrote it, every node of the state tree
(:meth:`StateTree.problems <experiment.state.tree.StateTree.problems>`), and what the caller adds
(the run's identity and what it was created with). Every rank then loads the checkpoint rank 0
chose and applies its own share of it (its entry of each per-rank node). A checkpoint of an older
format is migrated to today's, its callback states matched to and shaped for the callbacks given now
(:mod:`~experiment.store.migration`), before anything is checked.

Example:
    >>> restorer = Restorer(RunDirectory("runs/a"), tree)
    >>> restored = restorer.restore(epochs=10)      # None: nothing to resume from
    >>> restored.checkpoint.name, restored.serial
    ('state-000042.pt', 42)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from experiment.errors import StateMismatchError
from experiment.run.commits.commit import own_share
from experiment.run.run_state import keyed_callbacks
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.checkpoints import load_checkpoint, load_newest_state
from experiment.store.directory import RunDirectory
from experiment.store.migration import migrate
from experiment.training.distributed import SINGLE, World

#: More problems to find in a saved tree before anything is applied (each a sentence).
Check = Callable[[dict[str, Any]], list[str]]
#: ``reshare(saved, rank)``: a rank's share of a checkpoint written by another number of processes.
Reshare = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Restored:
    """The checkpoint a run resumed from: the unit, its serial and the run it belongs to."""

    checkpoint: Checkpoint
    serial: int
    run_id: str | None


class Restorer:
    """Restores a run's state tree from the newest good checkpoint of its directory.

    Args:
        directory: the run directory.
        tree: the run's state tree, into which the checkpoint is loaded.
        world: the ranks of the run (rank 0 chooses and checks; every rank loads).
        callbacks: the run's callbacks, for which the callback states of an older format are migrated.
        reshare: gives each rank its share of a checkpoint written by another number of processes
            (an elastic run, see :mod:`experiment.run.elastic`); None: such a checkpoint is refused.
    """

    def __init__(
        self,
        directory: RunDirectory,
        tree: StateTree,
        *,
        world: World = SINGLE,
        callbacks: Sequence[Any] = (),
        reshare: Reshare | None = None,
    ) -> None:
        self.directory = directory
        self.reshare = reshare
        self.tree = tree
        self.world = world
        self.callbacks = list(callbacks)
        #: What :meth:`restore` restored (None before, or when there was nothing).
        self.restored: Restored | None = None

    def restore(self, epochs: int, check: Check | None = None) -> Restored | None:
        """Load, check and apply the newest good checkpoint; return None when there is none.

        Args:
            epochs: the run's target; when the checkpoint has reached it (or training was stopped)
                no more batches are drawn, so the loaders' random generators need not match.
            check: more problems to find in the saved tree before anything is applied.

        Raises:
            StateMismatchError: the saved state does not fit the objects given now (or was written
                by another number of processes); nothing is applied and no file is changed.
            CheckpointError: checkpoints exist but none of them loads.
        """
        chosen = self.world.on_main(lambda: self._load_checked(epochs, check))
        checkpoint = self.world.broadcast(None if chosen is None else chosen[1])
        if checkpoint is None:
            return None
        if chosen is not None:
            saved, checkpoint = chosen
        else:  # another rank: the unit rank 0 chose, in this rank's own path to the directory
            checkpoint = dataclasses.replace(
                checkpoint, path=self.directory.checkpoints_dir / checkpoint.name
            )
            saved = self._load(checkpoint)
        self.tree.apply(self._share(saved))
        self.restored = Restored(checkpoint, saved["serial"], saved.get("run_id"))
        return self.restored

    def restored_from(self) -> dict[str, Any]:
        """``checkpoint`` (the name of the checkpoint resumed from, None on a fresh start) and
        ``checkpoint_time`` (when it was committed)."""
        if self.restored is None:
            return {"checkpoint": None, "checkpoint_time": None}
        checkpoint = self.restored.checkpoint
        return {"checkpoint": checkpoint.name, "checkpoint_time": checkpoint.modified()}

    def check(
        self,
        saved: dict[str, Any],
        checkpoint: Checkpoint,
        *,
        unchecked: Sequence[str] = (),
        more: Sequence[str] = (),
    ) -> None:
        """Raise StateMismatchError listing every way ``saved`` does not fit; change nothing."""
        problems = [*self.tree.problems(saved, unchecked=unchecked), *more]
        if problems:
            raise StateMismatchError(
                f"The checkpoint {checkpoint.path} does not fit the objects given now:\n  - "
                + "\n  - ".join(problems)
                + "\nBuild the network, optimizer, schedulers and callbacks as in the run that wrote "
                "it, or use another directory. Nothing was loaded and the directory was not changed."
            )

    def _load_checked(self, epochs: int, check: Check | None) -> tuple[dict[str, Any], Checkpoint] | None:
        """Rank 0's choice: the newest checkpoint that loads, checked against this run."""
        found = load_newest_state(self.directory)
        if found is None:
            return None
        saved, checkpoint = self._migrated(found[0]), found[1]
        if self.reshare is None:
            self._refuse_another_world_size(saved, checkpoint)
        over = Progress.saved_is_over(saved["nodes"]["progress"], epochs)
        own = self._share(saved)
        more = check(saved) if check else ()
        self.check(own, checkpoint, unchecked=("rng",) if over else (), more=more)
        self.tree.warn_about_optional(own, checkpoint.name)
        return saved, checkpoint

    def _share(self, saved: dict[str, Any]) -> dict[str, Any]:
        """This rank's share of ``saved``: its own entries, or, written by another number of
        processes, what ``reshare`` gives it."""
        if self.reshare is not None and saved.get("world_size", 1) != self.world.size:
            return self.reshare(saved, self.world.rank)
        return own_share(saved, self.world.rank)

    def _load(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The checkpoint that rank 0 chose and checked, read by another rank."""
        return self._migrated(load_checkpoint(checkpoint))

    def _refuse_another_world_size(self, saved: dict[str, Any], checkpoint: Checkpoint) -> None:
        written_by = saved.get("world_size", 1)
        if written_by != self.world.size:
            raise StateMismatchError(
                f"The checkpoint {checkpoint.path} was written with world size {written_by} (processes), "
                f"and this run has world size {self.world.size}: each process would see other data and "
                "sum in another order, so it cannot resume exactly. Launch it with as many processes as "
                f"before ({written_by} in all: plain python for 1, torchrun --nproc_per_node=... "
                "otherwise), or train in a new directory (a run created with Experiment(elastic=True) "
                "may change its number of processes). Nothing was loaded and the directory was not "
                "changed."
            )

    def _migrated(self, saved: dict[str, Any]) -> dict[str, Any]:
        """``saved`` in today's format, with the callback states of the callbacks given now."""
        return migrate(saved, callbacks=keyed_callbacks(self.callbacks))
