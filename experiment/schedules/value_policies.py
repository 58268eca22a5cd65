"""deep_pipe-style policies: hooks at epoch starts and ends, and values that change with the epoch.

A :class:`Policy` is told when an epoch starts and finishes; it may raise :class:`StopTraining` to
end training cleanly (the stop is committed with the run, so a rerun does not train further). A
:class:`ValuePolicy` carries a value that is a pure function of the epoch (:meth:`ValuePolicy.value_at`);
:func:`experiment.run.train_model.train_model` passes the current values to a custom training step as
keyword arguments, and uses the one named ``lr`` as the optimizer's learning rate.

Epochs are counted as deep_pipe does, from 0: the ``epoch`` a policy receives is the number of
epochs completed before it (log.tsv numbers the same epoch ``epoch + 1``).

deep_pipe's policies raise ``EarlyStopping`` to stop; here that exception is :class:`StopTraining`,
because ``experiment.EarlyStopping`` is the patience callback. Port ``raise EarlyStopping`` as
``raise StopTraining``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiment.arguments import check_int, check_number, reject


class StopTraining(Exception):
    """Raised by a policy to stop training at the end of the current epoch (deep_pipe's ``EarlyStopping``).

    Example:
        >>> class TrainLossStop(Policy):
        ...     def epoch_finished(self, epoch, *, train_losses, metrics):
        ...         if sum(train_losses) / len(train_losses) < 1e-5:
        ...             raise StopTraining
    """


class Policy:
    """Something told when each epoch starts and finishes.

    A policy with memory of the run implements ``state_dict()`` / ``load_state_dict()`` (plain data)
    and is saved with the run's checkpoints. ``epoch_started`` runs once per epoch, possibly right
    after the previous epoch finished (before that epoch is committed).

    Example:
        >>> class PrintMetrics(Policy):
        ...     def epoch_finished(self, epoch, *, train_losses, metrics):
        ...         print(epoch, metrics)
    """

    def epoch_started(self, epoch: int) -> None:
        """Called before the epoch's first training step (``epoch`` counts from 0)."""

    def epoch_finished(self, epoch: int, *, train_losses: Sequence[float], metrics: dict[str, float]) -> None:
        """Called after the epoch: the loss of each of its training steps and the validation metrics."""


def wants_train_losses(policy: Any) -> bool:
    """Whether ``policy`` does something in ``epoch_finished`` (the loop then keeps step losses)."""
    method = getattr(type(policy), "epoch_finished", None)
    return method is not None and method is not Policy.epoch_finished


class ValuePolicy(Policy):
    """A policy whose ``value`` is a pure function of the epoch, :meth:`value_at`.

    Attributes:
        value: the value of the epoch last started (of epoch 0 before training).

    Example:
        >>> class Halving(ValuePolicy):
        ...     def value_at(self, epoch):
        ...         return 1.0 / 2 ** epoch
        >>> Halving().values(3)
        [1.0, 0.5, 0.25]
    """

    def __init__(self) -> None:
        self.value = self.value_at(0)

    def value_at(self, epoch: int) -> Any:
        """The value during epoch ``epoch`` (counted from 0)."""
        raise NotImplementedError(f"{type(self).__name__} must implement value_at(epoch).")

    def epoch_started(self, epoch: int) -> None:
        self.value = self.value_at(epoch)

    def values(self, n_epochs: int) -> list[Any]:
        """The values of epochs ``0 .. n_epochs - 1`` (to check or plot a schedule before training)."""
        return [self.value_at(epoch) for epoch in range(n_epochs)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value!r})"


class Constant(ValuePolicy):
    """The same value at every epoch.

    Example:
        >>> Constant(0.1).values(2)
        [0.1, 0.1]
    """

    def __init__(self, value: Any) -> None:
        self.constant = value
        super().__init__()

    def value_at(self, epoch: int) -> Any:
        return self.constant


