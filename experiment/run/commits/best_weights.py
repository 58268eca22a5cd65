"""The best-weights file of an epoch, written after the commit at that epoch's end.

The commit at the end of an epoch holds that epoch's network weights (its ``model`` node); when the
epoch is a new best, they are its best weights. So ``best-epochNNNN.pt`` need not hold training up:
the synchronous backend commits the state first and lets its writer thread write the best weights
(before the next commit, and before ``train()`` returns). What the writer saves is taken when the
state is committed (:class:`PendingBestWeights`):

- a network of at most :data:`COPY_LIMIT_BYTES` is copied into CPU buffers reused from one best
  epoch to the next (microseconds for a small network);
- a bigger one is read back by the writer from the committed state file, mapped (only the
  network's tensors are touched), so that no copy of it is made in memory. Reading the file back
  costs the writer a few milliseconds of Python whatever the size, which a small network's copy
  avoids.

A process killed between the state and its best weights leaves a state that holds them; resuming
writes the file from it (:func:`restore_best_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from experiment.state.snapshot import Snapshot
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.checkpoints import load_checkpoint
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors
from experiment.store.migration import migrate

#: Networks whose tensors take at most this many bytes are copied for their best-weights file;
#: bigger ones are read back from the committed state by the writer thread.
COPY_LIMIT_BYTES = 16 * 2**20


class PendingBestWeights:
    """Takes the best weights of a committed epoch on the training thread, for the writer thread to
    write; the copies of small networks go to CPU buffers reused from one best epoch to the next.

    Example:
        >>> write = pending.take(directory, checkpoint, epoch=7, model=state["nodes"]["model"])
        >>> writer.submit(write)     # best-epoch0007.pt, atomically and durably
    """

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def take(
        self, directory: RunDirectory, checkpoint: Checkpoint, epoch: int, model: Any
    ) -> Callable[[], None]:
        """Take the weights of ``epoch`` (``model``, the ``model`` node of the committed
        ``checkpoint``) and return the write of its best-weights file.

        The write must end before the next :meth:`take` (the buffers are reused). It raises
        StorageError when it fails (a full disk): no best file of ``epoch`` is made.
        """
        if _tensor_bytes(model) <= COPY_LIMIT_BYTES:
            copied = self.snapshot.take(model)

            def weights() -> Any:
                self.snapshot.wait_copied()
                return copied
        else:

            def weights() -> Any:
                return _mapped_tree(checkpoint)["nodes"]["model"]

        return lambda: save_tensors(directory.best_path(epoch), weights())


def restore_best_weights(directory: RunDirectory, checkpoint: Checkpoint, best_epoch: int | None) -> bool:
    """Write the best weights that ``checkpoint`` refers to if they are missing and it holds them:
    a process was killed after committing an epoch that improved and before writing its best file.

    Only the commit at the end of the best epoch holds its weights: a missing best file of an older
    epoch stays missing, as it did before best files were written after the state.

    Returns:
        Whether the file was written.

    Raises:
        StorageError: the write failed; no best file was made.
        CheckpointError: ``checkpoint`` cannot be read.
    """
    if best_epoch is None or best_epoch in directory.best_paths():
        return False
    tree = _mapped_tree(checkpoint)
    progress = tree["nodes"]["progress"]
    at_end = tree["reason"] == "epoch" and progress["steps_in_epoch"] == 0
    if not at_end or progress["epochs_completed"] != best_epoch:
        return False
    save_tensors(directory.best_path(best_epoch), tree["nodes"]["model"])
    return True


def _mapped_tree(checkpoint: Checkpoint) -> dict[str, Any]:
    """The state tree of ``checkpoint`` with its tensors mapped from the file (not copied)."""
    try:
        tree = torch.load(checkpoint.tree_path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file system that cannot map files: read it whole, checked
        return load_checkpoint(checkpoint)
    return migrate(tree)


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a tree of plain data and tensors."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0
