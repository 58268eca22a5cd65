"""The named state tree: saving, validating the whole tree before loading, and loading all or nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from experiment.errors import ConfigurationError, StateMismatchError
from experiment.state.progress import Progress
from experiment.state.torch_nodes import ModuleNode, OptimizerNode
from experiment.state.tree import StateTree


class Counter:
    """A node with a count; refuses negative counts when asked first."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def state_dict(self):
        return {"count": self.count}

    def state_problems(self, state_dict):
        return [f"count {state_dict['count']} is negative"] if state_dict["count"] < 0 else []

    def load_state_dict(self, state_dict):
        self.count = state_dict["count"]


class Fragile:
    """A node that cannot check a state beforehand and raises while loading one it dislikes."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state_dict):
        if state_dict["value"] == "bad":
            raise ValueError("value must be a number")
        self.value = state_dict["value"]


def _tree(network: nn.Module, *nodes: tuple[str, object], optional: bool = False) -> StateTree:
    tree = StateTree()
    tree.add("model", ModuleNode(network), class_name=type(network).__name__)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    tree.add("optimizer", OptimizerNode(optimizer), check_class=True, class_name="SGD")
    tree.optional_family("callbacks")
    for name, node in nodes:
        tree.add(name, node, optional=optional)
    return tree


def test_tree_round_trip_restores_every_node():
    torch.manual_seed(0)
    source = _tree(nn.Linear(3, 2), ("counter", Counter(7)), ("callbacks/a.Fragile", Fragile(3)))
    saved = source.state_dict()
    assert saved["classes"] == {
        "model": "Linear",
        "optimizer": "SGD",
        "counter": "Counter",
        "callbacks/a.Fragile": "Fragile",
    }
    torch.manual_seed(1)
    network, counter, fragile = nn.Linear(3, 2), Counter(), Fragile()
    _tree(network, ("counter", counter), ("callbacks/a.Fragile", fragile)).load_state_dict(saved)
    assert torch.equal(network.weight, source["model"].network.weight)
    assert (counter.count, fragile.value) == (7, 3)


def test_tree_lists_every_problem_and_loads_nothing():
    saved = _tree(nn.Linear(3, 2), ("counter", Counter(-1))).state_dict()
    network, counter = nn.Linear(4, 2), Counter(5)
    before = network.weight.clone()
    tree = _tree(network, ("counter", counter), ("progress", Progress()))
    with pytest.raises(StateMismatchError) as raised:
        tree.load_state_dict(saved)
    message = str(raised.value)
    assert "network key 'weight' has shape (2, 3) in the checkpoint but (2, 4) now" in message
    assert "count -1 is negative" in message
    assert "the checkpoint holds no state for 'progress'" in message
    assert torch.equal(network.weight, before) and counter.count == 5


def test_tree_class_change_of_a_checked_node_is_a_problem():
    saved = _tree(nn.Linear(3, 2)).state_dict()
    saved["classes"]["optimizer"] = "Adam"
    with pytest.raises(StateMismatchError, match="the optimizer is SGD now, Adam when the run was created"):
        _tree(nn.Linear(3, 2)).load_state_dict(saved)


def test_tree_unknown_saved_node_is_a_problem_unless_its_family_is_optional():
    saved = _tree(nn.Linear(3, 2), ("scaler", Counter(1)), ("callbacks/x.Gone", Counter(2))).state_dict()
    tree = _tree(nn.Linear(3, 2))
    problems = tree.problems(saved)
    assert problems == ["the checkpoint holds state for 'scaler', which nothing takes now"]


def test_tree_new_and_gone_callbacks_start_fresh_with_a_warning():
    saved = _tree(nn.Linear(3, 2), ("callbacks/x.Gone", Counter(2))).state_dict()
    fresh = Counter(9)
    tree = _tree(nn.Linear(3, 2), ("callbacks/x.New", fresh))
    with pytest.warns(
        UserWarning, match=r"start fresh \['callbacks/x.New'\].*ignored \['callbacks/x.Gone'\]"
    ):
        tree.load_state_dict(saved)
    assert fresh.count == 9


def test_tree_node_that_raises_while_loading_puts_back_those_loaded_before_it():
    network = nn.Linear(3, 2)
    saved = _tree(network, ("callbacks/a", Fragile(1)), ("callbacks/b", Fragile(2))).state_dict()
    saved["nodes"]["callbacks/b"] = {"value": "bad"}
    first, second = Fragile(10), Fragile(20)
    live_network = nn.Linear(3, 2)
    before = live_network.weight.clone()
    tree = _tree(live_network, ("callbacks/a", first), ("callbacks/b", second))
    with pytest.raises(
        StateMismatchError, match=r"saved state of 'callbacks/b' could not be loaded .*nothing was loaded"
    ):
        tree.load_state_dict(saved)
    assert (first.value, second.value) == (10, 20)
    assert torch.equal(live_network.weight, before)


def test_tree_group_is_compared_as_a_list():
    network = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    tree = _tree(network)
    tree.label_group("schedulers", "LR schedulers")
    tree.add("schedulers/0", torch.optim.lr_scheduler.StepLR(optimizer, 1))
    saved = tree.state_dict()
    empty = _tree(nn.Linear(3, 2))
    empty.label_group("schedulers", "LR schedulers")
    assert empty.problems(saved) == ["the LR schedulers are [] now but were ['StepLR']"]


def test_tree_refuses_two_nodes_of_one_name_and_objects_without_state():
    tree = StateTree()
    tree.add("counter", Counter())
    with pytest.raises(ConfigurationError, match="a second node named 'counter'"):
        tree.add("counter", Counter())
    with pytest.raises(
        ConfigurationError, match="received int for 'number'; expected an object with state_dict"
    ):
        tree.add("number", 3)  # type: ignore[arg-type]


def test_tree_before_commit_reaches_the_nodes_that_need_it():
    progress = Progress()
    progress.steps_in_epoch = 1
    progress.start_clock(fresh=True)
    tree = StateTree()
    tree.add("progress", progress)
    assert tree.state_dict()["nodes"]["progress"]["epoch_time"] == 0.0  # state_dict reads no clock
    tree.before_commit()
    assert tree.state_dict()["nodes"]["progress"]["epoch_time"] > 0.0
