"""The named state tree of a run: every object with memory of the run, saved and loaded as one unit.

A node is a :class:`~experiment.state.stateful.Stateful` registered under a name: "model",
"optimizer", "schedulers/0", "callbacks/<state_key>", "best", "progress", "rng", "train_metrics".
Names with a slash form a group ("schedulers"), whose members are compared as a list.

Saving asks each node for plain data and tensors. Loading checks every node against the saved
tree first (classes, missing and unexpected nodes, each node's own ``state_problems``) and applies
nothing unless all pass; :class:`StateMismatchError` then lists every problem.

Example:
    >>> tree = StateTree()
    >>> tree.add("model", ModuleNode(network))
    >>> tree.add("progress", progress)
    >>> saved = tree.state_dict()
    >>> tree.load_state_dict(saved)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Iterable
from typing import Any

from experiment.errors import ConfigurationError, StateMismatchError
from experiment.state.stateful import ChecksState, PreparesCommit, Stateful


@dataclasses.dataclass
class _Entry:
    node: Stateful
    class_name: str
    optional: bool  # may be missing from a saved tree (it then starts fresh)
    check_class: bool


class StateTree:
    """An ordered mapping from names to Stateful nodes, saved and restored together."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._group_labels: dict[str, str] = {}
        self._optional_families: set[str] = set()

    def add(
        self,
        name: str,
        node: Stateful,
        *,
        optional: bool = False,
        check_class: bool = False,
        class_name: str | None = None,
    ) -> None:
        """Register ``node`` under ``name``.

        Args:
            optional: a saved tree may lack it (a callback added since); it then starts fresh, and
                a saved state of this kind without a live node is ignored with a warning.
            check_class: refuse a saved state written by an object of another class.
            class_name: the class recorded for the node (default: the node's own class name).

        Raises:
            ConfigurationError: ``name`` is taken or ``node`` is not Stateful.
        """
        if name in self._entries:
            raise ConfigurationError(f"state tree: received a second node named {name!r}.")
        if not isinstance(node, Stateful):
            raise ConfigurationError(
                f"state tree: received {type(node).__name__} for {name!r}; expected an object with "
                "state_dict() and load_state_dict()."
            )
        recorded = class_name or type(node).__name__
        self._entries[name] = _Entry(node, recorded, optional, check_class)

    def label_group(self, prefix: str, label: str) -> None:
        """Name a group in messages: ``label_group("schedulers", "LR schedulers")``."""
        self._group_labels[prefix] = label

    def optional_family(self, prefix: str) -> None:
        """Members of ``prefix`` ("callbacks") may come and go between runs: a new one starts fresh,
        a saved one without a live member is ignored; both with a warning, never a mismatch."""
        self._optional_families.add(prefix)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> Stateful:
        return self._entries[name].node

    def names(self) -> list[str]:
        return list(self._entries)

    # -------------------------------------------------------------------------------- saving
    def before_commit(self) -> None:
        """Let every node that needs it prepare for a commit (flush a buffer, read a clock)."""
        for entry in self._entries.values():
            if isinstance(entry.node, PreparesCommit):
                entry.node.before_commit()

    def classes(self) -> dict[str, str]:
        return {name: entry.class_name for name, entry in self._entries.items()}

    def state_dict(self) -> dict[str, Any]:
        """``{"classes": {name: class}, "nodes": {name: state}}``, without side effects."""
        return {
            "classes": self.classes(),
            "nodes": {name: entry.node.state_dict() for name, entry in self._entries.items()},
        }

    # ------------------------------------------------------------------------------- loading
    def problems(self, saved: dict[str, Any], *, unchecked: Iterable[str] = ()) -> list[str]:
        """Every way the saved tree ``saved`` does not fit the live nodes; changes nothing.

        Args:
            unchecked: nodes whose own ``state_problems`` are not asked (their state is loaded but
                will not be used, such as the random state of a run that is over).
        """
        nodes, classes = saved["nodes"], saved["classes"]
        skipped = set(unchecked)
        problems, class_problems = self._group_problems(classes), []
        for name, entry in self._entries.items():
            if name not in nodes:
                if not (entry.optional or self._in_group(name) or self._optional_kind(name)):
                    problems.append(f"the checkpoint holds no state for {name!r}")
                continue
            if entry.check_class and classes.get(name) != entry.class_name:
                class_problems.append(
                    f"the {name} is {entry.class_name} now, {classes.get(name)} when the run was created"
                )
                continue
            if isinstance(entry.node, ChecksState) and name not in skipped:
                problems += entry.node.state_problems(nodes[name])
        for name in nodes:
            known = name in self._entries or self._in_group(name) or self._optional_kind(name)
            if not known:
                problems.append(f"the checkpoint holds state for {name!r}, which nothing takes now")
        return class_problems + problems  # another class explains the rest: it comes first

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Check the whole saved tree, then load every node that has a saved state.

        Raises:
            StateMismatchError: a node does not fit; nothing was loaded.
        """
        problems = self.problems(saved)
        if problems:
            raise StateMismatchError("the saved state does not fit:\n  - " + "\n  - ".join(problems))
        self.warn_about_optional(saved)
        self.apply(saved)

    def apply(self, saved: dict[str, Any]) -> None:
        """Load every node that has a saved state (after :meth:`problems` found none).

        Nodes that cannot check a state beforehand are loaded first, each after a copy of its
        current state is taken: if one raises, those already loaded are put back, so that nothing
        is applied. The checked nodes (network, optimizer, ...) are loaded last.

        Raises:
            StateMismatchError: a node refused its saved state; nothing was loaded.
        """
        nodes = saved["nodes"]
        names = [name for name in self._entries if name in nodes]
        unchecked = [name for name in names if not isinstance(self._entries[name].node, ChecksState)]
        backups: dict[str, Any] = {}
        for name in unchecked:
            node = self._entries[name].node
            try:
                backups[name] = copy.deepcopy(node.state_dict())
                node.load_state_dict(nodes[name])
            except Exception as error:
                self._put_back(backups, failed=name)
                raise StateMismatchError(
                    f"the saved state of {name!r} could not be loaded ({type(error).__name__}: {error}); "
                    "nothing was loaded"
                ) from error
        for name in names:
            if name not in backups:
                self._entries[name].node.load_state_dict(nodes[name])

    def _put_back(self, backups: dict[str, Any], *, failed: str) -> None:
        for name, state in backups.items():
            if name != failed:
                self._entries[name].node.load_state_dict(state)
                continue
            with contextlib.suppress(Exception):  # best effort: the node that refused its state
                self._entries[name].node.load_state_dict(state)

    def warn_about_optional(self, saved: dict[str, Any], where: str = "the checkpoint") -> None:
        """Warn about optional nodes that start fresh and saved states that nothing takes."""
        nodes = saved["nodes"]
        fresh = sorted(
            n for n, e in self._entries.items() if (e.optional or self._optional_kind(n)) and n not in nodes
        )
        unused = sorted(n for n in nodes if n not in self._entries and self._optional_kind(n))
        if fresh or unused:
            warnings.warn(
                f"State in {where}: new nodes start fresh {fresh}; saved states that nothing takes "
                f"now are ignored {unused}.",
                stacklevel=3,
            )

    # ------------------------------------------------------------------------------- helpers
    def _group_problems(self, saved_classes: dict[str, str]) -> list[str]:
        problems = []
        for prefix, label in self._group_labels.items():
            live = [e.class_name for n, e in self._entries.items() if n.startswith(f"{prefix}/")]
            old = [c for n, c in saved_classes.items() if n.startswith(f"{prefix}/")]
            if live != old:
                problems.append(f"the {label} are {live} now but were {old}")
        return problems

    def _in_group(self, name: str) -> bool:
        return name.partition("/")[0] in self._group_labels and "/" in name

    def _optional_kind(self, name: str) -> bool:
        return "/" in name and name.partition("/")[0] in self._optional_families
