"""Committing a run's state tree to its directory, and restoring it when training resumes.

One commit is one file, ``checkpoints/state-NNNNNN.pt``, holding plain data and tensors:
``{"format", "serial", "reason", "run_id", "world_size", "classes", "nodes"}`` with one entry per
node of the tree (see :mod:`experiment.run.run_state`). At an epoch end the best weights and the
derived files are written first, then the state; older files are removed only after the new state
is committed, and the previous state is kept as a fallback. The committer owns the cadence of step
checkpoints (``checkpoint_every``); the loop only signals its moments.

In a distributed run every rank takes part in each commit: the per-rank nodes (random state,
running metric sums) of every rank are gathered into rank 0's file, rank 0 alone writes, and every
rank learns its outcome (a failed write raises the same error on every rank). On resume rank 0
chooses and checks the checkpoint, and every rank loads that one and takes its own share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiment.errors import NonFiniteStateError, StateMismatchError
from experiment.run.background_writer import BackgroundWriter
from experiment.run.recording import EpochRecorder
from experiment.run.run_state import PER_RANK_NODES, format_1_keys
from experiment.state.best_tracker import BestTracker
from experiment.state.plain import plain_state
from experiment.state.progress import Progress
from experiment.state.snapshot import Snapshot
from experiment.state.torch_nodes import non_finite_in
from experiment.state.tree import StateTree
from experiment.store.checkpoints import TREE_FORMAT, load_newest_state, upgrade_tree
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors
from experiment.store.safe_load import load_tensors
from experiment.training.distributed import SINGLE, World


class Committer:
    """Writes the state tree of a run at the commit points of its loop, and restores it.

    Args:
        directory: the run directory.
        tree: the run's state tree (:func:`~experiment.run.run_state.run_state_tree`).
        progress: the tree's progress node (the history gives each epoch's logs).
        best: the tree's best-epoch tracker.
        recorder: writes log.tsv and TensorBoard at each epoch end.
        checkpoint_every: also commit every this many training steps (None: at epoch ends only).
        callbacks: the run's callbacks, to match the callback states of a format-1 checkpoint.
        async_writes: write commits in a background thread from a reused CPU snapshot.
        world: the ranks of a distributed run (rank 0 writes).
    """

    def __init__(
        self,
        directory: RunDirectory,
        tree: StateTree,
        *,
        progress: Progress,
        best: BestTracker,
        recorder: EpochRecorder,
        checkpoint_every: int | None = None,
        callbacks: Sequence[Any] = (),
        async_writes: bool = False,
        world: World = SINGLE,
    ) -> None:
        self.directory = directory
        self.world = world
        self.tree = tree
        self.progress = progress
        self.best = best
        self.recorder = recorder
        self.checkpoint_every = checkpoint_every
        self.callbacks = list(callbacks)
        self.serial = 0
        #: The run's identity (experiment.json's run_id), written into every commit.
        self.run_id: str | None = None
        self.restored_run_id: str | None = None
        self._restored_path: Path | None = None
        #: Called once the run's first checkpoint is durable.
        self.on_first_commit: Callable[[], None] | None = None
        self._previous_best: int | None = None
        self.async_writes = async_writes
        #: The background thread that writes asynchronous commits and removes superseded files
        #: (of synchronous commits too: the training thread never deletes a checkpoint file).
        self.writer = BackgroundWriter()
        self.snapshot = Snapshot()

    # ------------------------------------------------------------------------------- committing
    def due(self, global_step: int) -> bool:
        return self.checkpoint_every is not None and global_step % self.checkpoint_every == 0

    def commit(self, reason: str) -> None:
        """Write the derived files of a finished epoch, then the state, then prune older files.

        The background thread's previous work is waited for first (its error raised here). A
        synchronous commit then writes the best weights and the state and leaves the removal of
        superseded files to the background thread; an asynchronous one copies the state into
        reused CPU buffers and leaves the writing and the removals to it, while training goes on.

        Raises:
            NonFiniteStateError: the network or the optimizer holds NaN or infinity (unless a
                callback is stopping training); nothing is written.
            ConfigurationError: a node's state is not plain data and tensors; nothing is written.
            StorageError: this write (synchronous) or the previous one (asynchronous) failed.
        """
        self.tree.before_commit()
        logs = self.progress.history[-1] if reason == "epoch" else None
        improved = logs is not None and self.best.update(logs)
        self.serial += 1
        nodes = self._plain_nodes()  # after the best is updated, before any file is written
        self.world.on_main(lambda: self._commit_here(reason, nodes, logs, improved))

    def _commit_here(
        self, reason: str, nodes: dict[str, Any], logs: dict[str, Any] | None, improved: bool
    ) -> None:
        """The part of a commit that writes: rank 0's (the only process, in most runs)."""
        self._wait_here()
        state = {
            "format": TREE_FORMAT,
            "serial": self.serial,
            "reason": reason,
            "run_id": self.run_id,
            "world_size": self.world.size,
            "classes": self.tree.classes(),
            "nodes": nodes,
        }
        if logs is not None:
            self.recorder.record(logs)
        best_path = self.directory.best_path(logs["epoch"]) if improved and logs is not None else None
        keep = {self.best.epoch, self._previous_best}
        self._previous_best = self.best.epoch
        finite_check = None if self.progress.stop_training else self._non_finite_message()
        if not self.async_writes:
            self._refuse_non_finite(state, finite_check)
            self._write_files(state, best_path)
            self._first_commit_durable()
            self.writer.submit(lambda: self._prune(keep))
            return
        copied = self.snapshot.take(state)
        self.writer.submit(lambda: self._write(copied, best_path, keep, finite_check))

    def wait(self, *, quiet: bool = False) -> None:
        """Wait for the background work in flight; raise its error unless ``quiet``.

        Not ``quiet``, every rank of a distributed run calls it together and raises rank 0's error;
        ``quiet`` (on the way out after another error) it waits on its own.
        """
        if quiet:
            self.writer.wait(quiet=True)
            self._first_commit_durable()
            return
        self.world.on_main(self._wait_here)

    def _wait_here(self) -> None:
        self.writer.wait()
        self._first_commit_durable()

    def _write(
        self, state: dict[str, Any], best_path: Path | None, keep: set[int | None], finite_check: str | None
    ) -> None:
        """In the writer thread: check the snapshot, write its files, then prune older ones."""
        self.snapshot.wait_copied()
        self._refuse_non_finite(state, finite_check)
        self._write_files(state, best_path)
        self._prune(keep)

    def _write_files(self, state: dict[str, Any], best_path: Path | None) -> None:
        """Best weights, then the state, each atomically and durably."""
        if best_path is not None:
            # Same folder as the state file, whose folder fsync makes both renames durable.
            save_tensors(best_path, state["nodes"]["model"], sync_dir=False)
        save_tensors(self.directory.state_path(state["serial"]), state)

    def _first_commit_durable(self) -> None:
        if self.serial == 1 and self.on_first_commit is not None and self.directory.state_paths():
            self.on_first_commit()
            self.on_first_commit = None

    def _plain_nodes(self) -> dict[str, Any]:
        """Every node's state as plain data; in a distributed run, on rank 0, each per-rank node
        as ``{"world_size", "ranks": [state of rank 0, of rank 1, ...]}``."""
        saved = self.tree.state_dict()["nodes"]
        nodes = {name: plain_state(state, f"the state of {name!r}") for name, state in saved.items()}
        if self.world.distributed:
            gathered = self.world.gather({name: nodes[name] for name in PER_RANK_NODES})
            for name in PER_RANK_NODES:
                ranks = None if gathered is None else [share[name] for share in gathered]
                nodes[name] = {"world_size": self.world.size, "ranks": ranks}
        return nodes

    def _non_finite_message(self) -> str:
        """The error message of a non-finite state at this commit, with ``{culprit}`` to fill."""
        progress = self.progress
        last = self.directory.state_paths()[:1]
        return (
            f"The {{culprit}} holds NaN or infinity at global step {progress.global_step} (epoch "
            f"{progress.epochs_completed + 1}), although the loss was finite. Nothing of it was "
            f"committed: the last checkpoint ({last[0].name if last else 'none yet'}) is intact. "
            "Clip gradients (ClipNorm), lower the learning rate, check the data and the loss for "
            "NaN, or add the TerminateOnNaN callback to stop cleanly instead."
        )

    @staticmethod
    def _refuse_non_finite(state: dict[str, Any], message: str | None) -> None:
        """Raise NonFiniteStateError when the state to write holds NaN or infinity (``message``
        None: not checked, because a callback is stopping training at this step)."""
        if message is None:
            return
        culprit = non_finite_in(state["nodes"])
        if culprit is not None:
            raise NonFiniteStateError(message.format(culprit=culprit))

    def _prune(self, keep: set[int | None]) -> None:
        """Remove states older than the two newest and best weights of epochs not in ``keep``."""
        for path in self.directory.state_paths()[2:]:
            path.unlink(missing_ok=True)
        for epoch, path in self.directory.best_paths().items():
            if epoch not in keep:
                path.unlink(missing_ok=True)

    # -------------------------------------------------------------------------------- restoring
    def restore(self, epochs: int, check: Callable[[dict[str, Any]], list[str]] | None = None) -> bool:
        """Load, check and apply the newest good checkpoint; return False when there is none.

        Args:
            epochs: the run's target; when the checkpoint has reached it (or training was stopped)
                no more batches are drawn, so the loaders' random generators need not match.
            check: more problems to find in the saved tree before anything is applied (the run's
                identity, what it was created with).

        Raises:
            StateMismatchError: the saved state does not fit the objects given now (or was written
                by another number of processes); nothing is applied and no file is changed.
        """
        chosen = self.world.on_main(lambda: self._load_checked(epochs, check))
        name = self.world.broadcast(None if chosen is None else chosen[1].name)
        if name is None:
            return False
        saved, path = chosen if chosen is not None else self._load_chosen(name)
        self.tree.apply(self._own_share(saved))
        self.serial = saved["serial"]
        self.restored_run_id = saved.get("run_id")
        self._previous_best = self.best.epoch
        if self.world.is_main:
            self._prune_after_restore(path)
        self._restored_path = path
        return True

    def _load_checked(
        self, epochs: int, check: Callable[[dict[str, Any]], list[str]] | None
    ) -> tuple[dict[str, Any], Path] | None:
        """Rank 0's choice: the newest checkpoint that loads, checked against this run."""
        found = load_newest_state(self.directory)
        if found is None:
            return None
        saved, path = found[0], found[1].path
        if saved.get("upgraded_from") == 1:
            saved = self._with_current_callback_keys(saved)
        written_by = saved.get("world_size", 1)
        if written_by != self.world.size:
            raise StateMismatchError(
                f"The checkpoint {path} was written with world size {written_by} (processes), and this "
                f"run has world size {self.world.size}: each process would see other data and sum in "
                "another order, so it cannot resume exactly. Launch it with as many processes as before "
                f"({written_by} in all: plain python for 1, torchrun --nproc_per_node=... otherwise), or "
                "train in a new directory. Nothing was loaded and the directory was not changed."
            )
        over = Progress.saved_is_over(saved["nodes"]["progress"], epochs)
        own = self._own_share(saved)
        self.check(own, path, unchecked=("rng",) if over else (), more=check(saved) if check else ())
        self.tree.warn_about_optional(own, path.name)
        return saved, path

    def _load_chosen(self, name: str) -> tuple[dict[str, Any], Path]:
        """The checkpoint that rank 0 chose and checked, read by another rank."""
        path = self.directory.checkpoints_dir / name
        saved = upgrade_tree(load_tensors(path))
        if saved.get("upgraded_from") == 1:
            saved = self._with_current_callback_keys(saved)
        return saved, path

    def _own_share(self, saved: dict[str, Any]) -> dict[str, Any]:
        """``saved`` with this rank's entry in place of each per-rank node."""
        nodes = dict(saved["nodes"])
        for name in PER_RANK_NODES:
            state = nodes.get(name)
            if isinstance(state, dict) and "ranks" in state and "world_size" in state:
                nodes[name] = state["ranks"][self.world.rank]
        return {**saved, "nodes": nodes}

    def restored_from(self) -> dict[str, Any]:
        """``checkpoint`` (the name of the state file resumed from, None on a fresh start) and
        ``checkpoint_time`` (its modification time)."""
        path = self._restored_path
        try:
            when = path.stat().st_mtime if path is not None else None
        except OSError:
            when = None
        return {"checkpoint": None if path is None else path.name, "checkpoint_time": when}

    def _prune_after_restore(self, loaded: Path) -> None:
        """Converge on what a commit leaves: the loaded state and the one before it, no best weights
        past the loaded epoch (a process killed before its pruning left more)."""
        paths = self.directory.state_paths()
        if loaded in paths:
            for path in paths[paths.index(loaded) + 2 :]:
                path.unlink(missing_ok=True)
        done = self.progress.epochs_completed
        for epoch, best_path in self.directory.best_paths().items():
            if epoch > done:
                best_path.unlink(missing_ok=True)

    def check(
        self, saved: dict[str, Any], path: Path, *, unchecked: Sequence[str] = (), more: Sequence[str] = ()
    ) -> None:
        """Raise StateMismatchError listing every way ``saved`` does not fit; change nothing."""
        problems = [*self.tree.problems(saved, unchecked=unchecked), *more]
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
