"""An optimizer's state keyed by parameter index (torch's ``optimizer.state_dict()``) or by
parameter name (torch.distributed.checkpoint's, in which FSDP2 runs save it), one into the other.

Both forms hold ``state`` (per-parameter values) and ``param_groups`` (each group's options and
``params``); they differ in how a parameter is named: its position in the optimizer's groups, in
order, or its name in the network (``"0.weight"``). ``names`` lists the names of the optimizer's
parameters in that order (:func:`parameter_names`).

Example:
    >>> names = parameter_names(network, optimizer)
    >>> optimizer.load_state_dict(indexed(state_saved_by_name, names))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiment.errors import StateMismatchError


def parameter_names(network: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names in ``network`` of ``optimizer``'s parameters, in the order of its groups.

    Raises:
        StateMismatchError: the optimizer holds a parameter that is not the network's.
    """
    names = {id(parameter): name for name, parameter in network.named_parameters()}
    found = [names.get(id(p)) for group in optimizer.param_groups for p in group["params"]]
    if None in found:
        raise StateMismatchError(
            f"the optimizer holds {found.count(None)} parameter(s) that are not the network's; "
            "expected an optimizer of the network's parameters. Build it from network.parameters()."
        )
    return [name for name in found if name is not None]


def indexed(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``state`` (keyed by parameter name) keyed by index, as ``optimizer.load_state_dict`` takes it.

    Raises:
        StateMismatchError: ``state`` names a parameter that the optimizer has not.
    """
    index = {name: position for position, name in enumerate(names)}
    unknown = sorted({*state.get("state", {}), *_group_params(state)} - set(index))
    if unknown:
        raise StateMismatchError(
            f"the saved optimizer state names the parameters {unknown[:5]}, which the optimizer has not "
            f"(it holds {names[:5]}{'...' if len(names) > 5 else ''}); expected the network that was "
            "trained. Build the network and the optimizer as the run did."
        )
    return {
        "state": {index[name]: value for name, value in state.get("state", {}).items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in state["param_groups"]
        ],
    }


def named(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``state`` (keyed by index, as ``optimizer.state_dict()`` gives it) keyed by parameter name.

    Raises:
        StateMismatchError: ``state`` holds an index beyond the optimizer's parameters.
    """
    unknown = sorted({*state.get("state", {}), *_group_params(state)} - set(range(len(names))))
    if unknown:
        raise StateMismatchError(
            f"the saved optimizer state holds the parameter indices {unknown[:5]}; the optimizer has "
            f"{len(names)} parameter(s). Build the network and the optimizer as the run did."
        )
    return {
        "state": {names[position]: value for position, value in state.get("state", {}).items()},
        "param_groups": [
            {**group, "params": [names[position] for position in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def _group_params(state: dict[str, Any]) -> list[Any]:
    return [param for group in state.get("param_groups", []) for param in group.get("params", [])]
