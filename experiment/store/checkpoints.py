"""Reading committed checkpoints: the newest one that loads, and the weights a name refers to.

Only the safe loader of :mod:`experiment.store.files` is used, so nothing in a run directory can
execute code. torch is imported by that loader when a file is read, not when this module is.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from experiment.errors import CheckpointError, ConfigurationError, UnsafeCheckpointError
from experiment.store.directory import RunDirectory
from experiment.store.files import load_tensors

TREE_FORMAT = 1


def load_newest_state(directory: RunDirectory) -> tuple[dict[str, Any], Path] | None:
    """The newest state checkpoint that loads, falling back past corrupt ones with a warning.

    Returns:
        The tree and its path, or None when the directory holds no state checkpoint at all.

    Raises:
        UnsafeCheckpointError: a checkpoint holds code to execute (never skipped silently).
        CheckpointError: checkpoints exist but none of them loads.
    """
    paths = directory.state_paths()
    failures = []
    for path in paths:
        try:
            tree = load_tensors(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            failures.append(f"{path.name}: {error}")
            continue
        if not isinstance(tree, dict) or tree.get("format") != TREE_FORMAT:
            failures.append(f"{path.name}: not a state checkpoint of format {TREE_FORMAT}")
            continue
        if failures:
            warnings.warn(
                f"Skipped unreadable checkpoint(s) in {directory.path} ({'; '.join(failures)}); "
                f"resuming from {path.name}.",
                stacklevel=3,
            )
        return tree, path
    if failures:
        raise CheckpointError(
            f"No checkpoint of {directory.path} can be loaded: {'; '.join(failures)}. Nothing was "
            "changed. Restore the files from a backup, or move the directory away to start afresh."
        )
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
    best_epoch = tree["best"]["epoch"]
    last_epoch = tree["loop"]["epochs_completed"]
    if checkpoint == "best" or (checkpoint == best_epoch and checkpoint != last_epoch):
        if best_epoch is None:
            raise CheckpointError(f"{directory.path} has no best epoch yet: no epoch is complete.")
        return best_epoch, load_tensors(directory.best_path(best_epoch))
    if checkpoint == "last" or checkpoint == last_epoch:
        return last_epoch, tree["model"]
    raise ConfigurationError(
        f"checkpoint: received {checkpoint!r}; expected 'best', 'last', or an epoch whose weights "
        f"are kept: the best epoch ({best_epoch}) or the last one ({last_epoch})."
    )
