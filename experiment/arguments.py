"""Checks of user arguments, each raising one ConfigurationError in the library's message format.

Every message says what was received and what was expected: ``"NAME: received VALUE; expected
WHAT."``. ``owner`` prefixes the name with the class or function that took it
(``"OptimizerPolicy: initial_step received -1; expected an integer >= 0."``).

Example:
    >>> check_int("patience", 3, minimum=0)
    3
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from experiment.errors import ConfigurationError


def _label(name: str, owner: str | None) -> str:
    return f"{owner}: {name}" if owner else f"{name}:"


def reject(
    name: str, value: Any, expected: str, *, owner: str | None = None, received: str | None = None
) -> ConfigurationError:
    """The ConfigurationError for ``value`` given as ``name`` where ``expected`` was expected.

    Args:
        received: what to show instead of ``repr(value)`` (a type name, "the key -1").
    """
    shown = repr(value) if received is None else received
    return ConfigurationError(f"{_label(name, owner)} received {shown}; expected {expected}.")


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    allow_none: bool = False,
    expected: str | None = None,
    owner: str | None = None,
    received: str | None = None,
) -> Any:
    """``value`` if it is an integer (not a bool) of at least ``minimum``, or None when allowed."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (minimum is not None and value < minimum)
    ):
        if expected is None:
            expected = "an integer" if minimum is None else f"an integer >= {minimum}"
            expected += " or None" if allow_none else ""
        raise reject(name, value, expected, owner=owner, received=received)
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    finite: bool = True,
    allow_none: bool = False,
    expected: str | None = None,
    owner: str | None = None,
) -> Any:
    """``value`` as a float if it is a real number (not a bool) within the bounds, or None when allowed.

    Args:
        minimum: the smallest value accepted.
        above: values must be strictly greater than this.
        below: values must be strictly smaller than this.
        finite: refuse NaN and infinities (NaN is refused in any case).
    """
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    ok = (
        ok
        and not (finite and not math.isfinite(value))
        and not (isinstance(value, float) and math.isnan(value))
    )
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above)
    ok = ok and (below is None or value < below)
    if not ok:
        if expected is None:
            bounds = [f">= {minimum}"] if minimum is not None else [f"> {above}"] if above is not None else []
            bounds += [f"< {below}"] if below is not None else []
            expected = " ".join(["a number", " and ".join(bounds)]).strip() + (
                " or None" if allow_none else ""
            )
        raise reject(name, value, expected, owner=owner)
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any], *, owner: str | None = None) -> Any:
    """``value`` if it is one of ``choices``."""
    options = list(choices)
    if value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise reject(name, value, f"one of {listed}", owner=owner)
    return value
