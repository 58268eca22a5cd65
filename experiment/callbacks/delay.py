"""DelayCallback: hold one or many callbacks back for a number of epochs or batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiment.callbacks.base import Callback, CallbackList
from experiment.errors import ConfigurationError, StateMismatchError
from experiment.state.stateful import Stateful


def _delay(name: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name}: received {value!r}; expected None or an integer >= 0.")
    return value


class DelayCallback(Callback):
    """Forwards the training hooks to ``callbacks`` only once the delays have passed.

    The delay has passed when at least ``epoch_delay`` epochs and ``batch_delay`` training batches
    are completed (the larger of the two wins). Batches are counted across epochs; when the batch
    delay expires in the middle of an epoch, the delayed callbacks receive ``on_epoch_begin`` of
    that epoch just before their first ``on_train_batch_begin``. They receive ``on_epoch_end`` and
    the validation hooks only for epochs they have begun. ``on_train_begin``, ``on_train_end`` and
    the test hooks are never delayed.

    The counters and the states of the delayed callbacks are saved with each checkpoint, so a
    resumed run wakes the callbacks at the same step as an uninterrupted one.

    Args:
        callbacks: a callback or a list of callbacks to delay.
        epoch_delay: epochs to wait; None for no epoch delay.
        batch_delay: training batches to wait; None for no batch delay.

    Example:
        >>> late_stop = DelayCallback(EarlyStopping(patience=3), epoch_delay=10)
        >>> exp.train(train_loader, valid_loader, epochs=50, callbacks=[late_stop])
    """

    def __init__(
        self,
        callbacks: Any | Sequence[Any],
        *,
        epoch_delay: int | None = None,
        batch_delay: int | None = None,
    ) -> None:
        super().__init__()
        inner = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        self.callbacks = CallbackList(inner)
        self.epoch_delay = _delay("epoch_delay", epoch_delay)
        self.batch_delay = _delay("batch_delay", batch_delay)
        self.needs_batch_values = self.callbacks.needs_batch_values
        self.epochs_counted = 0
        self.batches_counted = 0
        self.epoch_begun = False

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "set_params"):
                callback.set_params(params)

    def set_trainer(self, trainer: Any) -> None:
        super().set_trainer(trainer)
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "set_trainer"):
                callback.set_trainer(trainer)

    @property
    def delay_passed(self) -> bool:
        """Whether both delays have passed."""
        return self.epochs_counted >= self.epoch_delay and self.batches_counted >= self.batch_delay

    # ------------------------------------------------------------------------------ never delayed
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_begin", logs)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_end", logs)

    def on_test_begin(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_begin", logs)

    def on_test_end(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_end", logs)

    def on_test_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_batch_begin", batch_number, logs)

    def on_test_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_batch_end", batch_number, logs)

    # ------------------------------------------------------------------------------ epochs, batches
    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if self.delay_passed:
            self.epoch_begun = True
            self.callbacks.call("on_epoch_begin", epoch_number, logs)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_epoch_end", epoch_number, logs)
        self.epoch_begun = False
        self.epochs_counted += 1

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        if not self.delay_passed:
            return
        if not self.epoch_begun:
            # The batch delay expired inside an epoch: open it for the delayed callbacks first.
            self.epoch_begun = True
            epoch = self.epochs_counted + 1 if self.trainer is None else self.trainer.epochs_completed + 1
            self.callbacks.call("on_epoch_begin", epoch, {})
        self.callbacks.call("on_train_batch_begin", batch_number, logs)

    def on_backward_end(self, batch_number: int) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_backward_end", batch_number)

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_train_batch_end", batch_number, logs)
        self.batches_counted += 1

    # ---------------------------------------------------------------------------------- validation
    def on_valid_begin(self, logs: dict[str, Any]) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_valid_begin", logs)

    def on_valid_end(self, logs: dict[str, Any]) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_valid_end", logs)

    def on_valid_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_valid_batch_begin", batch_number, logs)

    def on_valid_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.epoch_begun:
            self.callbacks.call("on_valid_batch_end", batch_number, logs)

    # ---------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_counted": self.epochs_counted,
            "batches_counted": self.batches_counted,
            "epoch_begun": self.epoch_begun,
            "callbacks": [
                cb.state_dict() if isinstance(cb, Stateful) else None for cb in self.callbacks.callbacks
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["callbacks"]
        inner = self.callbacks.callbacks
        kinds_now = [isinstance(cb, Stateful) for cb in inner]
        kinds_saved = [s is not None for s in saved]
        if kinds_now != kinds_saved:
            raise StateMismatchError(
                f"DelayCallback: the checkpoint holds states for {len(saved)} delayed callback(s) "
                f"(stateful: {kinds_saved}); received {len(inner)} (stateful: {kinds_now}). Delay the "
                "same callbacks, in the same order, as in the run that wrote the checkpoint."
            )
        for callback, callback_state in zip(inner, saved, strict=True):
            if callback_state is not None:
                callback.load_state_dict(callback_state)
        self.epochs_counted = int(state["epochs_counted"])
        self.batches_counted = int(state["batches_counted"])
        self.epoch_begun = bool(state["epoch_begun"])
