"""Callbacks wrapping torch's LR schedulers: same arguments, minus the optimizer.

Each callback builds its torch scheduler on the trainer's optimizer when training begins and steps
it where the schedule is meant to advance: once per epoch, or once per training step for
:class:`OneCycleLR`, :class:`CyclicLR` and :class:`CosineAnnealingWarmRestarts`. Either way it
steps before the checkpoint of that epoch or step is committed, and its ``state_dict`` (the torch
scheduler's, as plain data) is saved in every checkpoint, so a resumed run continues with exactly
the learning rates of an uninterrupted one.
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter, OrderedDict
from typing import Any, ClassVar

import torch
from torch.optim import lr_scheduler

from experiment.callbacks.base import Callback, optimizer_stepped
from experiment.errors import ConfigurationError, ExperimentError, StateMismatchError
from experiment.state.best import monitor_changed, monitored_value

#: The entries of ReduceLROnPlateau's state that belong to the watched metric.
_PLATEAU_BEST_KEYS = ("best", "num_bad_epochs", "mode", "mode_worse")


class LRSchedulerCallback(Callback):
    """Base of the wrappers: builds ``scheduler_class(trainer.optimizer, *args, **kwargs)``.

    A state loaded on resume (before training begins) is applied right after the scheduler is
    built; the optimizer's settings restored from the checkpoint are then put back, since building
    a torch scheduler rewrites the learning rate (and, for some, the momentum).

    Attributes:
        scheduler: the torch scheduler, or None until training begins.

    Example:
        >>> exp.train(train_loader, valid_loader, epochs=30, callbacks=[StepLR(step_size=10, gamma=0.1)])
    """

    scheduler_class: ClassVar[type[Any]]
    needs_batch_values = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        _check_arguments(self.scheduler_class, args, kwargs)
        self.args, self.kwargs = args, kwargs
        self.scheduler: Any = None
        self._loaded_state: dict[str, Any] | None = None

    def _arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The torch scheduler's arguments after the optimizer (subclasses fill in defaults)."""
        return self.args, dict(self.kwargs)

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        optimizer = self.trainer.optimizer
        restored_settings = [_settings(group) for group in optimizer.param_groups]
        args, kwargs = self._arguments()
        self.scheduler = self.scheduler_class(optimizer, *args, **kwargs)
        if self._loaded_state is not None:
            self.scheduler.load_state_dict(_for_torch(self._loaded_state, self.scheduler))
            for group, settings in zip(optimizer.param_groups, restored_settings, strict=True):
                group.update(settings)
            self._loaded_state = None

    def _built(self) -> Any:
        if self.scheduler is None:
            raise ExperimentError(
                f"{type(self).__name__} was stepped before on_train_begin built its scheduler; pass the "
                "callback to Experiment.train(callbacks=[...]), which calls its hooks in order."
            )
        return self.scheduler

    def state_dict(self) -> dict[str, Any]:
        """The torch scheduler's state as plain data (functions given as lambdas are left out)."""
        if self._loaded_state is not None or self.scheduler is None:
            return copy.deepcopy(self._loaded_state or {})
        return _plain(self.scheduler.state_dict())

    def state_problems(self, state_dict: Any) -> list[str]:
        """What makes a saved state unfit: not a dict, or a torch scheduler state without ``last_epoch``."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            return [f"{name}: the saved state is a {type(state_dict).__name__}; expected a dict"]
        if state_dict and "last_epoch" not in state_dict:
            return [
                f"{name}: the saved state holds {sorted(map(str, state_dict))}, not the state of a torch "
                "LR scheduler (no 'last_epoch'); resume with the scheduler of the run that wrote it"
            ]
        return []

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep ``state_dict`` until training begins and the scheduler is built.

        Raises:
            StateMismatchError: :meth:`state_problems` finds the state unfit; nothing is changed.
        """
        problems = self.state_problems(state_dict)
        if problems:
            raise StateMismatchError("; ".join(problems))
        self._loaded_state = copy.deepcopy(dict(state_dict)) or None


class _EpochScheduler(LRSchedulerCallback):
    """A scheduler stepped once at each epoch end."""

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._built().step()


class _BatchScheduler(LRSchedulerCallback):
    """A scheduler stepped after each optimizer step (once per group of accumulated batches)."""

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if optimizer_stepped(self.trainer):
            self._built().step()


class LambdaLR(_EpochScheduler):
    """torch.optim.lr_scheduler.LambdaLR without the optimizer; stepped at each epoch end."""

    scheduler_class = lr_scheduler.LambdaLR


class MultiplicativeLR(_EpochScheduler):
    """torch.optim.lr_scheduler.MultiplicativeLR without the optimizer; stepped at each epoch end."""

    scheduler_class = lr_scheduler.MultiplicativeLR


class StepLR(_EpochScheduler):
    """torch.optim.lr_scheduler.StepLR without the optimizer; stepped at each epoch end."""

    scheduler_class = lr_scheduler.StepLR


class MultiStepLR(_EpochScheduler):
    """torch.optim.lr_scheduler.MultiStepLR without the optimizer; stepped at each epoch end."""

    scheduler_class = lr_scheduler.MultiStepLR


class ExponentialLR(_EpochScheduler):
    """torch.optim.lr_scheduler.ExponentialLR without the optimizer; stepped at each epoch end."""

    scheduler_class = lr_scheduler.ExponentialLR


class CosineAnnealingLR(_EpochScheduler):
    """torch.optim.lr_scheduler.CosineAnnealingLR without the optimizer; stepped at each epoch end."""

    scheduler_class = lr_scheduler.CosineAnnealingLR


