"""The learning rates an epoch's logs hold: one per parameter group, named as Poutyne names them."""

from __future__ import annotations

from typing import Any

import torch


def lr_logs(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{"lr": ...}`` for an optimizer of one parameter group; ``lr_group_0``, ``lr_group_1``...
    for several (log.tsv, TensorBoard and the callbacks' epoch logs)."""
    groups = optimizer.param_groups
    if len(groups) == 1:
        return {"lr": groups[0]["lr"]}
    return {f"lr_group_{index}": group["lr"] for index, group in enumerate(groups)}


def lr_names(optimizer: torch.optim.Optimizer) -> list[str]:
    """The keys of :func:`lr_logs` for ``optimizer``."""
    return list(lr_logs(optimizer))
