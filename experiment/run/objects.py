"""The network and the optimizer an Experiment trains: compiling the network, and loading an
optimizer state that :class:`~experiment.callbacks.OptimizerCheckpoint` saved or a run's commit holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from experiment.arguments import reject
from experiment.store.checkpoints import saved_optimizer_state
from experiment.training.strategy import Strategy


def compiled(network: nn.Module, compile: bool | dict[str, Any]) -> nn.Module:
    """``network`` compiled with ``torch.compile`` when ``compile`` is True or a dict of its options
    (``{"backend": "eager"}``, ``{"mode": "max-autotune"}``); a network that is already compiled is
    kept as it is.

    Raises:
        ConfigurationError: ``compile`` is neither a bool nor a dict.
    """
    if not isinstance(compile, (bool, dict)):
        raise reject("compile", compile, "True, False, or a dict of torch.compile options")
    if compile is False or hasattr(network, "_orig_mod"):
        return network
    options = compile if isinstance(compile, dict) else {}
    return torch.compile(network, **options)  # type: ignore[return-value]


def load_optimizer_file(
    filename: str | os.PathLike[str],
    *,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    strategy: Strategy,
) -> None:
    """Load into ``optimizer`` (of ``network``'s parameters) the state saved in ``filename``: a
    file of ``optimizer.state_dict()`` (as OptimizerCheckpoint writes it), or a commit of a run (its
    file ``state-NNNNNN.pt`` or, sharded, its folder ``state-NNNNNN/``), through the safe loader and
    ``strategy`` (a sharded optimizer takes its shards of it; one process reads shards whole).

    Raises:
        UnsafeCheckpointError: the file holds a pickle that would run code; nothing is loaded.
        CheckpointError: the file is missing or damaged.
        StateMismatchError: the state does not fit the optimizer; nothing is changed.
    """
    path = Path(filename)
    strategy.load_optimizer_state(network, optimizer, saved_optimizer_state(path), source=str(path))
