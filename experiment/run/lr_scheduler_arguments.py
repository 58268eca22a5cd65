"""The ``lr_schedulers`` argument of ``Experiment.train``: torch schedulers, each stepped at epoch
ends or, in Lightning's form ``{"scheduler": s, "interval": "step"}``, after every optimizer step."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, ReduceLROnPlateau

from experiment.arguments import reject
from experiment.errors import ConfigurationError
from experiment.state.best import known_mode

INTERVALS = ("epoch", "step")
#: torch schedulers whose schedule is counted in optimizer steps: stepped per epoch, they would
#: barely move.
_PER_STEP_CLASSES = (OneCycleLR, CyclicLR)


@dataclasses.dataclass(frozen=True)
class LRSchedulers:
    """The torch schedulers of a training call, in the order given (the order of their state nodes).

    Attributes:
        all: every scheduler, saved as ``schedulers/0``, ``schedulers/1``...
        per_step: those stepped after every optimizer step (``"interval": "step"``); the others
            step once per epoch.
    """

    all: list[Any]
    per_step: list[Any]

    @property
    def per_epoch(self) -> list[Any]:
        return [s for s in self.all if not any(s is other for other in self.per_step)]


def check_schedulers(schedulers: Any, monitor: str) -> LRSchedulers:
    """``schedulers`` checked: torch LR schedulers, or dicts ``{"scheduler": s, "interval": ...}``.

    Warns for a OneCycleLR or CyclicLR given without an interval (it steps once per epoch then).

    Raises:
        ConfigurationError: an item is not a scheduler or such a dict, an interval is not "epoch"
            or "step", a ReduceLROnPlateau asks for "step", or its mode contradicts ``monitor``.
    """
    if isinstance(schedulers, (str, bytes, dict)) or not isinstance(schedulers, (list, tuple)):
        raise reject("lr_schedulers", schedulers, "a list of torch LR schedulers")
    every, per_step = [], []
    for index, item in enumerate(schedulers):
        scheduler, interval = _scheduler_and_interval(item, f"lr_schedulers[{index}]")
        every.append(scheduler)
        if interval == "step":
            per_step.append(scheduler)
    _check_plateau_modes(every, monitor)
    return LRSchedulers(every, per_step)


def _scheduler_and_interval(item: Any, role: str) -> tuple[Any, str]:
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"scheduler", "interval"})
        if "scheduler" not in item or unknown:
            raise ConfigurationError(
                f"{role}: received a dict with keys {sorted(item)}; expected {{'scheduler': s, "
                "'interval': 'epoch' or 'step'}. Other keys of Lightning's form (frequency, monitor, "
                "name) are not read: the monitor is the Experiment's monitor_metric."
            )
        interval = item.get("interval", "epoch")
        if interval not in INTERVALS:
            raise reject(f"{role}['interval']", interval, "'epoch' or 'step'")
        scheduler = _checked(item["scheduler"], role)
        if interval == "step" and isinstance(scheduler, ReduceLROnPlateau):
            raise ConfigurationError(
                f"{role}: a ReduceLROnPlateau cannot step per optimizer step: it steps on the "
                "monitored value, logged at each epoch end. Give it with 'interval': 'epoch'."
            )
        return scheduler, interval
    scheduler = _checked(item, role)
    if isinstance(scheduler, _PER_STEP_CLASSES):
        name = type(scheduler).__name__
        warnings.warn(
            f"{role}: a {name} is stepped once per epoch when given alone, but its schedule counts "
            f"optimizer steps. Pass {{'scheduler': {name.lower()}, 'interval': 'step'}} to step it "
            "after every optimizer step ('interval': 'epoch' keeps it per epoch without this warning).",
            stacklevel=5,  # the call of Experiment.train
        )
    return scheduler, "epoch"


def _checked(scheduler: Any, role: str) -> Any:
    if isinstance(scheduler, type) or not all(
        callable(getattr(scheduler, name, None)) for name in ("step", "state_dict", "load_state_dict")
    ):
        raise reject(
            role,
            scheduler,
            "a torch LR scheduler built on the optimizer (e.g. torch.optim.lr_scheduler.StepLR(exp.optimizer, "
            "10)), or {'scheduler': s, 'interval': 'epoch' or 'step'}",
        )
    return scheduler


def _check_plateau_modes(schedulers: Sequence[Any], monitor: str) -> None:
    """Refuse a torch ReduceLROnPlateau whose mode contradicts the direction of the monitored key.

    Such a scheduler is stepped on ``monitor``; built with torch's default ``mode="min"`` on an
    accuracy, it would lower the learning rate while the accuracy improves.
    """
    expected = known_mode(monitor)
    for index, scheduler in enumerate(schedulers):
        mode = getattr(scheduler, "mode", None)
        if isinstance(scheduler, ReduceLROnPlateau) and expected is not None and mode != expected:
            raise ConfigurationError(
                f"lr_schedulers[{index}]: a ReduceLROnPlateau with mode={mode!r} is stepped on the "
                f"monitored {monitor!r}, which is better {'larger' if expected == 'max' else 'smaller'}: "
                f"it would reduce the learning rate while {monitor!r} improves. Build it with "
                f"mode={expected!r}."
            )
