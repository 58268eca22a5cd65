"""Committing a run's state tree to its directory, and restoring it when training resumes.

One commit is one file, ``checkpoints/state-NNNNNN.pt``, holding plain data and tensors:
``{"format", "serial", "reason", "classes", "nodes"}`` with one entry per node of the tree (see
:mod:`experiment.run.run_state`). At an epoch end the best weights and the derived files are
written first, then the state; older files are removed only after the new state is committed, and
the previous state is kept as a fallback. The committer owns the cadence of step checkpoints
(``checkpoint_every``); the loop only signals its moments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiment.errors import StateMismatchError
from experiment.run.recording import EpochRecorder
from experiment.run.run_state import format_1_keys
from experiment.state.monitor import BestTracker
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.store.checkpoints import TREE_FORMAT, load_newest_state
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors


class Committer:
    """Writes the state tree of a run at the commit points of its loop, and restores it.

    Args:
        directory: the run directory.
        tree: the run's state tree (:func:`~experiment.run.run_state.run_state_tree`).
        progress: the tree's progress node (the history gives each epoch's logs).
        best: the tree's best-epoch tracker.
        network: whose weights are saved when an epoch is the best so far.
        recorder: writes log.tsv and TensorBoard at each epoch end.
        checkpoint_every: also commit every this many training steps (None: at epoch ends only).
        callbacks: the run's callbacks, to match the callback states of a format-1 checkpoint.
    """

    def __init__(
        self,
        directory: RunDirectory,
        tree: StateTree,
        *,
        progress: Progress,
        best: BestTracker,
        network: Any,
        recorder: EpochRecorder,
        checkpoint_every: int | None = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.directory = directory
        self.tree = tree
        self.progress = progress
        self.best = best
        self.network = network
        self.recorder = recorder
        self.checkpoint_every = checkpoint_every
        self.callbacks = list(callbacks)
        self.serial = 0
        self._previous_best: int | None = None

    # ------------------------------------------------------------------------------- committing
    def due(self, global_step: int) -> bool:
        return self.checkpoint_every is not None and global_step % self.checkpoint_every == 0

    def commit(self, reason: str) -> None:
        """Write the derived files of a finished epoch, then the state, then prune older files."""
        if reason == "epoch":
            logs = self.progress.history[-1]
            if self.best.update(logs):
                # Same folder as the state file below, whose folder fsync makes both renames durable.
                best_path = self.directory.best_path(logs["epoch"])
                save_tensors(best_path, self.network.state_dict(), sync_dir=False)
            self.recorder.record(logs)
        self.tree.before_commit()
        self.serial += 1
        state = {"format": TREE_FORMAT, "serial": self.serial, "reason": reason, **self.tree.state_dict()}
        save_tensors(self.directory.state_path(self.serial), state)
        self._prune()

    def _prune(self) -> None:
        for path in self.directory.state_paths()[2:]:
            path.unlink(missing_ok=True)
        keep = {self.best.epoch, self._previous_best}
        for epoch, path in self.directory.best_paths().items():
            if epoch not in keep:
                path.unlink(missing_ok=True)
        self._previous_best = self.best.epoch

    # -------------------------------------------------------------------------------- restoring
    def restore(self, epochs: int) -> bool:
        """Load, check and apply the newest good checkpoint; return False when there is none.

        Args:
            epochs: the run's target; when the checkpoint has reached it (or training was stopped)
                no more batches are drawn, so the loaders' random generators need not match.

        Raises:
            StateMismatchError: the saved state does not fit the objects given now; nothing is
                applied and no file is changed.
        """
        found = load_newest_state(self.directory)
        if found is None:
            return False
        saved, path = found
        if saved.get("upgraded_from") == 1:
            saved = self._with_current_callback_keys(saved)
        progress = saved["nodes"]["progress"]
        over = progress["stop_training"] or progress["epochs_completed"] >= epochs
        self.check(saved, path, unchecked=("rng",) if over else ())
        self.tree.warn_about_optional(saved, path.name)
        self.tree.apply(saved)
        self.serial = saved["serial"]
        self._previous_best = self.best.epoch
        done = self.progress.epochs_completed
        for epoch, best_path in self.directory.best_paths().items():
            if epoch > done:
                best_path.unlink(missing_ok=True)
        return True

    def check(self, saved: dict[str, Any], path: Path, *, unchecked: Sequence[str] = ()) -> None:
        """Raise StateMismatchError listing every way ``saved`` does not fit; change nothing."""
        problems = self.tree.problems(saved, unchecked=unchecked)
        if problems:
            raise StateMismatchError(
                f"The checkpoint {path} does not fit the objects given now:\n  - "
                + "\n  - ".join(problems)
                + "\nBuild the network, optimizer, schedulers and callbacks as in the run that wrote "
                "it, or use another directory. Nothing was loaded and the directory was not changed."
            )

    def _with_current_callback_keys(self, saved: dict[str, Any]) -> dict[str, Any]:
        renamed = format_1_keys(self.callbacks)
        nodes = {renamed.get(name, name): state for name, state in saved["nodes"].items()}
        return {**saved, "nodes": nodes}
