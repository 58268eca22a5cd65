"""The CallbackList: the dispatcher through which the loops call their callbacks' hooks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from experiment.callbacks.base import HOOKS, overrides
from experiment.callbacks.trainer import Trainer
from experiment.errors import ConfigurationError
from experiment.state.stateful import PreparesCommit

#: The hooks that open and close a loop's use of a CallbackList (no callback may be added between).
_OPENING_HOOKS = ("on_train_begin", "on_test_begin")
_CLOSING_HOOKS = ("on_train_end", "on_test_end")


class CallbackList:
    """Calls each hook on the callbacks that implement it, in the order they were given.

    The list iterates over its callbacks (``for callback in callback_list``), has a ``len``, and
    takes more with :meth:`append`, as Poutyne's does. A callback appended after the list was set
    up by a loop receives the same ``params`` and trainer as the others.

    Callbacks may be appended until the loop begins training or testing (``on_train_begin`` or
    ``on_test_begin``), not while it runs (until ``on_train_end`` or ``on_test_end``): the others
    have already received the opening hook, and the states that a run directory saves were laid
    out when training started, so a callback added then would miss both.

    Example:
        >>> callbacks = CallbackList([EarlyStopping(patience=3)])
        >>> callbacks.append(ModelCheckpoint("weights/{epoch:02d}.pt"))
        >>> [type(callback).__name__ for callback in callbacks], len(callbacks)
        (['EarlyStopping', 'ModelCheckpoint'], 2)
    """

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks: list[Any] = list(callbacks)
        self._params: dict[str, Any] | None = None
        self._trainer: Trainer | None = None
        self._running = False
        self._index()

    def _index(self) -> None:
        """Find, for each hook, the callbacks that implement it."""
        self._by_hook = {
            hook: [getattr(cb, hook) for cb in self.callbacks if overrides(cb, hook)] for hook in HOOKS
        }
        self.needs_batch_values = any(
            getattr(cb, "needs_batch_values", True)
            for cb in self.callbacks
            if overrides(cb, "on_train_batch_end")
        )

    def __iter__(self) -> Iterator[Any]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def append(self, callback: Any) -> None:
        """Add ``callback`` after the others; it gets the ``params`` and trainer they received.

        Raises:
            ConfigurationError: training or testing with this list has begun and not ended.
        """
        if self._running:
            raise ConfigurationError(
                f"CallbackList.append: received {type(callback).__name__} while training or testing "
                "runs (after on_train_begin or on_test_begin); callbacks can be added only before. "
                "Append it before training starts, e.g. in the __init__ of the callback that holds "
                "the list, or pass it to train(callbacks=[...])."
            )
        self.callbacks.append(callback)
        if self._params is not None and hasattr(callback, "set_params"):
            callback.set_params(self._params)
        if self._trainer is not None and hasattr(callback, "set_trainer"):
            callback.set_trainer(self._trainer)
        self._index()

    def listeners(self, hook: str) -> Sequence[Any]:
        """The bound methods to call for ``hook`` (empty when nobody listens)."""
        return self._by_hook[hook]

    def call(self, hook: str, *args: Any) -> None:
        if hook in _OPENING_HOOKS:
            self._running = True
        for method in self._by_hook[hook]:
            method(*args)
        if hook in _CLOSING_HOOKS:
            self._running = False

    def setup(self, params: dict[str, Any], trainer: Trainer) -> None:
        """Give every callback the loop's ``params`` and its ``trainer``."""
        self.set_params(params)
        self.set_trainer(trainer)

    def set_params(self, params: dict[str, Any]) -> None:
        self._params = params
        for callback in self.callbacks:
            if hasattr(callback, "set_params"):
                callback.set_params(params)

    def set_trainer(self, trainer: Trainer) -> None:
        self._trainer = trainer
        for callback in self.callbacks:
            if hasattr(callback, "set_trainer"):
                callback.set_trainer(trainer)

    def before_commit(self) -> None:
        """Call ``before_commit()`` of the callbacks that have one, in order."""
        for callback in self.callbacks:
            if isinstance(callback, PreparesCommit):
                callback.before_commit()
