"""Checkpoint-format migration: the one door through which a state file of an older format becomes
a tree of today's format.

Every reader of a state file passes the loaded tree through :func:`migrate` before it looks inside;
nothing else in the library knows that older formats existed. The callbacks, the state tree and the
readers of the run directory see today's shapes only.

Format 1 (release 0.1.0) held ``model``, ``optimizer``, ``schedulers``, ``callbacks``, ``best`` and
``loop`` at the top, named each callback state by its class (``EarlyStopping``, ``EarlyStopping#2``
for the second), and saved three callbacks' best in a shape of its own:

- ``BestModelRestore``: ``monitor``, ``mode``, ``best_value`` and ``best_epoch`` beside ``best_weights``;
- ``EarlyStopping``: ``monitor``, ``mode`` and the best value as ``best``, without its epoch;
- the periodic savers (``ModelCheckpoint``...): ``best_value`` and ``best_epoch``, without a monitor;
- ``DelayCallback``: the states of its delayed callbacks, each in its own format-1 shape.

Format 2 (today) holds ``{"format", "serial", "reason", "classes", "nodes"}`` (and the run's
identity and world size), callback states under ``callbacks/<state_key>``, and every best as a
``{"monitor", "mode", "epoch", "value"}`` dict.

The migration lives in the store, the lowest layer that reads state files, because the read side
(``exp ls``, ``exp status``, ``exp clean``, testing saved weights) reads old checkpoints too and
never imports the training layers. Most of it is a function of the saved tree alone. What format 1
did not save, only the run knows: which callback a class name meant, the state key it has now,
and the monitor and mode of a periodic saver. So a run passes its live callbacks, which are asked
for their class, ``monitor``, ``mode`` and delayed ``callbacks`` only (nothing is imported from the
callbacks' layer).

Example:
    >>> tree = migrate(loaded)                          # readers: today's layout
    >>> tree = migrate(loaded, callbacks=keyed)         # a run: every callback state as well
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from experiment.errors import CheckpointError

#: The format of the state files written now.
TREE_FORMAT = 2
#: The formats :func:`migrate` reads.
READABLE_FORMATS = (1, 2)

#: The progress counters of a format-1 ``loop`` that are today's ``progress`` node.
_PROGRESS_KEYS = (
    "epochs_completed",
    "steps_in_epoch",
    "global_step",
    "stop_training",
    "history",
    "epoch_time",
)


def migrate(tree: Any, *, callbacks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A loaded state file of any readable format as a tree of today's format.

    Without ``callbacks``, a format-1 tree gets today's layout, but its callback states stay as that
    format saved them (under class names, in their old shapes), and the tree says so with
    ``"upgraded_from": 1``. Migrating that tree again with ``callbacks`` finishes the job: each
    state moves to the key of the callback it belongs to and takes today's shape, and the mark goes.
    A tree of today's format is returned as it is (a checkpoint written before the loader pass was
    counted gets the index of its pass).

    Args:
        tree: a state file as loaded (plain data and tensors).
        callbacks: the run's stateful callbacks by today's state key, in the run's order
            (``experiment.run.run_state.keyed_callbacks``). A format-1 tree named the same
            callbacks by class name, numbered in that order.

    Returns:
        A new tree; ``tree`` is not changed.

    Raises:
        CheckpointError: ``tree`` is not a state tree of a readable format.
    """
    if not isinstance(tree, dict) or tree.get("format") not in READABLE_FORMATS:
        found = f"format {tree.get('format')!r}" if isinstance(tree, dict) else f"a {type(tree).__name__}"
        raise CheckpointError(
            f"not a state checkpoint of format {' or '.join(map(str, READABLE_FORMATS))} (received {found})"
        )
    if tree["format"] == 1:
        tree = _layout_from_format_1(tree)
    tree = _with_pass_index(tree)
    if callbacks is not None and tree.get("upgraded_from") == 1:
        tree = _callbacks_from_format_1(tree, callbacks)
    return tree


def _layout_from_format_1(tree: dict[str, Any]) -> dict[str, Any]:
    """Today's nodes from format 1's top-level entries; callback states keep their keys and shapes."""
    loop, old_classes = tree["loop"], tree["classes"]
    nodes: dict[str, Any] = {"model": tree["model"], "optimizer": tree["optimizer"]}
    classes = {"model": old_classes["network"], "optimizer": old_classes["optimizer"]}
    for index, (state, name) in enumerate(zip(tree["schedulers"], old_classes["schedulers"])):
        nodes[f"schedulers/{index}"], classes[f"schedulers/{index}"] = state, name
    for key, state in tree["callbacks"].items():
        nodes[f"callbacks/{key}"] = state
    nodes["best"] = tree["best"]
    nodes["progress"] = {key: loop[key] for key in _PROGRESS_KEYS}
    nodes["rng"] = {"step": loop["rng"], "pass": loop["epoch_rng"], "pass_step": loop.get("pass_step", 0)}
    nodes["train_metrics"] = loop["train_metrics"] or {"samples": 0, "sums": None, "epoch_metrics": {}}
    return {
        "format": TREE_FORMAT,
        "serial": tree["serial"],
        "reason": tree["reason"],
        "classes": classes,
        "nodes": nodes,
        "upgraded_from": 1,
    }


