"""One commit as the policy hands it to a backend, and the per-rank layout of its nodes.

A commit's state is ``{"format", "serial", "reason", "run_id", "world_size", "classes", "nodes"}``
with one entry per node of the run's state tree, as plain data and tensors (:func:`plain_nodes`).
The policy hands each backend this rank's own state of the nodes of
:data:`~experiment.run.run_state.PER_RANK_NODES`; in a distributed run the backend gathers every
rank's to rank 0 (:meth:`Commit.gathered`, a collective) on the thread and process group where its
writes happen; on resume each rank takes its own (:func:`own_share`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from experiment.errors import NonFiniteStateError
from experiment.run.run_state import PER_RANK_NODES
from experiment.state.plain import plain_state
from experiment.state.torch_nodes import non_finite_in
from experiment.state.tree import StateTree
from experiment.training.distributed import World


@dataclasses.dataclass(frozen=True)
class Commit:
    """What a backend makes durable at one commit.

    Attributes:
        state: the tree to write (see the module docstring): as the policy makes it, its per-rank
            nodes hold this rank's state; once :meth:`gathered`, every rank's on rank 0 and none on
            the others.
        best_epoch: the best epoch this state refers to: its best weights are kept while the
            commit is kept (None before any epoch).
        best_weights: an epoch whose weights (the ``model`` node) the backend writes as that
            epoch's best weights (None: no new best at this commit). This commit ends that epoch,
            so its state holds them: a backend may write them after the state, durably before the
            next commit and before its wait returns, and must write them on resume from a state
            whose best file is missing.
        non_finite_message: refuse a state that holds NaN or infinity with a NonFiniteStateError of
            this message, with ``{culprit}`` (the node) and ``{last}`` (the name of the newest
            durable checkpoint, or "none yet") filled in; None: not checked.
    """

    state: dict[str, Any]
    best_epoch: int | None = None
    best_weights: int | None = None
    non_finite_message: str | None = None

    @property
    def serial(self) -> int:
        return int(self.state["serial"])

    @property
    def reason(self) -> str:
        return str(self.state["reason"])

    def gathered(self, world: World) -> Commit:
        """This commit with each per-rank node as ``{"world_size", "ranks": [state of rank 0, of
        rank 1, ...]}`` (``ranks`` None on the other ranks): a collective on ``world``'s control
        group, which every rank calls for the same commit; itself in one process."""
        if not world.distributed:
            return self
        nodes = dict(self.state["nodes"])
        gathered = world.gather({name: nodes[name] for name in PER_RANK_NODES})
        for name in PER_RANK_NODES:
            ranks = None if gathered is None else [share[name] for share in gathered]
            nodes[name] = {"world_size": world.size, "ranks": ranks}
        return dataclasses.replace(self, state={**self.state, "nodes": nodes})

    def refuse_non_finite(self, last: Callable[[], str | None]) -> None:
        """Raise NonFiniteStateError if the state holds NaN or infinity (and is to be checked);
        ``last`` names the newest durable checkpoint (asked only then).

        Raises:
            NonFiniteStateError: nothing of this commit may be written.
        """
        if self.non_finite_message is None:
            return
        culprit = non_finite_in(self.state["nodes"])
        if culprit is not None:
            message = self.non_finite_message.format(culprit=culprit, last=last() or "none yet")
            raise NonFiniteStateError(message)


def plain_nodes(tree: StateTree) -> dict[str, Any]:
    """Every node's state as plain data (this rank's own, for the per-rank nodes).

    Raises:
        ConfigurationError: a node's state is not plain data and tensors.
    """
    saved = tree.state_dict()["nodes"]
    return {name: plain_state(state, f"the state of {name!r}") for name, state in saved.items()}


def own_share(saved: dict[str, Any], rank: int) -> dict[str, Any]:
    """A saved tree with the entry of ``rank`` in place of each per-rank node."""
    nodes = dict(saved["nodes"])
    for name in PER_RANK_NODES:
        state = nodes.get(name)
        if isinstance(state, dict) and "ranks" in state and "world_size" in state:
            nodes[name] = state["ranks"][rank]
    return {**saved, "nodes": nodes}
