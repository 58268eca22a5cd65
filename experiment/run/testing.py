"""Testing saved weights: load the weights a name refers to, evaluate them, append to test_log.tsv."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from experiment.callbacks.callback_list import CallbackList
from experiment.errors import ConfigurationError
from experiment.run.ownership import callbacks_of_rank, owned
from experiment.run.plan_making import evaluation_loader
from experiment.store import metadata as meta
from experiment.store import tsv
from experiment.store.checkpoints import saved_weights
from experiment.store.directory import RunDirectory
from experiment.training.data import BatchSource
from experiment.training.loop import TrainingLoop
from experiment.training.strategy import Strategy


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
        ConfigurationError: no loss function (nor ``eval_step``), or an unknown ``checkpoint``.
        CheckpointError: nothing saved yet, or weights that do not fit the network.
    """
    if loop.loss_function is None and loop.eval_step is None:
        raise ConfigurationError(
            "Testing needs a loss function: pass loss_function= (or eval_step=) to Experiment."
        )
    world = loop.world
    loader = evaluation_loader(loop, test_data, role="test_data", batch_size=batch_size)
    source = BatchSource(loader, None, "test_data")
    with owned(directory, world):  # each rank tests its share; rank 0 writes the row
        epoch = load_saved_weights(directory, loop.network, checkpoint, loop.strategy)
        callback_list = CallbackList(callbacks_of_rank(callbacks, world))
        callback_list.setup({"steps": source.steps_per_epoch}, loop)
        logs = loop.evaluate(source, "test", callback_list)
        row = {"time": meta.now_iso(), "checkpoint": str(checkpoint), "epoch": epoch, **logs}
        if loop.strategy.writes:
            tsv.append_row(directory.test_log_path, row)
    return logs


def load_saved_weights(
    directory: RunDirectory, network: nn.Module, checkpoint: str | int, strategy: Strategy | None = None
) -> int:
    """Load the weights ``checkpoint`` names ("best", "last" or an epoch) into ``network`` (the
    module it wraps when compiled) through ``strategy`` (a sharded network loads its shards; by
    default one process); return their epoch. The caller holds the directory's lock.

    Raises:
        ConfigurationError: an unknown ``checkpoint``.
        CheckpointError: nothing saved yet, or weights that do not fit the network.
    """
    epoch, weights = saved_weights(directory, checkpoint)
    (strategy or Strategy()).load_weights(network, weights)
    return epoch
