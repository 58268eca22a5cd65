"""The Callback base class and the dispatcher the loop calls hooks through.

Hook names and ``logs`` contents follow Poutyne's Callback, so its users feel at home:

- ``on_train_begin(logs)`` / ``on_train_end(logs)``: ``logs`` is empty.
- ``on_epoch_begin(epoch_number, logs)``: ``logs`` is empty.
- ``on_epoch_end(epoch_number, logs)``: ``epoch``, ``time``, ``lr``, ``loss``, the batch and epoch
  metrics, then ``val_loss`` and the ``val_`` metrics when there is validation data.
- ``on_train_batch_begin(batch_number, logs)``: ``logs`` is empty.
- ``on_train_batch_end(batch_number, logs)``: ``batch``, ``size``, ``time``, ``loss`` and the batch
  metrics of that batch.
- ``on_backward_end(batch_number)``: after ``loss.backward()``, before ``optimizer.step()``.
- ``on_valid_begin`` / ``on_valid_batch_begin`` / ``on_valid_batch_end`` / ``on_valid_end`` and the
  ``on_test_*`` family: as above, with keys prefixed ``val_`` or ``test_``; the ``*_end`` logs hold
  ``time`` and the averaged loss and metrics.

A callback that keeps memory of the run (counters, best values) implements ``state_dict()`` and
``load_state_dict()``; the run saves it with each checkpoint and restores it on resume. Setting
``self.trainer.stop_training = True`` stops training cleanly after the current batch's epoch; the
stop is part of the saved state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiment.training.loop import TrainingLoop

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


class Callback:
    """Base class of everything that reacts to the training loop's events.

    Attributes:
        params: ``epochs`` and ``steps_per_epoch`` when training, ``steps`` when evaluating.
        trainer: the :class:`~experiment.training.loop.TrainingLoop` running the callback (``network``,
            ``optimizer``, ``stop_training``, ``epochs_completed``, ``global_step``...).
        model: the same object as ``trainer``, under the name Poutyne users know.

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

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.trainer: TrainingLoop | None = None

    @property
    def model(self) -> TrainingLoop | None:
        return self.trainer

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def set_trainer(self, trainer: TrainingLoop) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict[str, Any]) -> None: ...
    def on_train_end(self, logs: dict[str, Any]) -> None: ...
    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None: ...
    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None: ...
    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None: ...
    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None: ...
    def on_backward_end(self, batch_number: int) -> None: ...
    def on_valid_begin(self, logs: dict[str, Any]) -> None: ...
    def on_valid_end(self, logs: dict[str, Any]) -> None: ...
    def on_valid_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None: ...
    def on_valid_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None: ...
    def on_test_begin(self, logs: dict[str, Any]) -> None: ...
    def on_test_end(self, logs: dict[str, Any]) -> None: ...
    def on_test_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None: ...
    def on_test_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None: ...


def overrides(callback: Any, hook: str) -> bool:
    """Whether ``callback`` does something in ``hook`` (its class replaces the base no-op)."""
    method = getattr(type(callback), hook, None)
    return method is not None and method is not getattr(Callback, hook, None)


class CallbackList:
    """Calls each hook on the callbacks that implement it, in the order they were given."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks: list[Any] = list(callbacks)
        self._by_hook = {
            hook: [getattr(cb, hook) for cb in self.callbacks if overrides(cb, hook)] for hook in HOOKS
        }
        self.needs_batch_values = any(
            getattr(cb, "needs_batch_values", True)
            for cb in self.callbacks
            if overrides(cb, "on_train_batch_end")
        )

    def listeners(self, hook: str) -> Sequence[Any]:
        """The bound methods to call for ``hook`` (empty when nobody listens)."""
        return self._by_hook[hook]

    def call(self, hook: str, *args: Any) -> None:
        for method in self._by_hook[hook]:
            method(*args)

    def setup(self, params: dict[str, Any], trainer: TrainingLoop) -> None:
        for callback in self.callbacks:
            if hasattr(callback, "set_params"):
                callback.set_params(params)
            if hasattr(callback, "set_trainer"):
                callback.set_trainer(trainer)
