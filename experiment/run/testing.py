"""Testing saved weights: load the weights a name refers to, evaluate them, append to test_log.tsv."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiment.callbacks.base import CallbackList
from experiment.errors import CheckpointError, ConfigurationError
from experiment.state.compatibility import model_mismatches
from experiment.store import metadata as meta
from experiment.store import tsv
from experiment.store.checkpoints import saved_weights
from experiment.store.directory import RunDirectory
from experiment.training.data import BatchSource, make_loader
from experiment.training.loop import TrainingLoop


def evaluate_saved_weights(
    directory: RunDirectory,
    loop: TrainingLoop,
    test_data: Any,
    *,
    checkpoint: str | int,
    batch_size: int,
    callbacks: Sequence[Any],
) -> dict[str, Any]:
    """Load the weights ``checkpoint`` names into ``loop.network``, evaluate them on ``test_data``
    and append a row to test_log.tsv; return ``test_loss`` and the ``test_`` metrics.

    Raises:
        ConfigurationError: no loss function, or an unknown ``checkpoint``.
        CheckpointError: nothing saved yet, or weights that do not fit the network.
    """
    if loop.loss_function is None:
        raise ConfigurationError("Testing needs a loss function: pass loss_function= to Experiment.")
    loader = make_loader(test_data, batch_size=batch_size, shuffle=False, seed=0, role="test_data")
    source = BatchSource(loader, None, "test_data")
    with directory.lock():
        epoch, weights = saved_weights(directory, checkpoint)
        problems = model_mismatches(weights, loop.network)
        if problems:
            raise CheckpointError("The saved weights do not fit the network: " + "; ".join(problems))
        loop.network.load_state_dict(weights)
        callback_list = CallbackList(callbacks)
        callback_list.setup({"steps": source.steps_per_epoch}, loop)
        logs = loop.evaluate(source, "test", callback_list)
        row = {"time": meta.now_iso(), "checkpoint": str(checkpoint), "epoch": epoch, **logs}
        tsv.append_row(directory.test_log_path, row)
    return logs