class ReduceLROnPlateau(_EpochScheduler):
    """torch.optim.lr_scheduler.ReduceLROnPlateau without the optimizer, watching ``logs[monitor]``.

    Args:
        monitor: the logged key to watch at each epoch end (``val_loss``, ``loss``, ``val_acc``...).
        *args, **kwargs: the arguments of torch's ReduceLROnPlateau but the optimizer.

    Raises:
        MonitorError: at an epoch end, ``monitor`` is not among the logged keys.

    Example:
        >>> ReduceLROnPlateau(monitor="val_acc", mode="max", patience=3, factor=0.5)
    """

    scheduler_class = lr_scheduler.ReduceLROnPlateau

    def __init__(self, *args: Any, monitor: str = "val_loss", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor = monitor

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._built().step(monitored_value(logs, self.monitor, role="ReduceLROnPlateau: monitor"))

    @property
    def mode(self) -> str:
        """The torch scheduler's ``mode`` as given ("min" by default)."""
        return str(_bound(self.scheduler_class, self.args, self.kwargs).get("mode", "min"))

    def state_dict(self) -> dict[str, Any]:
        """The torch scheduler's state and the watched ``monitor``."""
        return {**super().state_dict(), "monitor": self.monitor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the state for training's start; a state of another monitor or mode keeps its learning
        rates and counters but not its best value (a warning says so)."""
        state = dict(state_dict)
        saved = {"monitor": state.pop("monitor", self.monitor), "mode": state.get("mode", self.mode)}
        if monitor_changed("ReduceLROnPlateau", saved, self.monitor, self.mode):
            for key in _PLATEAU_BEST_KEYS:
                state.pop(key, None)
        super().load_state_dict(state)


class CyclicLR(_BatchScheduler):
    """torch.optim.lr_scheduler.CyclicLR without the optimizer; stepped after each training step."""

    scheduler_class = lr_scheduler.CyclicLR


class OneCycleLR(_BatchScheduler):
    """torch.optim.lr_scheduler.OneCycleLR without the optimizer; stepped after each training step.

    Without ``total_steps``, the missing ``epochs`` and ``steps_per_epoch`` default to those of the
    training, so ``OneCycleLR(max_lr=0.1)`` spans the whole run.

    Example:
        >>> exp.train(train_loader, epochs=10, callbacks=[OneCycleLR(max_lr=0.1)])
    """

    scheduler_class = lr_scheduler.OneCycleLR

    def _arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = _bound(self.scheduler_class, self.args, self.kwargs)
        if kwargs.get("total_steps") is None:
            for key in ("epochs", "steps_per_epoch"):
                if kwargs.get(key) is None:
                    kwargs[key] = _training_param(self, key)
        return (), kwargs


class CosineAnnealingWarmRestarts(_BatchScheduler):
    """torch.optim.lr_scheduler.CosineAnnealingWarmRestarts without the optimizer.

    ``T_0`` counts epochs, and the scheduler moves after each training step by the fraction of an
    epoch that step completes (``epochs_completed + steps_in_epoch / steps_per_epoch``), so the
    learning rate anneals smoothly within epochs and restarts exactly on epoch boundaries.
    """

    scheduler_class = lr_scheduler.CosineAnnealingWarmRestarts

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        trainer = self.trainer
        if not optimizer_stepped(trainer):
            return
        steps_per_epoch = _training_param(self, "steps_per_epoch")
        self._built().step(trainer.epochs_completed + trainer.steps_in_epoch / steps_per_epoch)


# ---------------------------------------------------------------------------------------- helpers
def _bound(scheduler_class: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments by name, as the torch scheduler would receive them (optimizer left out)."""
    bound = inspect.signature(scheduler_class).bind(None, *args, **kwargs)
    return dict(list(bound.arguments.items())[1:])


def _check_arguments(scheduler_class: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    name = scheduler_class.__name__
    if (args and isinstance(args[0], torch.optim.Optimizer)) or "optimizer" in kwargs:
        raise ConfigurationError(
            f"{name}: received an optimizer; expected the scheduler's other arguments only. The "
            "callback builds the scheduler on the Experiment's optimizer when training begins."
        )
    try:
        _bound(scheduler_class, args, kwargs)
    except TypeError as error:
        full = inspect.signature(scheduler_class)
        signature = full.replace(
            parameters=list(full.parameters.values())[1:], return_annotation=inspect.Signature.empty
        )
        raise ConfigurationError(
            f"{name}: the arguments {args!r}, {kwargs!r} do not fit torch's {name}: {error}. "
            f"Expected {name}{signature}."
        ) from None


def _training_param(callback: Callback, key: str) -> int:
    value = callback.params.get(key)
    if value is None:
        raise ConfigurationError(
            f"{type(callback).__name__} needs the number of training {key.replace('_', ' ')}, which is "
            f"unknown here (received {value!r}). Pass steps_per_epoch= to Experiment.train, or give "
            "the scheduler total_steps=."
        )
    return int(value)


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    """A copy of a parameter group's settings (everything but the parameters)."""
    return {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}


def _plain(value: Any) -> Any:
    """``value`` with dict subclasses (Counter, OrderedDict) made plain dicts, recursively."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


def _for_torch(state: dict[str, Any], scheduler: Any) -> dict[str, Any]:
    """A copy of a saved state with the dict subclasses the live scheduler holds restored."""
    state = copy.deepcopy(state)  # some load_state_dict methods pop keys from what they receive
    for key, value in state.items():
        current = getattr(scheduler, key, None)
        if isinstance(current, (Counter, OrderedDict)) and isinstance(value, dict):
            state[key] = type(current)(value)
    return state
