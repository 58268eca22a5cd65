"""One folder per commit, of shards: the commit backend of sharded state (``strategy="fsdp"``).

A commit is the folder ``checkpoints/state-NNNNNN/``. Every rank writes its shards of the nodes
that hold sharded state (``model``, ``optimizer``: their tensors) with torch's Distributed
Checkpoint into ``checkpoints/.state-NNNNNN.tmp/`` (each file fsynced); rank 0 then writes
``tree.pt`` there (every other node, every rank's random state included, and the sharded nodes'
plain parts with the SHA-256 of DCP's ``.metadata``), fsyncs the folder, **renames it** to its
final name and fsyncs ``checkpoints/``. The rename is the commit, never the presence of
``.metadata`` (DCP writes it before the commit is complete). Every rank learns the outcome.

A new best epoch's weights (``best-epochNNNN.pt``, a plain full state dict) are gathered from the
shards once per new best, by every rank, and written by rank 0 before the commit's rename, so that
a commit that ends a best epoch never lacks them. Two commits are kept, the newest and its
fallback; older folders (and best weights that neither refers to) are removed by a background
thread once the new one is durable. A temporary folder left by a kill is removed when the run next
starts (:meth:`Experiment.train <experiment.run.experiment.Experiment.train>`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiment.errors import NonFiniteStateError, StorageError
from experiment.run.commits.background_writer import BackgroundWriter
from experiment.run.commits.commit import Commit
from experiment.run.commits.retention import Retention
from experiment.store import shards
from experiment.store.checkpoint_unit import TREE_FILE, Checkpoint
from experiment.store.directory import RunDirectory
from experiment.store.files import fsync_dir, os_error_in, save_tensors
from experiment.training.distributed import SINGLE, World
from experiment.training.sharded_tensors import full_tensors, holds_shards, local_view


class DirectoryBackend:
    """Writes each commit as a folder of shards (a
    :class:`~experiment.run.commits.backend.CommitBackend`).

    Args:
        directory: the run directory.
        world: the ranks of the run (each writes its shards; rank 0 the tree file and the rename).
        on_durable: called with a commit's serial once it is durable (rank 0; from the training
            thread here, from the writer thread in :class:`AsyncDirectoryBackend`).
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
        #: The thread that removes superseded commits (rank 0).
        self.writer = BackgroundWriter()
        self.retention = Retention(directory)

    def write(self, commit: Commit, before: Callable[[], None]) -> None:
        """Write ``commit`` as a folder of shards and rename it into place (see the module
        docstring); every rank takes part and raises the same error on failure."""
        commit = commit.gathered(self.world)
        keep, temporary, tree, tensors = self._prepare(commit, before)
        try:
            shards.save(tensors, temporary)
        except StorageError:
            self.world.on_main(lambda: shutil.rmtree(temporary, ignore_errors=True))
            raise
        self.world.on_main(lambda: self._commit(commit.serial, tree, temporary, keep))

    def _prepare(
        self, commit: Commit, before: Callable[[], None]
    ) -> tuple[set[int | None], Path, dict[str, Any], dict[str, Any]]:
        """Every rank, before its shards are written: the previous work finished (on rank 0, then
        the derived files written), the state checked for NaN, the temporary folder made, the best
        weights of a new best epoch written. Returns what is kept once this commit is durable,
        the temporary folder, the tree file's content and this rank's tensors for DCP."""
        self.world.on_main(lambda: self._start(before))
        self._refuse_non_finite(
            dataclasses.replace(commit, state={**commit.state, "nodes": local_view(commit.state["nodes"])})
        )
        keep = self.retention.keep(commit)
        temporary = self.directory.temporary_state_dir(commit.serial)
        self.world.on_main(lambda: fresh_folder(temporary))
        self._write_best_weights(commit)
        tree, tensors = split_shards(commit.state)
        return keep, temporary, tree, tensors

    def _write_best_weights(self, commit: Commit) -> None:
        """The weights of a new best epoch, gathered whole by every rank (a collective) and written
        by rank 0; nothing when the commit has no new best."""
        if commit.best_weights is not None:
            weights = full_tensors(commit.state["nodes"]["model"], keep=self.world.is_main)
            path = self.directory.best_path(commit.best_weights)
            self.world.on_main(lambda: save_tensors(path, weights, sync_dir=False))

    def wait(self, *, quiet: bool = False) -> None:
        """Wait for the pruning in flight; raise its error (on every rank) unless ``quiet``."""
        if quiet:
            self.writer.wait(quiet=True)
            return
        self.world.on_main(self.writer.wait)

    def resumed_from(self, checkpoint: Checkpoint, *, best_epoch: int | None, epochs_completed: int) -> None:
        """Keep the restored commit and the one before it; remove older commits and best weights
        past the restored epoch (what a kill before the pruning, or before the rename, left)."""
        self.retention.resumed_from(best_epoch)
        self.world.on_main(lambda: self.retention.converge(checkpoint, epochs_completed))

    # ------------------------------------------------------------------- on the writing rank
    def _start(self, before: Callable[[], None]) -> None:
        self.writer.wait()
        before()

    def _commit(self, serial: int, tree: dict[str, Any], temporary: Path, keep: set[int | None]) -> None:
        """Rank 0, once every rank's shards are written: the tree file, the rename, the pruning."""
        self._finish(serial, tree, temporary)
        if self.on_durable is not None:
            self.on_durable(serial)
        self.writer.submit(lambda: self.retention.prune(keep))

    def _finish(self, serial: int, tree: dict[str, Any], temporary: Path) -> None:
        """Record the digest of DCP's ``.metadata`` in the tree, write the tree file into
        ``temporary`` and rename it to the commit of ``serial`` (rank 0 alone: the other ranks never
        read the folder, which this renames).

        Raises:
            StorageError: a read or write failed; the temporary folder is removed, the previous
                commit kept.
        """
        final = self.directory.state_dir_path(serial)
        try:
            digest = shards.digest(temporary / shards.METADATA)
            for node in tree["nodes"].values():
                if shards.is_sharded_node(node):
                    node["sharded"]["metadata_sha256"] = digest
            save_tensors(temporary / TREE_FILE, tree)  # its folder fsynced: the shards' entries too
            if final.exists():  # a commit of this serial that did not load, skipped on resume
                shutil.rmtree(final)
            os.rename(temporary, final)
            fsync_dir(self.directory.checkpoints_dir)
        except OSError as error:
            shutil.rmtree(temporary, ignore_errors=True)
            cause = os_error_in(error) or error
            raise StorageError(
                f"Could not commit {final}: {cause}. The previous checkpoint is intact. Free some "
                "disk space or check the file system."
            ) from error

    # ------------------------------------------------------------------------ every rank
    def _refuse_non_finite(self, commit: Commit) -> None:
        """Each rank checks its own shards; if any holds NaN or infinity, every rank raises the
        message of the first that found one."""
        failure = None
        try:
            commit.refuse_non_finite(self.retention.newest_name)
        except NonFiniteStateError as error:
            failure = error
        self.world.raise_any(failure)


def split_shards(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tree file's content (each sharded node as its skeleton) and the tensors for DCP."""
    nodes, tensors = {}, {}
    for name, node in state["nodes"].items():
        if holds_shards(node):
            skeleton, found = shards.split(node, name)
            tensors.update(found)
            nodes[name] = {"sharded": {"prefix": name, "skeleton": skeleton, "metadata_sha256": None}}
        else:
            nodes[name] = node
    return {**state, "nodes": nodes}, tensors


def fresh_folder(folder: Path) -> None:
    """An empty ``folder`` (a leftover of the same name removed first)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
