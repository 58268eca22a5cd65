"""The Callback base class (the dispatcher that calls its hooks is
:class:`~experiment.callbacks.callback_list.CallbackList`).

Hook names and ``logs`` contents follow Poutyne's Callback, so its users feel at home. Each hook's
docstring says when the loops call it and what ``logs`` holds then; the order within one epoch is::

    on_epoch_begin
    for each batch:  on_train_batch_begin, [on_backward_end], on_train_batch_end
    on_valid_begin, for each batch: on_valid_batch_begin, on_valid_batch_end, on_valid_end
    on_epoch_end

A callback that keeps memory of the run (counters, best values) implements ``state_dict()`` and
``load_state_dict()``; the run saves it with each checkpoint and restores it on resume. Work that
must happen just before a commit (flushing a buffer) goes in ``before_commit()``; ``state_dict()``
has no side effects. A callback whose saved state can be unfit for it (another number of wrapped
callbacks, a corrupt value) implements ``state_problems(state_dict) -> list[str]``, checked before
anything is loaded, and decorates its ``load_state_dict`` with
:func:`~experiment.callbacks.saved_state.checked_load` so that a direct call checks first too.
Setting ``self.trainer.stop_training = True`` stops training cleanly after the current batch's
epoch; the stop is part of the saved state.
"""

from __future__ import annotations

from typing import Any

from experiment.callbacks.trainer import Trainer
from experiment.errors import ConfigurationError

HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_backward_end",
    "on_valid_begin",
    "on_valid_end",
    "on_valid_batch_begin",
    "on_valid_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)


def no_trainer_error(callback: Any) -> ConfigurationError:
    """The one error of a callback whose hooks run before a loop gave it a trainer."""
    name = type(callback).__name__
    return ConfigurationError(
        f"{name} has no trainer: pass it to Experiment.train(callbacks=[...]), Experiment.test(callbacks="
        "[...]) or train_model(callbacks=[...]), which attach the trainer before calling its hooks. "
        f"({name} received no trainer because a hook ran outside a training loop; a test calls "
        "set_trainer(...) first.)"
    )


def state_key_of(callback: Any) -> str:
    """The name under which ``callback``'s state is saved: its ``state_key``, else its qualified class name."""
    key = getattr(callback, "state_key", None)
    if isinstance(key, str) and key:
        return key
    return f"{type(callback).__module__}.{type(callback).__qualname__}"