def _with_pass_index(tree: dict[str, Any]) -> dict[str, Any]:
    """Give the random state of a checkpoint written before ``pass_index`` was saved the index of
    its loader pass, counted as one pass per epoch (those runs gave no sampler a pass index, so
    the count only has to go on consistently)."""
    rng = tree["nodes"].get("rng")
    if not isinstance(rng, dict) or "step" not in rng or "pass_index" in rng:
        return tree
    progress = tree["nodes"]["progress"]
    index = progress["epochs_completed"] - (0 if progress["steps_in_epoch"] else 1)
    return {**tree, "nodes": {**tree["nodes"], "rng": {**rng, "pass_index": index}}}


def _callbacks_from_format_1(tree: dict[str, Any], callbacks: Mapping[str, Any]) -> dict[str, Any]:
    """Each format-1 callback state under today's key of its callback, in today's shape. A state
    that no callback given now claims keeps its name (the state tree then reports it)."""
    epochs_completed = tree["nodes"]["progress"]["epochs_completed"]
    old_names = _numbered(type(callback).__name__ for callback in callbacks.values())
    moved = {
        f"callbacks/{old}": (f"callbacks/{key}", callback)
        for old, (key, callback) in zip(old_names, callbacks.items())
    }
    nodes: dict[str, Any] = {}
    for name, state in tree["nodes"].items():
        if name in moved:
            name, callback = moved[name]
            state = _callback_state(callback, state, epochs_completed)
        nodes[name] = state
    rest = {key: value for key, value in tree.items() if key != "upgraded_from"}
    return {**rest, "nodes": nodes}


def _numbered(names: Iterable[str]) -> list[str]:
    """Format 1's callback keys: the class name, ``Name#2`` for the second of a name, ``#3``..."""
    keys: list[str] = []
    for base in names:
        key, count = base, 1
        while key in keys:
            count += 1
            key = f"{base}#{count}"
        keys.append(key)
    return keys


def _callback_state(callback: Any, state: Any, epochs_completed: int) -> Any:
    """``state``, saved by format 1 for ``callback``, in today's shape (unchanged where format 1
    already had it). The callback's class or one of its bases says which shape it had."""
    if not isinstance(state, dict):
        return state  # the callback's own check reports it
    for cls in type(callback).__mro__:
        upgrade = _FORMAT_1_SHAPES.get(cls.__name__)
        if upgrade is not None:
            return upgrade(callback, state, epochs_completed)
    return state


def _best_model_restore(callback: Any, state: dict[str, Any], epochs_completed: int) -> dict[str, Any]:
    if "best" in state or "monitor" not in state:
        return state
    best = {
        "monitor": state["monitor"],
        "mode": state.get("mode"),
        "epoch": state.get("best_epoch"),
        "value": state.get("best_value"),
    }
    return {"best": best, "best_weights": state.get("best_weights")}


def _early_stopping(callback: Any, state: dict[str, Any], epochs_completed: int) -> dict[str, Any]:
    """Format 1 kept no epoch of the best: it is ``wait`` epochs before the last completed one
    (the callback counts, since its best, every epoch it sees)."""
    if "monitor" not in state or isinstance(state.get("best"), dict):
        return state
    value, wait = state.get("best"), state.get("wait")
    epoch = epochs_completed - wait if value is not None and isinstance(wait, int) else None
    best = {"monitor": state["monitor"], "mode": state.get("mode"), "epoch": epoch, "value": value}
    return {"best": best, **{key: state[key] for key in ("wait", "stopped_epoch") if key in state}}


def _periodic_save(callback: Any, state: dict[str, Any], epochs_completed: int) -> dict[str, Any]:
    """Format 1 saved no monitor: the one given now is assumed, as that format did."""
    if "best" in state or "best_value" not in state:
        return state
    best = {
        "monitor": callback.monitor,
        "mode": callback.mode,
        "epoch": state.get("best_epoch"),
        "value": state["best_value"],
    }
    rest = {key: value for key, value in state.items() if key not in ("best_value", "best_epoch")}
    return {"best": best, **rest}


def _delay(callback: Any, state: dict[str, Any], epochs_completed: int) -> dict[str, Any]:
    """The delayed callbacks' states, each migrated for its callback (matched by position)."""
    inner = getattr(getattr(callback, "callbacks", None), "callbacks", None)
    saved = state.get("callbacks")
    if not isinstance(inner, list) or not isinstance(saved, list) or len(inner) != len(saved):
        return state  # the callback's own check reports the mismatch
    states = [
        None if inner_state is None else _callback_state(inner_callback, inner_state, epochs_completed)
        for inner_callback, inner_state in zip(inner, saved)
    ]
    return {**state, "callbacks": states}


#: The callbacks whose state format 1 saved in another shape, by the name of their class.
_FORMAT_1_SHAPES: dict[str, Callable[[Any, dict[str, Any], int], dict[str, Any]]] = {
    "BestModelRestore": _best_model_restore,
    "EarlyStopping": _early_stopping,
    "PeriodicSaveCallback": _periodic_save,
    "DelayCallback": _delay,
}
