"""Checking a callback's saved state before loading any of it.

A callback that keeps memory of the run lists what makes a saved state unfit for it in
``state_problems(state) -> list[str]`` (see :class:`~experiment.state.stateful.ChecksState`); the
run's state tree asks every node before it loads any. A ``load_state_dict`` called directly checks
the same way through :func:`checked_load`, so that it too raises one error naming every problem and
changes nothing, instead of failing halfway on a missing key.

Example:
    >>> class Counter(Callback):
    ...     def state_problems(self, state):
    ...         return missing_state_keys("Counter", state, ("count",))
    ...
    ...     @checked_load
    ...     def load_state_dict(self, state):
    ...         self.count = int(state["count"])
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from experiment.errors import StateMismatchError
from experiment.state.stateful import ChecksState

Node = TypeVar("Node", bound=ChecksState)


def missing_state_keys(owner: str, state: Any, required: Iterable[str]) -> list[str]:
    """The problem of a saved ``state`` that is not a dict or lacks some ``required`` keys (or none)."""
    if not isinstance(state, dict):
        return [f"{owner}: the saved state is a {type(state).__name__}; expected a dict"]
    missing = [key for key in required if key not in state]
    if missing:
        return [f"{owner}: the saved state lacks {missing} (it holds {sorted(map(str, state))})"]
    return []


def check_saved_state(node: ChecksState, state: Any, *, source: str | os.PathLike[str] | None = None) -> None:
    """Raise when ``node.state_problems(state)`` finds any problem; change nothing.

    Args:
        source: the file the state was read from, named at the start of the message.

    Raises:
        StateMismatchError: every problem found, joined by ``"; "``.
    """
    problems = node.state_problems(state)
    if problems:
        prefix = "" if source is None else f"{source}: "
        raise StateMismatchError(prefix + "; ".join(problems))


def checked_load(load: Callable[[Node, Any], None]) -> Callable[[Node, Any], None]:
    """Make a ``load_state_dict`` method check the whole state (its object's ``state_problems``)
    before it loads any of it.

    Raises (from the decorated method):
        StateMismatchError: the state is unfit; the method did not run, so nothing changed.
    """

    @functools.wraps(load)
    def load_state_dict(self: Node, state: Any) -> None:
        check_saved_state(self, state)
        load(self, state)

    return load_state_dict
