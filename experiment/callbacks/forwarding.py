"""ForwardingCallback: the base of callbacks that drive other callbacks.

A wrapper (:class:`~experiment.callbacks.delay.DelayCallback`,
:class:`~experiment.callbacks.checkpoint_savers.LRSchedulerCheckpoint`) holds its inner callbacks in
a :class:`~experiment.callbacks.base.CallbackList`. This base passes them the loop's params and
trainer, forwards every hook to them unless a subclass says otherwise, runs their
``before_commit()``, and answers ``needs_batch_values`` and ``adds_epoch_logs`` for them, so the loop
copies per-batch values only when an inner callback reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from experiment.callbacks.base import Callback
from experiment.callbacks.callback_list import CallbackList
from experiment.callbacks.trainer import Trainer
from experiment.state.stateful import ChecksState, Stateful


class ForwardingCallback(Callback):
    """A callback that forwards the loop's events to inner callbacks.

    Every hook is forwarded as it comes; a subclass overrides the hooks it handles otherwise (and
    calls ``self.callbacks.call(hook, ...)`` where it forwards them itself).

    Args:
        callbacks: the inner callbacks, in the order their hooks run. Objects that are not
            :class:`Callback` instances are accepted: each hook they define is called. A subclass
            that also derives from another callback with its own arguments may set
            ``self.callbacks = CallbackList([...])`` after its ``__init__`` instead.

    Example:
        >>> class Quiet(ForwardingCallback):  # forward everything but the test hooks
        ...     def on_test_begin(self, logs): ...
        ...     def on_test_end(self, logs): ...
    """

    #: How messages name the inner callbacks ("delayed" in DelayCallback).
    inner_name: ClassVar[str] = "inner"

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        super().__init__()
        self.callbacks = CallbackList(callbacks)

    @property
    def needs_batch_values(self) -> bool:  # type: ignore[override]
        """Whether an inner callback reads the values of ``on_train_batch_end``'s logs."""
        return self.callbacks.needs_batch_values

    @property
    def adds_epoch_logs(self) -> bool:  # type: ignore[override]
        """Whether an inner callback adds keys to the epoch logs."""
        return any(getattr(callback, "adds_epoch_logs", False) for callback in self.callbacks.callbacks)

    @property
    def handles_weights(self) -> bool:  # type: ignore[override]
        """Whether an inner callback saves or loads the network's or the optimizer's state itself."""
        return any(getattr(callback, "handles_weights", False) for callback in self.callbacks.callbacks)

    @property
    def reads_every_gradient(self) -> bool:  # type: ignore[override]
        """Whether an inner callback reads every parameter's gradient on rank 0 alone."""
        return any(getattr(callback, "reads_every_gradient", False) for callback in self.callbacks.callbacks)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        self.callbacks.set_params(params)

    def set_trainer(self, trainer: Trainer) -> None:
        super().set_trainer(trainer)
        self.callbacks.set_trainer(trainer)

    def before_commit(self) -> None:
        """Let the inner callbacks prepare for the commit (their states are part of this one's)."""
        self.callbacks.before_commit()

    # ------------------------------------------------------------------------- inner states
    def inner_states(self) -> list[Any]:
        """The state of each inner callback, None for those without state."""
        return [cb.state_dict() if isinstance(cb, Stateful) else None for cb in self.callbacks.callbacks]

    def inner_state_problems(self, saved: list[Any]) -> list[str]:
        """What makes the saved ``inner_states()`` of a checkpoint unfit for the inner callbacks now."""
        inner = self.callbacks.callbacks
        kinds_now = [isinstance(cb, Stateful) for cb in inner]
        kinds_saved = [state is not None for state in saved] if isinstance(saved, list) else None
        if kinds_now != kinds_saved:
            count = len(saved) if isinstance(saved, list) else "no list of"
            return [
                f"{type(self).__name__}: the checkpoint holds states for {count} {self.inner_name} callback(s) "
                f"(stateful: {kinds_saved}); received {len(inner)} (stateful: {kinds_now}). Wrap the "
                "same callbacks, in the same order, as in the run that wrote the checkpoint."
            ]
        return [
            problem
            for callback, state in zip(inner, saved, strict=True)
            if state is not None and isinstance(callback, ChecksState)
            for problem in callback.state_problems(state)
        ]

    def load_inner_states(self, saved: list[Any]) -> None:
        """Load the inner callbacks' states (checked with :meth:`inner_state_problems` first)."""
        for callback, state in zip(self.callbacks.callbacks, saved, strict=True):
            if state is not None:
                callback.load_state_dict(state)

    # -------------------------------------------------------------------------------- hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_begin", logs)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_end", logs)

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_epoch_begin", epoch_number, logs)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_epoch_end", epoch_number, logs)

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_batch_begin", batch_number, logs)

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_batch_end", batch_number, logs)

    def on_backward_end(self, batch_number: int) -> None:
        self.callbacks.call("on_backward_end", batch_number)

    def on_valid_begin(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_valid_begin", logs)

    def on_valid_end(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_valid_end", logs)

    def on_valid_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_valid_batch_begin", batch_number, logs)

    def on_valid_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_valid_batch_end", batch_number, logs)

    def on_test_begin(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_begin", logs)

    def on_test_end(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_end", logs)

    def on_test_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_batch_begin", batch_number, logs)

    def on_test_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_test_batch_end", batch_number, logs)
