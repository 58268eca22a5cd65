"""The strategy chosen for a run: its name, what it trains through, its state nodes, its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from experiment import ConfigurationError, Experiment
from experiment.training.distributed import SINGLE, World
from experiment.training.strategy import DataParallel, Strategy, choose_strategy
from tests.support.training import make_data, make_network

TWO_RANKS = World(size=2, rank=1)


def test_strategy_auto_is_one_process_outside_torchrun_and_ddp_under_it():
    network = nn.Linear(2, 2)
    single, bare = choose_strategy("auto", SINGLE, network)
    assert (type(single), single.name, bare) == (Strategy, "single", network)
    ddp, bare = choose_strategy("auto", TWO_RANKS, network)
    assert (type(ddp), ddp.name, bare, ddp.writes) == (DataParallel, "ddp", network, False)


def test_strategy_single_trains_through_the_network_itself():
    network = nn.Linear(2, 2)
    with Strategy(SINGLE).training(network, torch.device("cpu")) as module:
        assert module is network


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_strategy_model_node_saves_a_compiled_network_as_the_module_it_wraps():
    network = nn.Linear(2, 2)
    compiled = torch.compile(network)
    node = Strategy(SINGLE).model_node(compiled)
    assert list(node.state_dict()) == ["weight", "bias"]  # no _orig_mod. prefix


@pytest.mark.parametrize(
    ("name", "world", "match"),
    [
        ("fsdp", SINGLE, r"strategy='fsdp' shards the network over several processes; this one runs alone"),
        ("zero", SINGLE, r"strategy: received 'zero'.*expected 'auto', 'single', 'ddp' or 'fsdp'"),
        ("single", TWO_RANKS, r"strategy='single' under torchrun \(2 processes\)"),
        ("ddp", SINGLE, r"strategy='ddp' needs several processes.*torchrun"),
    ],
)
def test_strategy_refusals_say_what_to_pass(name, world, match):
    with pytest.raises(ConfigurationError, match=match):
        choose_strategy(name, world, nn.Linear(2, 2))


def test_strategy_fsdp_refuses_a_network_in_ddp_and_fp16_before_sharding():
    """Checked before the process group is needed: the DDP wrapper and "16-mixed" (whose GradScaler
    would decide to skip a step from one rank's shard of the gradients)."""
    wrapper = nn.Module.__new__(nn.parallel.DistributedDataParallel)
    nn.Module.__init__(wrapper)
    wrapper.module = nn.Linear(2, 2)
    with pytest.raises(
        ConfigurationError, match=r"strategy='fsdp': received a network inside DistributedDataParallel"
    ):
        choose_strategy("fsdp", TWO_RANKS, wrapper)
    with pytest.raises(ConfigurationError, match=r"precision='16-mixed' with strategy='fsdp'.*bf16-mixed"):
        choose_strategy("fsdp", TWO_RANKS, nn.Linear(2, 2), precision="16-mixed")


def test_experiment_records_its_strategy_and_refuses_an_unknown_one_before_writing(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="strategy"):
        Experiment(tmp_path / "bad", make_network(), loss_function="cross_entropy", strategy="ddp")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    exp = Experiment(tmp_path / "run", make_network(), loss_function="cross_entropy", strategy="single")
    exp.train(make_data(), epochs=1, progress=False)
    created = json.loads((tmp_path / "run" / "experiment.json").read_text())["created_with"]
    assert created["strategy"] == "single"
