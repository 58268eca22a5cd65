"""The end of an epoch's logs: the schedulers stepped on them, and every value made a plain number
or text. (The learning rates they hold: :mod:`experiment.state.learning_rates`.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from experiment.state.plain import plain_log_value


def step_schedulers(schedulers: Sequence[Any], logs: dict[str, Any], monitor: str) -> None:
    """Step each LR scheduler once at an epoch end (ReduceLROnPlateau on the monitored value)."""
    for scheduler in schedulers:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(logs[monitor])
        else:
            scheduler.step()


def plain_logs(logs: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The epoch's logs with every value a Python number or text (NumPy scalars converted).

    Raises:
        ConfigurationError: a value is neither a number nor text (before anything is committed).
    """
    return {key: plain_log_value(key, value, epoch) for key, value in logs.items()}
