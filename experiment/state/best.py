"""The monitored best: the best value of one logged key and its epoch, saved with each checkpoint.

One object, :class:`MonitoredBest`, holds what "best" means for the whole library: the run's
best-epoch tracker, :class:`~experiment.callbacks.best_model_restore.BestModelRestore`, the
checkpoint savers and :class:`~experiment.callbacks.early_stopping.EarlyStopping` all use it. So
they share one rule for improvements (NaN never improves; ``min_delta`` is a margin) and one policy
for a saved best whose monitor or mode differs from the live one (:func:`monitor_changed`): warn,
and let the new monitor start its own best. Values of different metrics are never compared.

Nothing here imports torch: the read side (``exp``) uses these helpers too.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from experiment.arguments import check_number, reject
from experiment.errors import ConfigurationError, MonitorError

MODES = ("min", "max")

#: Keys whose larger values are better: accuracy and top-k accuracy, F1, precision, recall, AUROC and
#: R² (as the library logs them, and with a prefix such as ``balanced_`` or ``macro_``).
_LARGER_IS_BETTER = re.compile(
    r"(?:^|_)(?:acc|accuracy|f1|f1_score|fscore(?:_\w+)?|precision|recall|auroc|auc|r2)$"
)
#: Keys whose smaller values are better: losses, mean absolute and (root) mean squared errors.
_SMALLER_IS_BETTER = re.compile(r"(?:^|_)(?:\w*loss|mae|mse|rmse)$")
#: What the directions are, as error messages state them.
KNOWN_DIRECTIONS = (
    "accuracy, top-k accuracy, F1, precision, recall, AUROC and R2 are better larger ('max'); "
    "losses, MAE and MSE smaller ('min')"
)


def check_mode(mode: Any, *, role: str = "mode") -> str:
    """``mode`` if it is "min" or "max".

    Raises:
        ConfigurationError: any other value (``"<role>: received 'best'; expected 'min' or 'max'."``).
    """
    if mode not in MODES:
        raise reject(role, mode, "'min' or 'max'")
    return str(mode)


def inferred_mode(monitor: str, *, role: str = "mode") -> str:
    """Whether a larger ("max") or a smaller ("min") value of the logged key ``monitor`` is better.

    The direction is read from the key's name, with its ``val_`` or ``test_`` prefix removed:
    accuracy (``acc``, ``top5_acc``), F1, precision, recall, AUROC and R² → "max"; losses, MAE
    and MSE → "min". Any other key has no direction the library can know.

    Raises:
        ConfigurationError: the key's direction is unknown; the message asks for ``role``.

    Example:
        >>> inferred_mode("val_acc"), inferred_mode("loss"), inferred_mode("val_top5_acc")
        ('max', 'min', 'max')
    """
    mode = known_mode(monitor)
    if mode is not None:
        return mode
    raise ConfigurationError(
        f"{role}: not given, and whether a larger or a smaller {monitor!r} is better cannot be told "
        f"from its name ({KNOWN_DIRECTIONS}). Pass {role.rsplit(' ', 1)[-1]}='max' if larger is better, "
        "'min' if smaller is."
    )


def known_mode(monitor: str) -> str | None:
    """The mode :func:`inferred_mode` gives ``monitor``, or None when its direction is unknown."""
    name = monitor.lower()
    for prefix in ("val_", "test_"):
        name = name.removeprefix(prefix)
    if _LARGER_IS_BETTER.search(name):
        return "max"
    if _SMALLER_IS_BETTER.search(name):
        return "min"
    return None


def resolve_mode(mode: str | None, monitor: str, *, role: str = "mode") -> str:
    """``mode`` checked, or, when it is None, the mode inferred from ``monitor`` (:func:`inferred_mode`).

    Raises:
        ConfigurationError: ``mode`` is neither None, "min" nor "max", or it is None and the
            direction of ``monitor`` is unknown.
    """
    return inferred_mode(monitor, role=role) if mode is None else check_mode(mode, role=role)


def checked_mode(mode: Any, monitor: str | None, *, role: str = "mode") -> str | None:
    """``mode`` checked as soon as it can be: resolved against ``monitor`` when it is known
    (:func:`resolve_mode`), else checked alone; None while both are None (the mode of a monitor
    chosen later is resolved then).

    Raises:
        ConfigurationError: as :func:`resolve_mode`, or :func:`check_mode` without a monitor.
    """
    if monitor is not None:
        return resolve_mode(mode, monitor, role=role)
    return None if mode is None else check_mode(mode, role=role)


def is_improvement(value: float | None, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never improves)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    if mode == "min":
        return value < best - abs(min_delta)
    return value > best + abs(min_delta)


def monitored_value(logs: Mapping[str, Any], monitor: str, *, role: str = "monitor_metric") -> float:
    """``logs[monitor]`` as a float, or a MonitorError listing the keys that are logged."""
    if monitor not in logs:
        raise MonitorError(missing_monitor_message(monitor, logs.keys(), role))
    return float(logs[monitor])


def missing_monitor_message(monitor: str, available: Iterable[str], role: str) -> str:
    """The message of a monitor that is not among the ``available`` logged keys."""
    keys = sorted(k for k in available if k not in ("epoch", "time", "batch", "size"))
    return (
        f"{role}: received {monitor!r}, which is not among the logged keys {keys}. Pick one of "
        "them (validation keys start with 'val_' and exist only when valid_data is given)."
    )


def monitor_changed(owner: str, saved: Mapping[str, Any], monitor: str, mode: str) -> bool:
    """Whether a saved state watched another monitor or mode than ``monitor`` and ``mode``; if so, warn.

    This is the library's one policy for a changed monitor: the saved best (and whatever depends
    on it, such as a patience count) is dropped, and the new monitor starts its own best.

    Args:
        owner: who holds the state, named in the warning (``"EarlyStopping"``).
        saved: a saved state holding ``monitor`` and ``mode``.
        monitor: the key watched now.
        mode: the mode used now.
    """
    old_monitor, old_mode = saved.get("monitor"), saved.get("mode")
    if (old_monitor, old_mode) == (monitor, mode):
        return False
    warnings.warn(
        f"{owner}: the checkpoint's state watched {old_monitor!r} ({old_mode}); this one watches "
        f"{monitor!r} ({mode}). The new monitor starts its own best: the best is searched afresh "
        "and what depended on the old one starts afresh (values of different metrics are never "
        "compared).",
        stacklevel=3,  # the caller of load_state_dict, not the holder's own load_state_dict
    )
    return True


class MonitoredBest:
    """The best value of a monitored key and the epoch that reached it.

    Args:
        monitor: the logged key (``"val_loss"``, ``"val_acc"``...).
        mode: "min" when smaller is better, "max" when larger is better; None infers it from
            ``monitor``'s name (:func:`inferred_mode`).
        min_delta: the margin a value must beat the best by to improve (its sign is ignored).
        owner: the name used in warnings and errors (the class that holds this best).

    Raises:
        ConfigurationError: ``mode`` is not "min", "max" or None, ``mode`` is None and
            ``monitor``'s direction is unknown, or ``min_delta`` is not a number.

    Example:
        >>> best = MonitoredBest("val_loss", "min")
        >>> best.update(0.5, epoch=1), best.update(float("nan"), epoch=2), best.update(0.4, epoch=3)
        (True, False, True)
        >>> best.epoch, best.value
        (3, 0.4)
    """

    def __init__(
        self,
        monitor: str,
        mode: str | None,
        *,
        min_delta: float = 0.0,
        owner: str = "MonitoredBest",
        role: str | None = None,
    ) -> None:
        self.monitor = monitor
        self.mode = resolve_mode(mode, monitor, role=role or f"{owner} mode")
        self.min_delta = abs(check_number("min_delta", min_delta, finite=False, expected="a number"))
        self.owner = owner
        self.epoch: int | None = None
        self.value: float | None = None

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` would be a new best (changes nothing)."""
        return is_improvement(value, self.value, self.mode, self.min_delta)

    def update(self, value: float | None, epoch: int | None) -> bool:
        """Record the value of an epoch; return whether it is the new best."""
        if value is None or not self.improves(value):
            return False
        self.value, self.epoch = float(value), None if epoch is None else int(epoch)
        return True

    def reset(self) -> None:
        """Forget the best (a fresh start)."""
        self.epoch, self.value = None, None

    def state_dict(self) -> dict[str, Any]:
        """``monitor``, ``mode``, ``epoch`` and ``value`` as plain data."""
        value = None if self.value is None else float(self.value)
        return {"monitor": self.monitor, "mode": self.mode, "epoch": self.epoch, "value": value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the saved best, unless it watched another monitor or mode: then warn and start fresh."""
        if monitor_changed(self.owner, state, self.monitor, self.mode):
            self.reset()
            return
        value = state.get("value")
        self.value = None if value is None or math.isnan(value) else float(value)
        epoch = state.get("epoch")
        self.epoch = None if epoch is None else int(epoch)

    def state_problems(self, state: Any) -> list[str]:
        """What makes ``state`` unfit (missing keys); a changed monitor is not a problem but a warning."""
        if not isinstance(state, Mapping):
            return [f"{self.owner}: the saved best is a {type(state).__name__}; expected a dict"]
        missing = [key for key in ("monitor", "mode", "epoch", "value") if key not in state]
        if missing:
            return [f"{self.owner}: the saved best lacks {missing}; expected monitor, mode, epoch and value"]
        value, epoch = state["value"], state["epoch"]
        if not (value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))):
            return [f"{self.owner}: the saved best value is {value!r}; expected a number or None"]
        if not (epoch is None or (isinstance(epoch, numbers.Integral) and not isinstance(epoch, bool))):
            return [f"{self.owner}: the saved best epoch is {epoch!r}; expected an integer or None"]
        return []

    def __repr__(self) -> str:
        return f"MonitoredBest({self.monitor!r}, {self.mode!r}, epoch={self.epoch}, value={self.value})"


class HoldsMonitoredBest:
    """``monitor``, ``mode``, ``best_value`` and ``best_epoch`` of an object's ``best``
    (a :class:`MonitoredBest`), for the callbacks and trackers built around one."""

    best: MonitoredBest

    @property
    def monitor(self) -> str:
        return self.best.monitor

    @property
    def mode(self) -> str:
        return self.best.mode

    @property
    def best_value(self) -> float | None:
        """The monitored value of the best epoch (None before the first)."""
        return self.best.value

    @property
    def best_epoch(self) -> int | None:
        """The best epoch (None before the first)."""
        return self.best.epoch
