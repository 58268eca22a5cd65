"""Reading committed checkpoints: the newest one that loads, and the weights a name refers to.

A checkpoint is read as a committed unit (:class:`~experiment.store.checkpoint_unit.Checkpoint`,
listed by :meth:`RunDirectory.checkpoints <experiment.store.directory.RunDirectory.checkpoints>`),
whose state tree is loaded from the file the unit names. Only the safe loader of
:mod:`experiment.store.safe_load` is used, so nothing in a run directory can execute code. torch is
imported by that loader when a file is read, not when this module is. Every tree read here comes
in today's format (:mod:`experiment.store.migration`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from experiment.errors import CheckpointError, ConfigurationError, UnsafeCheckpointError
from experiment.store import shards
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory
from experiment.store.migration import migrate
from experiment.store.safe_load import load_tensors


def load_newest_state(directory: RunDirectory) -> tuple[dict[str, Any], Checkpoint] | None:
    """The newest state checkpoint that loads, falling back past corrupt ones with a warning.

    Returns:
        The tree (in today's format, see :func:`~experiment.store.migration.migrate`) and its
        checkpoint, or None when the directory holds no state checkpoint at all.

    Raises:
        UnsafeCheckpointError: a checkpoint holds code to execute (never skipped silently).
        CheckpointError: checkpoints exist but none of them loads.
    """
    failures = []
    for checkpoint in directory.checkpoints():
        try:
            tree = load_checkpoint(checkpoint)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            failures.append(f"{checkpoint.name}: {error}")
            continue
        if failures:
            warnings.warn(
                f"Skipped unreadable checkpoint(s) in {directory.path} ({'; '.join(failures)}); "
                f"resuming from {checkpoint.name}.",
                stacklevel=3,
            )
        return tree, checkpoint
    if failures:
        raise CheckpointError(
            f"No checkpoint of {directory.path} can be loaded: {'; '.join(failures)}. Nothing was "
            "changed. Restore the files from a backup, or move the directory away to start afresh."
        )
    return None


def load_checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """The state tree of ``checkpoint``, in today's format (see :func:`~experiment.store.migration.migrate`).

    Raises:
        UnsafeCheckpointError: the checkpoint holds code to execute.
        CheckpointError: it cannot be read, or is not a state checkpoint of a readable format.
    """
    tree = migrate(load_tensors(checkpoint.tree_path))
    if checkpoint.sharded:  # each sharded node told where its shards are, its metadata verified
        tree["nodes"] = {name: shards.locate(node, checkpoint.path) for name, node in tree["nodes"].items()}
    return tree


def saved_optimizer_state(path: Path) -> Any:
    """The optimizer state that ``path`` holds: a file of ``optimizer.state_dict()`` (as
    OptimizerCheckpoint writes it), or a commit of a run, whose ``optimizer`` node is returned (a
    file ``state-NNNNNN.pt``: a full state dict; a folder ``state-NNNNNN/`` of shards: a sharded
    node, told where its shards are, its metadata verified).

    Raises:
        UnsafeCheckpointError: the file holds code to execute.
        CheckpointError: it cannot be read, or is a commit of an unreadable format.
    """
    if path.is_dir():
        return load_checkpoint(Checkpoint(0, path))["nodes"]["optimizer"]  # the serial is not read
    state = load_tensors(path)
    if isinstance(state, dict) and "nodes" in state:  # a one-file commit
        return migrate(state)["nodes"]["optimizer"]
    return state


def peek_progress(path: Path) -> dict[str, Any] | None:
    """The ``progress`` node of a state file, read without reading its tensors (they are mapped,
    not loaded) and without checking the file: for display only, before the real load. None when
    the file cannot be read so.
    """
    import torch  # here, not at import: the store imports no torch

    try:
        tree = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return dict(migrate(tree)["nodes"]["progress"])
    except Exception:  # a damaged file: the real load reports it, with the fallback
        return None


def saved_weights(directory: RunDirectory, checkpoint: str | int) -> tuple[int, dict[str, Any]]:
    """The epoch and network weights that ``checkpoint`` names: "best", "last", or an epoch number
    (the best or the last epoch).

    Raises:
        CheckpointError: no checkpoint yet, or no epoch is complete.
        ConfigurationError: an epoch whose weights are not kept.
    """
    found = load_newest_state(directory)
    bests = directory.best_paths()
    if found is None and checkpoint in ("best", max(bests, default=None)) and bests:
        return max(bests), load_tensors(bests[max(bests)])  # a run cleaned to its best weights
    if found is None:
        raise CheckpointError(
            f"{directory.path} holds no checkpoint yet; train first (test loads saved weights)."
        )
    tree, _ = found
    best_epoch = tree["nodes"]["best"]["epoch"]
    last_epoch = tree["nodes"]["progress"]["epochs_completed"]
    if checkpoint == "best" or (checkpoint == best_epoch and checkpoint != last_epoch):
        if best_epoch is None:
            raise CheckpointError(f"{directory.path} has no best epoch yet: no epoch is complete.")
        return best_epoch, _best_weights(directory, tree, best_epoch)
    if checkpoint == "last" or checkpoint == last_epoch:
        return last_epoch, _end_of_epoch_weights(directory, tree, best_epoch)
    raise ConfigurationError(
        f"checkpoint: received {checkpoint!r}; expected 'best', 'last', or an epoch whose weights "
        f"are kept: the best epoch ({best_epoch}) or the last one ({last_epoch})."
    )


def _best_weights(directory: RunDirectory, tree: dict[str, Any], best_epoch: int) -> dict[str, Any]:
    """The best epoch's weights: its best-weights file, or the newest state's network when that
    state ends the best epoch and the file is not there yet (a synchronous commit writes it after
    the state: a process killed in between left it to the next resume to write).

    Raises:
        CheckpointError: the file is missing or damaged, and the newest state does not hold them.
    """
    path = directory.best_path(best_epoch)
    progress = tree["nodes"]["progress"]
    if not path.exists() and (progress["epochs_completed"], progress["steps_in_epoch"]) == (best_epoch, 0):
        return tree["nodes"]["model"]
    return load_tensors(path)


def _end_of_epoch_weights(
    directory: RunDirectory, tree: dict[str, Any], best_epoch: int | None
) -> dict[str, Any]:
    """The weights at the end of the last completed epoch: the newest state's, unless it stops in
    the middle of the next epoch; then the older state kept as a fallback, if it is that epoch's end.

    Raises:
        CheckpointError: no epoch is complete, or the end of the last one is not kept.
    """
    progress = tree["nodes"]["progress"]
    last_epoch, steps = progress["epochs_completed"], progress["steps_in_epoch"]
    if last_epoch == 0:
        raise CheckpointError(f"{directory.path} has no completed epoch yet, so no last epoch to test.")
    if steps == 0:
        return tree["nodes"]["model"]
    for checkpoint in directory.checkpoints()[1:]:
        try:
            older = load_checkpoint(checkpoint)
        except (CheckpointError, KeyError, TypeError):
            continue
        kept = older["nodes"]["progress"]
        if (kept["epochs_completed"], kept["steps_in_epoch"]) == (last_epoch, 0):
            return older["nodes"]["model"]
    raise CheckpointError(
        f"checkpoint='last' means the weights at the end of epoch {last_epoch}, the last completed one, "
        f"but {directory.path} keeps only those of {steps} step(s) into epoch {last_epoch + 1}, where "
        f"training was interrupted. Test checkpoint='best' (epoch {best_epoch}), or resume training to "
        f"the end of epoch {last_epoch + 1} first."
    )
