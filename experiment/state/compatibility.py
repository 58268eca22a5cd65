"""Checking saved network and optimizer states against the live objects before loading them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def model_mismatches(saved: dict[str, Any], network: nn.Module) -> list[str]:
    """Missing, unexpected and mis-shaped keys of a saved ``state_dict`` for ``network``."""
    current = network.state_dict()
    problems = []
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    if missing:
        problems.append(f"network keys missing from the checkpoint: {missing}")
    if unexpected:
        problems.append(f"unexpected network keys in the checkpoint: {unexpected}")
    for key in sorted(set(current) & set(saved)):
        if torch.is_tensor(saved[key]) and tuple(saved[key].shape) != tuple(current[key].shape):
            problems.append(
                f"network key {key!r} has shape {tuple(saved[key].shape)} in the checkpoint but "
                f"{tuple(current[key].shape)} now"
            )
    return problems


def optimizer_mismatches(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> list[str]:
    """Differences of parameter groups and state shapes between a saved and a live optimizer."""
    saved_groups = saved.get("param_groups", [])
    groups = optimizer.param_groups
    if len(saved_groups) != len(groups):
        return [
            f"the optimizer has {len(groups)} parameter group(s) now but {len(saved_groups)} in the checkpoint"
        ]
    problems = []
    params = [p for group in groups for p in group["params"]]
    for index, (old, new) in enumerate(zip(saved_groups, groups)):
        if len(old["params"]) != len(new["params"]):
            problems.append(
                f"optimizer parameter group {index} holds {len(new['params'])} parameter(s) now but "
                f"{len(old['params'])} in the checkpoint"
            )
    if problems:
        return problems
    ids = [i for group in saved_groups for i in group["params"]]
    by_id = dict(zip(ids, params))
    for param_id, state in saved.get("state", {}).items():
        param = by_id.get(param_id)
        if param is None:
            problems.append(f"optimizer state for unknown parameter id {param_id}")
            continue
        for name, value in state.items():
            if torch.is_tensor(value) and value.ndim > 0 and tuple(value.shape) != tuple(param.shape):
                problems.append(
                    f"optimizer state {name!r} of parameter {param_id} has shape "
                    f"{tuple(value.shape)} but the parameter has {tuple(param.shape)}"
                )
    return problems
