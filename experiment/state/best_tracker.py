"""The run's best-epoch tracker: the ``best`` node of its state tree.

The monitor and mode helpers it builds on (shared with the callbacks that watch a monitor) are in
:mod:`experiment.state.best`.
"""

from __future__ import annotations

from typing import Any

from experiment.state.best import HoldsMonitoredBest, MonitoredBest, monitored_value


class BestTracker(HoldsMonitoredBest):
    """Remembers the best epoch and value of a monitored key: the run's ``best`` state node.

    A thin adapter of :class:`MonitoredBest` that reads the value and the epoch from an epoch's logs.
    A checkpoint whose best watched another monitor or mode is not compared with the new one: a
    warning says so and the new monitor starts its own best.

    Example:
        >>> tracker = BestTracker("val_loss", "min")
        >>> tracker.update({"epoch": 1, "val_loss": 0.5})
        True
    """

    def __init__(self, monitor: str, mode: str | None) -> None:
        self.best = MonitoredBest(monitor, mode, owner="The run's best epoch", role="monitor_mode")

    @property
    def epoch(self) -> int | None:
        """The best epoch so far (None before the first)."""
        return self.best.epoch

    @property
    def value(self) -> float | None:
        """The monitored value of the best epoch."""
        return self.best.value

    def update(self, logs: dict[str, Any]) -> bool:
        """Record an epoch's logs; return whether it is the new best."""
        return self.best.update(monitored_value(logs, self.monitor), int(logs["epoch"]))

    def state_dict(self) -> dict[str, Any]:
        """``monitor``, ``mode``, ``epoch`` and ``value``."""
        return self.best.state_dict()

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return self.best.state_problems(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best.load_state_dict(state)
