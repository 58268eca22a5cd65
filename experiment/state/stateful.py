"""The protocols of the nodes of a run's state tree.

Every object with memory of the run is a :class:`Stateful` node. A node may also implement

- ``state_problems(state) -> list[str]``: what makes a saved ``state`` unfit for this object
  (checked for every node before any node is loaded; see :class:`ChecksState`);
- ``before_commit() -> None``: work that must happen just before a commit writes the state
  (flushing a buffer, stopping a clock; see :class:`PreparesCommit`). ``state_dict()`` itself has
  no side effects.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Stateful(Protocol):
    """Anything with memory of the run: saved with each checkpoint, restored on resume."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@runtime_checkable
class ChecksState(Protocol):
    """A node that can tell, without changing anything, why a saved state does not fit it."""

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]: ...


@runtime_checkable
class PreparesCommit(Protocol):
    """A node with work to do just before its state is taken for a commit."""

    def before_commit(self) -> None: ...
