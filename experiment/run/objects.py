"""The network and the optimizer an Experiment trains: compiling the network, and loading an
optimizer state that :class:`~experiment.callbacks.OptimizerCheckpoint` saved."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from experiment.arguments import reject
from experiment.errors import StateMismatchError
from experiment.state.compatibility import optimizer_mismatches
from experiment.store.safe_load import load_tensors


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


def load_optimizer_file(optimizer: torch.optim.Optimizer, filename: str | os.PathLike[str]) -> None:
    """Load into ``optimizer`` the state saved in ``filename`` (``torch.save(optimizer.state_dict())``),
    through the safe loader: a file that would run code is refused.

    Raises:
        UnsafeCheckpointError: the file holds a pickle that would run code; nothing is loaded.
        CheckpointError: the file is missing or damaged.
        StateMismatchError: the state does not fit the optimizer; nothing is changed.
    """
    path = Path(filename)
    state = load_tensors(path)
    if not isinstance(state, dict) or not {"state", "param_groups"} <= set(state):
        kind = (
            f"a dict with the keys {sorted(map(str, state))}"
            if isinstance(state, dict)
            else type(state).__name__
        )
        raise StateMismatchError(
            f"{path} holds {kind}; expected an optimizer's state_dict (with 'state' and 'param_groups'), "
            "as OptimizerCheckpoint writes it."
        )
    problems = optimizer_mismatches(state, optimizer)
    if problems:
        raise StateMismatchError(f"{path} does not fit the optimizer: " + "; ".join(problems))
    optimizer.load_state_dict(state)
