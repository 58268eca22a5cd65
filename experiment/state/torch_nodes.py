"""The network and the optimizer as nodes of the state tree, checked before anything is loaded."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiment.state.compatibility import model_mismatches, optimizer_mismatches


def plain_module(network: nn.Module) -> nn.Module:
    """The module that ``torch.compile`` wrapped (an ``OptimizedModule``), or ``network`` itself.

    Weights are saved, loaded and checked through it, so that they never carry the ``_orig_mod.``
    prefix of the wrapper's ``state_dict``: the files of a compiled run and of an uncompiled one are
    interchangeable.
    """
    return getattr(network, "_orig_mod", network)


class ModuleNode:
    """The ``model`` node: a network's ``state_dict``, with missing, unexpected and mis-shaped keys
    reported before loading. A compiled network is saved and loaded as the module it wraps."""

    def __init__(self, network: nn.Module) -> None:
        self.network = plain_module(network)

    def state_dict(self) -> dict[str, Any]:
        return self.network.state_dict()

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        return model_mismatches(state_dict, self.network)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.network.load_state_dict(state_dict)


class OptimizerNode:
    """The ``optimizer`` node, with parameter groups and state shapes checked before loading."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        return optimizer_mismatches(state_dict, self.optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)


def first_non_finite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating tensor holding NaN or infinity, or None when all are finite.

    Each tensor's minimum and maximum (which NaN and infinities reach) are computed on its own
    device, without a boolean copy of the tensor; the usual (finite) case costs one
    device-to-host copy per device.
    """
    named = [
        (name, value)
        for name, value in tensors.items()
        if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 0
    ]
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for _, value in named:
        by_device.setdefault(value.device, []).append(_extremes(value))
    if all(bool(torch.cat(extremes).isfinite().all()) for extremes in by_device.values()):
        return None
    return next(name for name, value in named if not bool(_extremes(value).isfinite().all()))


def _extremes(value: torch.Tensor) -> torch.Tensor:
    low, high = torch.aminmax(value.detach())
    return torch.stack([low, high]).float()


def non_finite_in(nodes: dict[str, Any]) -> str | None:
    """The first tensor of a saved ``model`` or ``optimizer`` node holding NaN or infinity, named
    for a message (``network '0.weight'``, ``optimizer state[3]['exp_avg']``), or None."""
    name = first_non_finite(nodes.get("model", {}))
    if name is not None:
        return f"network {name!r}"
    optimizer_state = nodes.get("optimizer", {}).get("state", {})
    named = {
        f"state[{index}][{key!r}]": value
        for index, state in optimizer_state.items()
        for key, value in state.items()
    }
    name = first_non_finite(named)
    return None if name is None else f"optimizer {name}"
