"""Turning the arguments of ``Experiment.train`` into a checked :class:`TrainingPlan`, and the
``progress`` option of ``train``, ``test`` and ``evaluate`` into a progress callback."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from experiment.arguments import check_int, reject
from experiment.callbacks.base import HOOKS
from experiment.callbacks.callback_list import CallbackList
from experiment.callbacks.progression import ProgressionCallback
from experiment.callbacks.scheduler_stepping import EveryOptimizerStep
from experiment.errors import ConfigurationError, MonitorError
from experiment.run.elastic import ElasticLayout
from experiment.run.lr_scheduler_arguments import check_schedulers
from experiment.run.ownership import callbacks_of_rank
from experiment.state.best import missing_monitor_message
from experiment.state.learning_rates import lr_names
from experiment.training.batches import parameter_dtype
from experiment.training.data import BatchSource, data_kind, make_loader
from experiment.training.distributed import World
from experiment.training.loop import TrainingLoop
from experiment.training.plan import TrainingPlan


def check_train_arguments(
    epochs: Any,
    batch_size: Any,
    checkpoint_every: Any,
    steps_per_epoch: Any,
    loss_function: Any,
    seed: Any = 0,
) -> None:
    """Raise ConfigurationError for the first invalid argument of ``Experiment.train``."""
    check_int("seed", seed, minimum=0, expected="an integer >= 0")
    check_int("epochs", epochs, minimum=1, expected="a positive integer")
    check_int("batch_size", batch_size, minimum=1, expected="a positive integer")
    check_int(
        "checkpoint_every",
        checkpoint_every,
        minimum=1,
        allow_none=True,
        expected="a positive integer or None",
    )
    check_int(
        "steps_per_epoch", steps_per_epoch, minimum=1, allow_none=True, expected="a positive integer or None"
    )
    if loss_function is None:
        raise ConfigurationError(
            "Training needs a loss function: pass loss_function= to Experiment (a name such as "
            "'cross_entropy' or a callable (y_pred, y_true) -> tensor)."
        )


def make_plan(
    loop: TrainingLoop,
    train_data: Any,
    valid_data: Any,
    *,
    epochs: int,
    steps_per_epoch: int | None,
    batch_size: int,
    callbacks: Sequence[Any],
    lr_schedulers: Sequence[Any],
    monitor: str | None,
    seed: int,
    elastic: ElasticLayout | None = None,
) -> TrainingPlan:
    """The plan of one training call: batch sources, callbacks, schedulers and the checked monitor;
    an elastic run's training data cut as its ``elastic`` layout says (None: not elastic).

    Raises:
        ConfigurationError: the run's strategy refuses one of ``callbacks`` (nothing is written).
        DataError: the data cannot be batched.
        MonitorError: ``monitor`` is not among the keys the run logs.
    """
    world = loop.world
    loop.strategy.check_callbacks(callbacks)
    train_loader = make_loader(
        train_data,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        role="train_data",
        world=world,
        whole_batches=loop.custom_train_step is not None,
        dtype=parameter_dtype(loop.network),  # the floating arrays of a tuple are cast to it
        global_batch=None if elastic is None else elastic.global_batch,
        groups=None if elastic is None else elastic.groups,
    )
    valid = None
    if valid_data is not None:
        loader = evaluation_loader(loop, valid_data, role="valid_data", batch_size=batch_size, seed=seed)
        valid = BatchSource(loader, None, "valid_data", kind=data_kind(valid_data))
    monitor = resolve_monitor(monitor, loop, valid is not None, callbacks)
    schedulers = check_schedulers(lr_schedulers, monitor)
    stepping = [EveryOptimizerStep(scheduler) for scheduler in schedulers.per_step]
    callback_list = CallbackList(callbacks_of_rank([*stepping, *callbacks], world))
    return TrainingPlan(
        train=BatchSource(train_loader, steps_per_epoch, "train_data", kind=data_kind(train_data)),
        valid=valid,
        epochs=epochs,
        callbacks=callback_list,
        schedulers=schedulers.all,
        epoch_schedulers=schedulers.per_epoch,
        monitor=monitor,
        elastic=False if elastic is None else elastic.mode,
        global_batch=None if elastic is None else elastic.global_batch,
        elastic_groups=None if elastic is None else elastic.groups,
    )


def evaluation_loader(
    loop: TrainingLoop, data: Any, *, role: str, batch_size: int, world: World | None = None, seed: int = 0
) -> Any:
    """Batches of ``data`` for validation, test or evaluation by ``loop``, in order: this rank's
    share in a distributed ``world`` (the loop's by default), whole batches for a custom
    evaluation step, floating arrays of a tuple cast to the network's parameter dtype."""
    return make_loader(
        data,
        batch_size=batch_size,
        shuffle=False,
        seed=seed,
        role=role,
        world=loop.world if world is None else world,
        whole_batches=loop.eval_step is not None,
        dtype=parameter_dtype(loop.network),
    )


def resolve_monitor(
    monitor: str | None, loop: TrainingLoop, has_validation: bool, callbacks: Sequence[Any]
) -> str:
    """The key that decides the best epoch: ``monitor``, checked against the keys the run logs.

    By default (None) ``val_loss``, or ``loss`` without validation data. A monitor that only a
    callback can log is checked at the first epoch end instead.
    """
    if monitor is None:
        return "val_loss" if has_validation else "loss"
    metrics = loop.train_metrics
    names = metrics.batch_names() + [name for name, _ in metrics.epoch_metrics]
    known = {"loss", *lr_names(loop.optimizer), *names}
    if has_validation:
        known |= {f"val_{name}" for name in names}
    if monitor == "val_loss" and not has_validation:
        warnings.warn(
            "monitor_metric='val_loss' but train() received no valid_data: the best epoch is decided "
            "by the training loss ('loss') instead. Pass valid_data, or monitor_metric='loss' to say so.",
            stacklevel=4,
        )
        return "loss"
    if any(getattr(callback, "adds_epoch_logs", False) for callback in callbacks):
        return monitor  # known only at the first epoch end, where the best-epoch tracker checks it
    if monitor not in known:
        raise MonitorError(missing_monitor_message(monitor, known, "monitor_metric"))
    return monitor


def check_callbacks(callbacks: Any) -> list[Any]:
    """``callbacks`` as a list, each with at least one hook of the Callback interface."""
    items = _as_list("callbacks", callbacks, "a list of Callback instances")
    for index, callback in enumerate(items):
        if isinstance(callback, type) or not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise reject(
                f"callbacks[{index}]",
                callback,
                "a Callback instance (an object with on_epoch_end, on_train_batch_end, ... methods)",
            )
    return items


def _as_list(name: str, value: Any, expected: str) -> list[Any]:
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        raise reject(name, value, expected)
    return list(value)


def with_progress(callbacks: Sequence[Any], progress: bool | dict[str, Any]) -> list[Any]:
    """``callbacks`` plus a :class:`ProgressionCallback` when ``progress`` asks for one and none is given.

    Raises:
        ConfigurationError: ``progress`` is neither a bool nor a dict of the callback's options.
    """
    callbacks = list(callbacks)
    if isinstance(progress, dict):
        options = progress
    elif isinstance(progress, bool):
        options = {}
    else:
        raise reject("progress", progress, "True, False or a dict of ProgressionCallback options")
    if progress is False or any(isinstance(cb, ProgressionCallback) for cb in callbacks):
        return callbacks
    try:
        return [*callbacks, ProgressionCallback(**options)]
    except TypeError as error:
        raise ConfigurationError(
            f"progress: received {progress!r}, which ProgressionCallback does not accept ({error})."
        ) from None
