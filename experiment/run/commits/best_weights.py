"""The best-weights file of an epoch, written from the committed state of that epoch's end.

The commit at the end of an epoch holds that epoch's network weights (its ``model`` node); when the
epoch is a new best, they are its best weights. So ``best-epochNNNN.pt`` need not hold training up:
the synchronous backend commits the state first and lets its writer thread write the best weights
from the committed file (before the next commit, and before ``train()`` returns). A process killed
in between leaves a state whose best file is missing; resuming writes it from that same state
(:func:`restore_best_weights`), so the file is the same either way.

The state file is mapped, not read: only the network's tensors are touched, and no copy of the
state is made in memory.
"""

from __future__ import annotations

from typing import Any

from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.checkpoints import load_checkpoint
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors
from experiment.store.migration import migrate


def write_best_weights(directory: RunDirectory, checkpoint: Checkpoint, epoch: int) -> None:
    """Write ``best-epochNNNN.pt`` of ``epoch``, atomically and durably, from the network weights in
    ``checkpoint``, the commit at the end of ``epoch``.

    Raises:
        StorageError: the write failed (a full disk); no best file of ``epoch`` was made.
        CheckpointError: ``checkpoint`` cannot be read.
    """
    save_tensors(directory.best_path(epoch), _mapped_tree(checkpoint)["nodes"]["model"])


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
    import torch  # here, not at import, as the store does

    try:
        tree = torch.load(checkpoint.tree_path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file system that cannot map files: read it whole, checked
        return load_checkpoint(checkpoint)
    return migrate(tree)
