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
import os
from pathlib import Path
from typing import Any, ClassVar

from torch.optim import lr_scheduler

from experiment.callbacks.base import Callback, optimizer_stepped
from experiment.callbacks.saved_state import check_saved_state, checked_load
from experiment.callbacks.scheduler_arguments import (
    bound,
    check_arguments,
    for_torch,
    group_settings,
    plain,
    training_param,
)
from experiment.errors import ExperimentError
from experiment.state.best import inferred_mode, monitor_changed, monitored_value
from experiment.store.safe_load import load_tensors

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
        check_arguments(self.scheduler_class, args, kwargs)
        self.args, self.kwargs = args, kwargs
        self.scheduler: Any = None
        self._loaded_state: dict[str, Any] | None = None

    def _arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The torch scheduler's arguments after the optimizer (subclasses fill in defaults)."""
        return self.args, dict(self.kwargs)

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        optimizer = self.trainer.optimizer
        restored_settings = [group_settings(group) for group in optimizer.param_groups]
        args, kwargs = self._arguments()
        self.scheduler = self.scheduler_class(optimizer, *args, **kwargs)
        if self._loaded_state is not None:
            self.scheduler.load_state_dict(for_torch(self._loaded_state, self.scheduler))
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
        return plain(self.scheduler.state_dict())

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

    @checked_load
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep ``state_dict`` until training begins and the scheduler is built.

        Raises:
            StateMismatchError: :meth:`state_problems` finds the state unfit; nothing is changed.
        """
        self._loaded_state = copy.deepcopy(dict(state_dict)) or None

    def load_state(self, filename: str | os.PathLike[str]) -> None:
        """Load a state saved by :class:`~experiment.callbacks.LRSchedulerCheckpoint` (Poutyne's
        ``load_state``), applied when training begins, through the safe loader.

        A resumed run's checkpoint still takes precedence over it when training starts.

        Raises:
            UnsafeCheckpointError: the file holds a pickle that would run code; nothing is loaded.
            CheckpointError: the file is missing or damaged.
            StateMismatchError: the file holds no state of an LR scheduler; nothing is changed.

        Example:
            >>> scheduler = StepLR(step_size=3)
            >>> scheduler.load_state("runs/a/scheduler.pt")
            >>> exp.train(train, valid, epochs=10, callbacks=[scheduler])
        """
        path = Path(filename)
        state = load_tensors(path)
        check_saved_state(self, state, source=path)
        self.load_state_dict(state)


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
        *args, **kwargs: the arguments of torch's ReduceLROnPlateau but the optimizer. Without
            ``mode``, it is inferred from ``monitor``'s name ("max" for ``val_acc``, "min" for
            ``val_loss``; :func:`~experiment.state.best.inferred_mode`).

    Raises:
        ConfigurationError: no ``mode`` is given and ``monitor``'s direction is unknown.
        MonitorError: at an epoch end, ``monitor`` is not among the logged keys.

    Example:
        >>> ReduceLROnPlateau(monitor="val_acc", mode="max", patience=3, factor=0.5)
    """

    scheduler_class = lr_scheduler.ReduceLROnPlateau

    def __init__(self, *args: Any, monitor: str = "val_loss", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor = monitor
        if "mode" not in bound(self.scheduler_class, args, kwargs):
            self.kwargs["mode"] = inferred_mode(monitor, role="ReduceLROnPlateau mode")

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._built().step(monitored_value(logs, self.monitor, role="ReduceLROnPlateau: monitor"))

    @property
    def mode(self) -> str:
        """The torch scheduler's ``mode``, as given or inferred from ``monitor``."""
        return str(bound(self.scheduler_class, self.args, self.kwargs).get("mode", "min"))

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
        kwargs = bound(self.scheduler_class, self.args, self.kwargs)
        if kwargs.get("total_steps") is None:
            for key in ("epochs", "steps_per_epoch"):
                if kwargs.get(key) is None:
                    kwargs[key] = training_param(self, key)
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
        steps_per_epoch = training_param(self, "steps_per_epoch")
        self._built().step(trainer.epochs_completed + trainer.steps_in_epoch / steps_per_epoch)
