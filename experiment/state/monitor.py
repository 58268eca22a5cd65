"""The monitor/mode logic shared by best-model tracking, early stopping and checkpoint savers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from experiment.errors import ConfigurationError, MonitorError

MODES = ("min", "max")


def check_mode(mode: str, *, role: str = "mode") -> str:
    if mode not in MODES:
        raise ConfigurationError(f"{role}: received {mode!r}; expected 'min' or 'max'.")
    return mode


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never improves)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    if mode == "min":
        return value < best - abs(min_delta)
    return value > best + abs(min_delta)


def monitored_value(logs: dict[str, Any], monitor: str, *, role: str = "monitor_metric") -> float:
    """``logs[monitor]``, or a MonitorError listing the keys that are logged."""
    if monitor not in logs:
        raise MonitorError(missing_monitor_message(monitor, logs.keys(), role))
    return float(logs[monitor])


def missing_monitor_message(monitor: str, available: Iterable[str], role: str) -> str:
    keys = sorted(k for k in available if k not in ("epoch", "time", "batch", "size"))
    return (
        f"{role}: received {monitor!r}, which is not among the logged keys {keys}. Pick one of "
        "them (validation keys start with 'val_' and exist only when valid_data is given)."
    )


class BestTracker:
    """Remembers the best epoch and value of a monitored key.

    Example:
        >>> tracker = BestTracker("val_loss", "min")
        >>> tracker.update({"epoch": 1, "val_loss": 0.5})
        True
    """

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor = monitor
        self.mode = check_mode(mode, role="monitor_mode")
        self.epoch: int | None = None
        self.value: float | None = None

    def update(self, logs: dict[str, Any]) -> bool:
        """Record an epoch's logs; return whether it is the new best."""
        value = monitored_value(logs, self.monitor)
        if is_improvement(value, self.value, self.mode):
            self.epoch, self.value = int(logs["epoch"]), value
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "epoch": self.epoch, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.value = state["epoch"], state["value"]
