"""DelayCallback: hold one or many callbacks back for a number of epochs or batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiment.arguments import check_int
from experiment.callbacks.forwarding import ForwardingCallback
from experiment.callbacks.saved_state import checked_load, missing_state_keys

_STATE_KEYS = ("epochs_counted", "batches_counted", "epoch_begun", "callbacks")


def _delay(name: str, value: Any) -> int:
    return check_int(name, value, minimum=0, allow_none=True, expected="None or an integer >= 0") or 0


class DelayCallback(ForwardingCallback):
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

    inner_name = "delayed"

    def __init__(
        self,
        callbacks: Any | Sequence[Any],
        *,
        epoch_delay: int | None = None,
        batch_delay: int | None = None,
    ) -> None:
        super().__init__(list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks])
        self.epoch_delay = _delay("epoch_delay", epoch_delay)
        self.batch_delay = _delay("batch_delay", batch_delay)
        self.epochs_counted = 0
        self.batches_counted = 0
        self.epoch_begun = False

    @property
    def delay_passed(self) -> bool:
        """Whether both delays have passed."""
        return self.epochs_counted >= self.epoch_delay and self.batches_counted >= self.batch_delay

    # on_train_begin, on_train_end and the test hooks are never delayed: ForwardingCallback forwards them.

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
            epoch = self.trainer.epochs_completed + 1 if self.has_trainer else self.epochs_counted + 1
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
            "callbacks": self.inner_states(),
        }

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        """What makes ``state`` unfit: missing keys, other delayed callbacks, their own problems."""
        return missing_state_keys("DelayCallback", state, _STATE_KEYS) or self.inner_state_problems(
            state["callbacks"]
        )

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the counters and the delayed callbacks' states.

        Raises:
            StateMismatchError: :meth:`state_problems` finds the state unfit; nothing is changed.
        """
        self.load_inner_states(state["callbacks"])
        self.epochs_counted = int(state["epochs_counted"])
        self.batches_counted = int(state["batches_counted"])
        self.epoch_begun = bool(state["epoch_begun"])