class Callback:
    """Base class of everything that reacts to the training loop's events.

    Attributes:
        params: ``epochs`` and ``steps_per_epoch`` when training, ``steps`` when evaluating.
        trainer: the :class:`~experiment.callbacks.trainer.Trainer` running the callback (``network``,
            ``optimizer``, ``stop_training``, ``epochs_completed``, ``global_step``...). Reading it
            before a loop has called :meth:`set_trainer` raises ConfigurationError;
            :attr:`has_trainer` says whether there is one.
        model: the same object as ``trainer``, under the name Poutyne users know.
        state_key: the name of the callback's state in the run's checkpoints (``callbacks/<state_key>``):
            by default the qualified class name (``"mypackage.callbacks.MyCallback"``); two callbacks
            of one class are numbered in order (``#2``, ``#3``). Set it, as a class attribute or on
            an instance (``callback.state_key = "warmup"``), to keep a state across a renamed or
            moved class, or to tell two callbacks of one class apart whatever their order.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_epoch_end(self, epoch_number, logs):
        ...         print(epoch_number, logs["loss"])
    """

    #: Whether the callback reads the values of ``on_train_batch_end``'s logs. When no callback
    #: does, the loop never copies per-batch values from the device.
    needs_batch_values = True

    #: Whether the callback adds keys to the epoch logs (in ``on_valid_end`` or ``on_epoch_end``).
    #: A ``monitor_metric`` that no other source logs is then checked at the first epoch end
    #: instead of before training starts.
    adds_epoch_logs = False

    #: Whether ``on_train_end`` puts weights back into the network (the best epoch's). Training a
    #: run that is already over calls ``on_train_end`` of such callbacks again, so that the network
    #: ends as an uninterrupted run leaves it.
    restores_weights_at_end = False

    #: Whether the callback saves or loads the network's or the optimizer's state itself (their
    #: ``state_dict()`` / ``load_state_dict()``). Under ``strategy="fsdp"`` that state is sharded
    #: over the ranks, so such a callback would save or load one rank's shards: that strategy
    #: refuses it before anything is written.
    handles_weights = False

    #: Whether the callback reads every parameter's gradient on rank 0 alone (gradient statistics).
    #: Under ``strategy="fsdp"`` each gradient is sharded over the ranks and reading it whole is a
    #: collective, so that strategy refuses such a callback before anything is written.
    reads_every_gradient = False

    #: Whether the callback only writes files or shows output, so that in a run of several
    #: processes (torchrun) it runs on rank 0 alone. Callbacks whose state or actions must advance
    #: the same on every rank keep it False and check :attr:`is_main_process` before writing.
    main_process_only = False

    @property
    def is_main_process(self) -> bool:
        """Whether the trainer runs as rank 0 of a distributed run (or as a single process)."""
        world = getattr(getattr(self, "_attached_trainer", None), "world", None)
        return getattr(world, "is_main", True)

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self._attached_trainer: Trainer | None = None

    @property
    def trainer(self) -> Trainer:
        """The loop running the callback.

        Raises:
            ConfigurationError: no loop has attached one (the hooks ran outside training).
        """
        # getattr: a subclass may skip Callback.__init__
        trainer = getattr(self, "_attached_trainer", None)
        if trainer is None:
            raise no_trainer_error(self)
        return trainer

    @property
    def has_trainer(self) -> bool:
        """Whether a loop has attached its trainer."""
        return getattr(self, "_attached_trainer", None) is not None

    @property
    def model(self) -> Trainer:
        """The trainer, under Poutyne's name."""
        return self.trainer

    @property
    def state_key(self) -> str:
        """The name of this callback's state in the run's checkpoints (see the class docstring)."""
        key = self.__dict__.get("_state_key")
        return key if key is not None else f"{type(self).__module__}.{type(self).__qualname__}"

    @state_key.setter
    def state_key(self, key: str) -> None:
        if not isinstance(key, str) or not key or "/" in key or "#" in key:
            raise ConfigurationError(
                f"state_key: received {key!r}; expected a non-empty string without '/' or '#'."
            )
        self._state_key = key

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def set_trainer(self, trainer: Trainer) -> None:
        self._attached_trainer = trainer

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        """Called once per ``train()`` with epochs to run (each resumed attempt too), before the first
        batch; ``logs`` is empty."""

    def on_train_end(self, logs: dict[str, Any]) -> None:
        """Called after the last epoch or the one a callback stopped training in (not when an error or
        a signal ends it; again, on a run already over, if ``restores_weights_at_end``); ``logs`` is
        empty."""

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        """Called before the first batch of epoch ``epoch_number`` (from 1), not again when a resumed run
        continues that epoch; ``logs`` is empty."""

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        """Called after the epoch's batches and validation, before its commit; ``logs`` holds ``epoch``,
        ``time`` (the epoch's seconds), ``lr`` (``lr_group_<i>`` for several groups), ``loss`` and the
        metrics averaged over the epoch, then ``val_loss`` and the ``val_`` metrics when there is
        validation data (keys a callback adds here are recorded with the epoch)."""

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        """Called before training batch ``batch_number`` (from 1 in each epoch; a resumed epoch goes on
        counting); ``logs`` is empty."""

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        """Called after the batch's step (and the optimizer step, when it ended a group of accumulated
        batches: :func:`optimizer_stepped`); ``logs`` holds ``batch``, ``size`` and ``time``, and
        ``loss`` and the batch metrics of that batch when a callback has ``needs_batch_values``."""

    def on_backward_end(self, batch_number: int) -> None:
        """Called once per optimizer step, after the backward pass of the batch ``batch_number`` that
        ends the group (each batch without accumulation), with the gradients unscaled, just before
        ``optimizer.step()``; not called for ``train_model``'s own ``train_step``."""

    def on_valid_begin(self, logs: dict[str, Any]) -> None:
        """Called at the start of each epoch's validation, after its training batches; ``logs`` is
        empty."""

    def on_valid_end(self, logs: dict[str, Any]) -> None:
        """Called after the validation data's last batch; ``logs`` holds ``time``, then ``val_loss`` and
        the ``val_`` metrics averaged over the validation data."""

    def on_valid_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        """Called before validation batch ``batch_number`` (from 1); ``logs`` is empty."""

    def on_valid_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        """Called after validation batch ``batch_number``; ``logs`` holds ``batch``, ``size``, ``time``,
        ``val_loss`` and the ``val_`` batch metrics of that batch."""

    def on_test_begin(self, logs: dict[str, Any]) -> None:
        """Called at the start of ``test()`` or ``evaluate()``, before the first batch; ``logs`` is
        empty."""

    def on_test_end(self, logs: dict[str, Any]) -> None:
        """Called after the test data's last batch; ``logs`` holds ``time``, then ``test_loss`` and the
        ``test_`` metrics averaged over the test data."""

    def on_test_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        """Called before test batch ``batch_number`` (from 1); ``logs`` is empty."""

    def on_test_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        """Called after test batch ``batch_number``; ``logs`` holds ``batch``, ``size``, ``time``,
        ``test_loss`` and the ``test_`` batch metrics of that batch."""


def overrides(callback: Any, hook: str) -> bool:
    """Whether ``callback`` does something in ``hook`` (its class replaces the base no-op)."""
    method = getattr(type(callback), hook, None)
    return method is not None and method is not getattr(Callback, hook, None)


def optimizer_stepped(trainer: Any) -> bool:
    """Whether the training batch that just ended also ended a group of accumulated batches, so
    that the optimizer stepped (always, without gradient accumulation)."""
    return bool(getattr(trainer, "optimizer_stepped", True))
