"""The network and the optimizer as nodes of the state tree, checked before anything is loaded."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiment.state.compatibility import model_mismatches, optimizer_mismatches


class ModuleNode:
    """The ``model`` node: a network's ``state_dict``, with missing, unexpected and mis-shaped keys
    reported before loading."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

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