class Exponential(ValuePolicy):
    """``initial * multiplier ** (epoch // step_length)``, never below ``min_value``.

    Args:
        initial: the value of epoch 0.
        multiplier: the factor applied every ``step_length`` epochs.
        step_length: epochs between two multiplications.
        floordiv: multiply in steps (``epoch // step_length``); when false, smoothly
            (``epoch / step_length``).
        min_value: the lower bound of the value.

    Example:
        >>> Exponential(initial=10, multiplier=0.5, step_length=2).values(5)
        [10.0, 10.0, 5.0, 5.0, 2.5]
    """

    def __init__(
        self,
        initial: float,
        multiplier: float,
        step_length: float = 1,
        floordiv: bool = True,
        min_value: float = -math.inf,
    ) -> None:
        self.initial, self.multiplier = _number("initial", initial), _number("multiplier", multiplier)
        self.min_value = _number("min_value", min_value)
        check_number("step_length", step_length, above=0, expected="a positive number")
        self.step_length, self.floordiv = step_length, floordiv
        super().__init__()

    def value_at(self, epoch: int) -> float:
        power = epoch // self.step_length if self.floordiv else epoch / self.step_length
        return max(self.initial * self.multiplier**power, self.min_value)


class Schedule(ValuePolicy):
    """Start at ``initial`` and multiply by ``epoch2value_multiplier[e]`` when epoch ``e`` starts.

    Example:
        >>> Schedule(1.0, {2: 0.1, 4: 0.5}).values(5)
        [1.0, 1.0, 0.1, 0.1, 0.05]
    """

    def __init__(self, initial: float, epoch2value_multiplier: Mapping[int, float]) -> None:
        self.initial = _number("initial", initial)
        self.multipliers = _checked_epochs(epoch2value_multiplier, "epoch2value_multiplier")
        super().__init__()

    @classmethod
    def constant_multiplier(cls, initial: float, multiplier: float, epochs: Sequence[int]) -> Schedule:
        """Multiply by the same ``multiplier`` at each of ``epochs``."""
        return cls(initial, dict.fromkeys(epochs, multiplier))

    def value_at(self, epoch: int) -> float:
        value = self.initial
        for start, multiplier in self.multipliers:
            if start <= epoch:
                value *= multiplier
        return value


class Switch(ValuePolicy):
    """``initial`` until the first epoch of ``epoch_to_value``, then the value of the last one reached.

    Example:
        >>> Switch(0.1, {2: 0.01, 3: 0.001}).values(4)
        [0.1, 0.1, 0.01, 0.001]
    """

    def __init__(self, initial: Any, epoch_to_value: Mapping[int, Any]) -> None:
        self.initial = initial
        self.switches = _checked_epochs(epoch_to_value, "epoch_to_value", numeric=False)
        super().__init__()

    def value_at(self, epoch: int) -> Any:
        value = self.initial
        for start, new_value in self.switches:
            if start <= epoch:
                value = new_value
        return value


class LambdaEpoch(ValuePolicy):
    """``func(epoch)``: any pure function of the epoch as a value policy.

    Example:
        >>> LambdaEpoch(lambda epoch: 0.1 / (1 + epoch)).values(2)
        [0.1, 0.05]
    """

    def __init__(self, func: Callable[[int], Any]) -> None:
        if not callable(func):
            raise reject("func", func, "a callable epoch -> value", received=type(func).__name__)
        self.func = func
        super().__init__()

    def value_at(self, epoch: int) -> Any:
        return self.func(epoch)


def as_policy(name: str, value: Any) -> Any:
    """A policy as given, or a plain value wrapped in :class:`Constant`."""
    if isinstance(value, Policy) or (hasattr(value, "epoch_started") and hasattr(value, "epoch_finished")):
        return value
    return Constant(value)


def _number(name: str, value: Any) -> float:
    """``value`` as a float if it is a number (infinities allowed: ``min_value=-math.inf``)."""
    return check_number(name, value, finite=False, expected="a number")


def _checked_epochs(mapping: Mapping[int, Any], name: str, numeric: bool = True) -> list[tuple[int, Any]]:
    if not isinstance(mapping, Mapping):
        raise reject(name, mapping, "a dict epoch -> value", received=type(mapping).__name__)
    checked = {}
    for epoch, value in mapping.items():
        expected = "epochs as integers >= 0 (counted from 0)"
        key = check_int(name, epoch, minimum=0, expected=expected, received=f"the key {epoch!r}")
        checked[key] = _number(f"{name}[{epoch}]", value) if numeric else value
    return sorted(checked.items())
