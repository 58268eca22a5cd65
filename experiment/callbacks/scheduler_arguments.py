"""The arguments and saved states of the LR-scheduler callbacks: binding them as torch's scheduler
would, and converting states between plain data and what torch's schedulers hold."""

from __future__ import annotations

import copy
import inspect
from collections import Counter, OrderedDict
from typing import Any

import torch

from experiment.callbacks.base import Callback
from experiment.errors import ConfigurationError


def bound(scheduler_class: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments by name, as the torch scheduler would receive them (optimizer left out)."""
    bound = inspect.signature(scheduler_class).bind(None, *args, **kwargs)
    return dict(list(bound.arguments.items())[1:])


def check_arguments(scheduler_class: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    name = scheduler_class.__name__
    if (args and isinstance(args[0], torch.optim.Optimizer)) or "optimizer" in kwargs:
        raise ConfigurationError(
            f"{name}: received an optimizer; expected the scheduler's other arguments only. The "
            "callback builds the scheduler on the Experiment's optimizer when training begins."
        )
    try:
        bound(scheduler_class, args, kwargs)
    except TypeError as error:
        full = inspect.signature(scheduler_class)
        signature = full.replace(
            parameters=list(full.parameters.values())[1:], return_annotation=inspect.Signature.empty
        )
        raise ConfigurationError(
            f"{name}: the arguments {args!r}, {kwargs!r} do not fit torch's {name}: {error}. "
            f"Expected {name}{signature}."
        ) from None


def training_param(callback: Callback, key: str) -> int:
    value = callback.params.get(key)
    if value is None:
        raise ConfigurationError(
            f"{type(callback).__name__} needs the number of training {key.replace('_', ' ')}, which is "
            f"unknown here (received {value!r}). Pass steps_per_epoch= to Experiment.train, or give "
            "the scheduler total_steps=."
        )
    return int(value)


def group_settings(group: dict[str, Any]) -> dict[str, Any]:
    """A copy of a parameter group's settings (everything but the parameters)."""
    return {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}


def plain(value: Any) -> Any:
    """``value`` with dict subclasses (Counter, OrderedDict) made plain dicts, recursively."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain(item) for item in value)
    return value


def for_torch(state: dict[str, Any], scheduler: Any) -> dict[str, Any]:
    """A copy of a saved state with the dict subclasses the live scheduler holds restored."""
    state = copy.deepcopy(state)  # some load_state_dict methods pop keys from what they receive
    for key, value in state.items():
        current = getattr(scheduler, key, None)
        if isinstance(current, (Counter, OrderedDict)) and isinstance(value, dict):
            state[key] = type(current)(value)
    return state
