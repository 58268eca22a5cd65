"""An optimizer's state keyed by index and by parameter name, one into the other."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from experiment import StateMismatchError
from experiment.state.optimizer_names import indexed, named, parameter_names


def stepped() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(
        [{"params": network[2].parameters(), "lr": 0.1}, {"params": network[0].parameters()}], lr=0.01
    )
    network(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    return network, optimizer


def test_parameter_names_follow_the_optimizer_groups_order():
    network, optimizer = stepped()
    assert parameter_names(network, optimizer) == ["2.weight", "2.bias", "0.weight", "0.bias"]


def test_named_then_indexed_gives_back_the_optimizer_state():
    network, optimizer = stepped()
    names = parameter_names(network, optimizer)
    state = optimizer.state_dict()
    by_name = named(state, names)
    assert sorted(by_name["state"]) == sorted(names)
    assert by_name["param_groups"][0]["params"] == ["2.weight", "2.bias"]
    assert indexed(by_name, names) == state


def test_indexed_refuses_names_the_optimizer_has_not():
    network, optimizer = stepped()
    by_name = named(optimizer.state_dict(), parameter_names(network, optimizer))
    with pytest.raises(
        StateMismatchError, match=r"names the parameters \['2\.bias', '2\.weight'\], which the"
    ):
        indexed(by_name, ["0.weight", "0.bias"])


def test_named_refuses_indices_beyond_the_optimizer():
    network, optimizer = stepped()
    with pytest.raises(StateMismatchError, match=r"parameter indices \[2, 3\]; the optimizer has 2"):
        named(optimizer.state_dict(), ["0.weight", "0.bias"])


def test_parameter_names_refuses_an_optimizer_of_other_parameters():
    network, _ = stepped()
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(StateMismatchError, match=r"holds 2 parameter\(s\) that are not the network's"):
        parameter_names(network, other)
