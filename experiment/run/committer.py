"""The state tree of a run: what one commit writes, how resume loads, checks and applies it.

One commit is one file, ``checkpoints/state-NNNNNN.pt``, holding plain data and tensors: the
network, the optimizer, the LR schedulers, every stateful callback, the best-epoch tracker and the
loop (position, history, running sums, random state). At an epoch end the best weights and the
derived files are written first, then the state; older files are removed only after the new state
is committed, and the previous state is kept as a fallback.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiment.errors import StateMismatchError
from experiment.run.recording import EpochRecorder
from experiment.state.compatibility import mismatches
from experiment.state.monitor import BestTracker
from experiment.state.stateful import Stateful
from experiment.store.checkpoints import TREE_FORMAT, load_newest_state
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors
from experiment.training.loop import TrainingLoop


def stateful_callbacks(callbacks: Sequence[Any]) -> dict[str, Any]:
    """Stateful callbacks keyed by class name, numbered from the second of a class (``Name#2``)."""
    keyed: dict[str, Any] = {}
    for callback in callbacks:
        if not isinstance(callback, Stateful):
            continue
        name = type(callback).__name__
        key, count = name, 1
        while key in keyed:
            count += 1
            key = f"{name}#{count}"
        keyed[key] = callback
    return keyed


class Checkpointer:
    """Commits and restores the whole state of a training run in one run directory."""

    def __init__(
        self,
        directory: RunDirectory,
        loop: TrainingLoop,
        *,
        schedulers: Sequence[Any],
        callbacks: Sequence[Any],
        tracker: BestTracker,
        recorder: EpochRecorder,
    ) -> None:
        self.directory = directory
        self.loop = loop
        self.schedulers = list(schedulers)
        self.callbacks = stateful_callbacks(callbacks)
        self.tracker = tracker
        self.recorder = recorder
        self.serial = 0
        self._previous_best: int | None = None

    # ------------------------------------------------------------------------------- committing
    def commit(self, reason: str, rng: dict[str, Any] | None = None) -> None:
        """Write the derived files of a finished epoch, then the state, then prune older files."""
        if reason == "epoch":
            logs = self.loop.history[-1]
            if self.tracker.update(logs):
                # Same folder as the state file below, whose folder fsync makes both renames durable.
                best_path = self.directory.best_path(logs["epoch"])
                save_tensors(best_path, self.loop.network.state_dict(), sync_dir=False)
            self.recorder.record(logs)
        self.serial += 1
        save_tensors(self.directory.state_path(self.serial), self.tree(reason, rng))
        self._prune()

    def tree(self, reason: str, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        loop = self.loop
        return {
            "format": TREE_FORMAT,
            "serial": self.serial,
            "reason": reason,
            "classes": self._classes(),
            "model": loop.network.state_dict(),
            "optimizer": loop.optimizer.state_dict(),
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "callbacks": {key: cb.state_dict() for key, cb in self.callbacks.items()},
            "best": self.tracker.state_dict(),
            "loop": loop.state_dict(rng),
        }

    def _classes(self) -> dict[str, Any]:
        return {
            "network": type(self.loop.network).__name__,
            "optimizer": type(self.loop.optimizer).__name__,
            "schedulers": [type(s).__name__ for s in self.schedulers],
        }

    def _prune(self) -> None:
        for path in self.directory.state_paths()[2:]:
            path.unlink(missing_ok=True)
        keep = {self.tracker.epoch, self._previous_best}
        for epoch, path in self.directory.best_paths().items():
            if epoch not in keep:
                path.unlink(missing_ok=True)
        self._previous_best = self.tracker.epoch

    # -------------------------------------------------------------------------------- restoring
    def restore(self) -> bool:
        """Load, check and apply the newest good checkpoint; return False when there is none.

        Raises:
            StateMismatchError: the saved state does not fit the objects given now; nothing is
                applied and no file is changed.
        """
        found = load_newest_state(self.directory)
        if found is None:
            return False
        tree, path = found
        self.check(tree, path)
        self.apply(tree)
        future = [p for epoch, p in self.directory.best_paths().items() if epoch > self.loop.epochs_completed]
        for best_path in future:
            best_path.unlink(missing_ok=True)
        return True

    def check(self, tree: dict[str, Any], path: Path) -> None:
        """Raise StateMismatchError listing every way ``tree`` does not fit; change nothing."""
        problems = mismatches(tree, self.loop.network, self.loop.optimizer, self.schedulers)
        if problems:
            raise StateMismatchError(
                f"The checkpoint {path} does not fit the objects given now:\n  - "
                + "\n  - ".join(problems)
                + "\nBuild the network, optimizer and schedulers as in the run that wrote it, or use "
                "another directory. Nothing was loaded and the directory was not changed."
            )
        missing = sorted(set(self.callbacks) - set(tree["callbacks"]))
        unused = sorted(set(tree["callbacks"]) - set(self.callbacks))
        if missing or unused:
            warnings.warn(
                f"Callback state in {path.name}: new callbacks start fresh {missing}; saved states "
                f"without a callback are ignored {unused}.",
                stacklevel=4,
            )

    def apply(self, tree: dict[str, Any]) -> None:
        loop = self.loop
        loop.network.load_state_dict(tree["model"])
        loop.optimizer.load_state_dict(tree["optimizer"])
        for scheduler, state in zip(self.schedulers, tree["schedulers"]):
            scheduler.load_state_dict(state)
        for key, callback in self.callbacks.items():
            if key in tree["callbacks"]:
                callback.load_state_dict(tree["callbacks"][key])
        self.tracker.load_state_dict(tree["best"])
        loop.load_state_dict(tree["loop"])
        self.serial = tree["serial"]
        self._previous_best = self.tracker.epoch
