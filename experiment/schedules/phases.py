"""Parameter spaces and phases: optimizer settings as pure functions of the training step.

A *space* is a lazy sequence of values (``linspace``, ``cosinespace``); a :class:`Phase` zips spaces
for the optimizer's parameters (``lr``, ``momentum``) into one dict per step. Every value is
computed from its step number alone, so a policy's whole state is the step it has reached, and a
resumed run gets exactly the values of an uninterrupted one. ``sgdr_phases`` and
``one_cycle_phases`` build the two classic schedules. Chain phases with
:class:`~experiment.callbacks.optimizer_policy.OptimizerPolicy`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

from experiment.arguments import check_int, check_number, reject
from experiment.errors import ConfigurationError, MissingExtraError


class _Space:
    """A lazy, re-iterable sequence of ``steps`` values going from ``start`` to ``end``."""

    kind = "space"
    start: float
    end: float
    steps: int

    def __init__(self, start: float, end: float, steps: int) -> None:
        finite = "a finite number"
        self.start = check_number("start", start, expected=finite, owner=self.kind)
        self.end = check_number("end", end, expected=finite, owner=self.kind)
        self.steps = check_int("steps", steps, minimum=1, owner=self.kind)

    def _blend(self, fraction: float) -> float:
        """The value ``fraction`` of the way from start (0) to end (1)."""
        raise NotImplementedError

    def value_at(self, step: int) -> float:
        """The value at ``step`` (0-based); raises IndexError outside ``0 <= step < steps``."""
        if not 0 <= step < self.steps:
            raise IndexError(f"{self.kind} step {step} is out of range: it has {self.steps} step(s).")
        # One step holds the start value: a phase of length 1 begins where it is told to.
        return self.start if self.steps == 1 else self._blend(step / (self.steps - 1))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[float]:
        return (self.value_at(step) for step in range(self.steps))

    def __getitem__(self, index: int) -> float:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"{self.kind} indices must be integers, not {type(index).__name__}")
        return self.value_at(index + self.steps if index < 0 else int(index))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((self.kind, self.start, self.end, self.steps))

    def __repr__(self) -> str:
        return f"{self.kind}({self.start!r}, {self.end!r}, {self.steps!r})"


class LinearSpace(_Space):
    """Values evenly spaced from ``start`` to ``end``; built by :func:`linspace`."""

    kind = "linspace"

    def _blend(self, fraction: float) -> float:
        # Written so that both ends are exact: fraction 0 gives start, fraction 1 gives end.
        return self.start * (1.0 - fraction) + self.end * fraction


class CosineSpace(_Space):
    """Values following half a cosine from ``start`` to ``end``; built by :func:`cosinespace`."""

    kind = "cosinespace"

    def _blend(self, fraction: float) -> float:
        weight = (1.0 + math.cos(math.pi * fraction)) / 2.0
        return self.start * weight + self.end * (1.0 - weight)


def linspace(start: float, end: float, steps: int) -> LinearSpace:
    """A lazy linear space from ``start`` to ``end`` (both included) in ``steps`` values.

    Raises:
        ConfigurationError: ``steps`` is not an integer >= 1, or an end is not a finite number.

    Example:
        >>> list(linspace(0, 1, 3))
        [0.0, 0.5, 1.0]
    """
    return LinearSpace(start, end, steps)


def cosinespace(start: float, end: float, steps: int) -> CosineSpace:
    """A lazy cosine-annealed space from ``start`` to ``end`` (both included) in ``steps`` values.

    Raises:
        ConfigurationError: ``steps`` is not an integer >= 1, or an end is not a finite number.

    Example:
        >>> list(cosinespace(0, 1, 3))
        [0.0, 0.5, 1.0]
    """
    return CosineSpace(start, end, steps)


def _as_space(name: str, values: Any) -> _Space | tuple[float, ...]:
    if isinstance(values, _Space):
        return values
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise reject(
            name,
            values,
            "a space such as linspace(0.1, 0.1, steps) or a sequence of numbers, one per step",
            owner="Phase",
        )
    items = tuple(values)
    expected = "a non-empty sequence of numbers, one per step"
    if not items:
        raise reject(name, values, expected, owner="Phase")
    return _floats(name, items, expected, owner="Phase")


def _floats(name: str, values: Sequence[Any], expected: str, *, owner: str) -> tuple[float, ...]:
    """``values`` as floats; an error shows the whole sequence, not only the item that failed."""
    try:
        return tuple(check_number(name, v, finite=False, owner=owner) for v in values)
    except ConfigurationError:
        raise reject(name, values, expected, owner=owner) from None


class Phase:
    """Optimizer settings for a run of consecutive training steps.

    Iterating a phase yields one dict per step, such as ``{"lr": 0.1, "momentum": 0.9}``.

    Args:
        lr: the learning rate of each step: a space or a sequence of numbers.
        momentum: the momentum of each step (``betas[0]`` for Adam-family optimizers); same length.

    Raises:
        ConfigurationError: no parameter is given, a value is not a space or sequence of numbers,
            or the spaces have different lengths.

    Example:
        >>> phase = Phase(lr=linspace(0, 1, 3), momentum=linspace(0.9, 0.9, 3))
        >>> phase[1]
        {'lr': 0.5, 'momentum': 0.9}
    """

    def __init__(self, *, lr: Any = None, momentum: Any = None) -> None:
        given = {"lr": lr, "momentum": momentum}
        self.spaces = {name: _as_space(name, v) for name, v in given.items() if v is not None}
        if not self.spaces:
            raise ConfigurationError("Phase: received no parameter; expected lr=..., momentum=... or both.")
        lengths = {name: len(space) for name, space in self.spaces.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigurationError(
                f"Phase: the spaces have different lengths {lengths}; expected one length for all of them."
            )
        self.steps = next(iter(lengths.values()))

    @property
    def params(self) -> tuple[str, ...]:
        """The names of the parameters the phase sets."""
        return tuple(self.spaces)

    def value_at(self, step: int) -> dict[str, float]:
        """The settings of ``step`` (0-based within the phase)."""
        if not 0 <= step < self.steps:
            raise IndexError(f"Phase step {step} is out of range: it has {self.steps} step(s).")
        return {name: space[step] for name, space in self.spaces.items()}

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, float]]:
        return (self.value_at(step) for step in range(self.steps))

    def __getitem__(self, index: int) -> dict[str, float]:
        return self.value_at(index + self.steps if index < 0 else index)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={space!r}" for name, space in self.spaces.items())
        return f"Phase({inner})"

    def plot(self, param: str = "lr", ax: Any = None) -> Any:
        """Draw ``param`` against the step; returns the matplotlib axes (a new figure without ``ax``).

        Raises:
            ConfigurationError: the phase does not set ``param``.
            MissingExtraError: matplotlib is not installed.
        """
        if param not in self.spaces:
            raise ConfigurationError(f"plot: param received {param!r}; this phase sets {list(self.params)}.")
        return plot_values(list(self.spaces[param]), param, ax)


def plot_values(values: Sequence[float], param: str, ax: Any = None) -> Any:
    """Draw one value per step on ``ax`` (or on a new figure) and return the axes."""
    if ax is None:
        _, ax = _pyplot().subplots()
    ax.plot(range(len(values)), values)
    ax.set_xlabel("step")
    ax.set_ylabel(param)
    return ax


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingExtraError(
            'Plotting needs matplotlib, which is not installed. Install the extra: pip install "experiment[plot]".'
        ) from error
    return plt


def _check_pair(name: str, value: Any, *, owner: str) -> tuple[float, float]:
    expected = "a pair of numbers (start, end)"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise reject(name, value, expected, owner=owner)
    start, end = _floats(name, value, expected, owner=owner)
    return start, end


def sgdr_phases(
    base_cycle_length: int, cycles: int, lr: tuple[float, float] = (1.0, 0.1), cycle_mult: int = 2
) -> list[Phase]:
    """Stochastic gradient descent with warm restarts: cosine cycles that grow ``cycle_mult`` times.

    The schedule lasts ``sum(base_cycle_length * cycle_mult ** i for i in range(cycles))`` steps.

    Args:
        base_cycle_length: steps of the first cycle.
        cycles: the number of cycles.
        lr: the learning rate at the start and at the end of each cycle.
        cycle_mult: the factor by which each cycle is longer than the one before.

    Example:
        >>> [len(phase) for phase in sgdr_phases(100, 3)]
        [100, 200, 400]
    """
    owner = "sgdr_phases"
    base = check_int("base_cycle_length", base_cycle_length, minimum=1, owner=owner)
    count = check_int("cycles", cycles, minimum=1, owner=owner)
    mult = check_int("cycle_mult", cycle_mult, minimum=1, owner=owner)
    start, end = _check_pair("lr", lr, owner=owner)
    return [Phase(lr=cosinespace(start, end, base * mult**cycle)) for cycle in range(count)]


def one_cycle_phases(
    steps: int,
    lr: tuple[float, float] = (0.1, 1),
    momentum: tuple[float, float] = (0.95, 0.85),
    finetune_lr: float = 0.01,
    finetune_fraction: float = 0.1,
) -> list[Phase]:
    """The one-cycle policy: lr up and momentum down, back again, then a short fine-tuning descent.

    The first ``1 - finetune_fraction`` of the steps form a triangle, half rising from ``lr[0]`` to
    ``lr[1]`` (momentum from ``momentum[0]`` to ``momentum[1]``) and half coming back; the rest
    lowers the learning rate linearly from ``lr[0]`` to ``finetune_lr`` at momentum ``momentum[0]``.
    Phases that would be empty (very few steps) are left out; the lengths always add up to ``steps``.

    Raises:
        ConfigurationError: an argument is out of range.

    Example:
        >>> [len(phase) for phase in one_cycle_phases(100)]
        [45, 45, 10]
    """
    owner = "one_cycle_phases"
    total = check_int("steps", steps, minimum=1, owner=owner)
    low_lr, high_lr = _check_pair("lr", lr, owner=owner)
    high_momentum, low_momentum = _check_pair("momentum", momentum, owner=owner)
    fraction = check_number(
        "finetune_fraction", finetune_fraction, minimum=0, below=1, expected="a number in [0, 1)", owner=owner
    )
    finetune_lr = check_number("finetune_lr", finetune_lr, expected="a finite number", owner=owner)
    finetune = min(round(total * fraction), total - 1)
    cycle = total - finetune
    up, down = cycle // 2, cycle - cycle // 2
    plan = [
        (up, (low_lr, high_lr), (high_momentum, low_momentum)),
        (down, (high_lr, low_lr), (low_momentum, high_momentum)),
        (finetune, (low_lr, finetune_lr), (high_momentum, high_momentum)),
    ]
    return [Phase(lr=linspace(*lrs, n), momentum=linspace(*moms, n)) for n, lrs, moms in plan if n > 0]
