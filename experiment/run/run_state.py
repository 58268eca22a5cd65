"""The state tree of a training run: which objects are saved with each commit, under which names.

``model``, ``optimizer`` (its class checked), ``schedulers/<i>`` (compared as a list),
``callbacks/<state_key>`` (stateful callbacks; they may come and go between runs), ``best`` (the
best-epoch tracker), ``progress``, ``rng``, ``train_metrics`` (the loop's running sums), in
"16-mixed" precision ``scaler`` (the GradScaler) and with ``elastic="exact"`` ``summation_grid``
(:class:`~experiment.training.exact_sum.SummationGrid`).
A feature that must survive a kill adds a node here. In a distributed run, the nodes of
:data:`PER_RANK_NODES` hold one state per rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiment.state.best_tracker import BestTracker
from experiment.state.rng import RandomState
from experiment.state.stateful import Stateful
from experiment.state.torch_nodes import plain_module
from experiment.state.tree import StateTree
from experiment.training.loop import TrainingLoop

#: The nodes that differ between the ranks of a distributed run: a commit saves every rank's.
PER_RANK_NODES = ("rng", "train_metrics")


def run_state_tree(
    loop: TrainingLoop,
    rng: RandomState,
    *,
    schedulers: Sequence[Any],
    callbacks: Sequence[Any],
    best: BestTracker,
    exact: bool = False,
) -> StateTree:
    """The named state of a run trained by ``loop``, with ``rng`` (which knows the run's loaders);
    ``exact``: the run is ``elastic="exact"``."""
    tree = StateTree()
    network = plain_module(loop.network)  # a compiled network is saved as the module it wraps
    strategy = loop.strategy  # full state dicts, or (with a sharding strategy) shards
    tree.add("model", strategy.model_node(loop.network), class_name=type(network).__name__)
    tree.add(
        "optimizer",
        strategy.optimizer_node(loop.optimizer),
        check_class=True,
        class_name=type(loop.optimizer).__name__,
    )
    tree.label_group("schedulers", "LR schedulers")
    for index, scheduler in enumerate(schedulers):
        tree.add(f"schedulers/{index}", scheduler)
    tree.optional_family("callbacks")
    for key, callback in keyed_callbacks(callbacks).items():
        tree.add(f"callbacks/{key}", callback)
    tree.add("best", best)
    tree.add("progress", loop.progress)
    tree.add("rng", rng)
    tree.add("train_metrics", loop.train_metrics)
    if loop.precision.scaler is not None:
        tree.add("scaler", loop.precision.scaler)
    if exact:
        tree.add("summation_grid", loop.summation_grid)
    return tree


def state_key(callback: Any) -> str:
    """The name a callback's state is saved under: its ``state_key``, else its qualified class name."""
    key = getattr(callback, "state_key", None)
    return (
        key if isinstance(key, str) and key else f"{type(callback).__module__}.{type(callback).__qualname__}"
    )


def keyed_callbacks(callbacks: Sequence[Any]) -> dict[str, Any]:
    """The stateful callbacks by state key; the second of a key gets ``#2``, the third ``#3``..."""
    return _numbered([callback for callback in callbacks if isinstance(callback, Stateful)], state_key)


def _numbered(items: list[Any], key_of: Any) -> dict[str, Any]:
    keyed: dict[str, Any] = {}
    for item in items:
        base = key_of(item)
        key, count = base, 1
        while key in keyed:
            count += 1
            key = f"{base}#{count}"
        keyed[key] = item
    return keyed
