"""``elastic="exact"`` in one process: the groups each rank steps, resume, and the refusals
(the sum itself: test_exact_sum.py; tests/distributed/test_elastic.py checks bit-identity across
1, 2 and 3 processes)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from experiment import Experiment
from experiment.errors import ConfigurationError
from experiment.run.elastic import elastic_layout
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from experiment.training.distributed import World
from experiment.training.elastic_data import ElasticBatchSampler
from experiment.training.exact_step import group_seed
from experiment.training.strategy import choose_strategy
from tests.support.training import Interrupt, InterruptAt, make_data, make_network


def test_exact_step_leaves_a_parameter_no_group_reached_without_gradient(tmp_path):
    class Partly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.used(x)

    network = Partly()
    before = network.unused.weight.detach().clone()
    exp = Experiment(
        tmp_path,
        network,
        optimizer="adamw",
        loss_function="cross_entropy",
        elastic="exact",
        tensorboard=False,
    )
    exp.train(make_data(24), epochs=1, batch_size=8, progress=False)
    assert network.unused.weight.grad is None
    assert torch.equal(network.unused.weight, before)  # AdamW's weight decay skips it, as without groups


def test_group_seed_differs_per_group_batch_and_pass():
    seeds = {
        group_seed(1, epoch, index, group) for epoch in range(2) for index in range(3) for group in range(4)
    }
    assert len(seeds) == 24


@pytest.mark.parametrize("world", [1, 2, 3, 6])
def test_exact_groups_cover_each_global_batch_once_whatever_the_world_size(world):
    found = []
    for rank in range(world):
        sampler = ElasticBatchSampler(23, global_batch=10, world_size=world, rank=rank, seed=0, groups=6)
        start, _ = sampler.bounds(3)  # the last batch: 3 samples, so 3 of the 6 groups are empty
        found += [(group, start + a, start + b, weight) for group, a, b, weight in sampler.groups_of(2)]
    assert found == [(1, 0, 1, 1 / 3), (3, 1, 2, 1 / 3), (5, 2, 3, 1 / 3)]


def test_exact_ranks_take_whole_groups():
    parts = [
        list(ElasticBatchSampler(12, global_batch=12, world_size=4, rank=r, seed=0, groups=6, shuffle=False))
        for r in range(4)
    ]
    assert [p[0] for p in parts] == [[0, 1], [2, 3, 4, 5], [6, 7], [8, 9, 10, 11]]


def test_exact_layout_refuses_more_processes_than_groups(tmp_path):
    with pytest.raises(ConfigurationError, match=r"holds 2 group\(s\) and this launch has 3 processes"):
        elastic_layout(RunDirectory(tmp_path / "run"), "exact", None, 8, World(3, 0), groups=2)


@pytest.mark.parametrize(
    ("batch_size", "processes", "groups"),
    [(8, 2, 2), (255, 2, 2), (256, 2, 2), (512, 2, 4), (1024, 3, 12), (4096, 2, 8), (1, 1, 1)],
)
def test_exact_layout_defaults_to_a_group_per_256_samples_one_to_four_per_process(
    tmp_path, batch_size, processes, groups
):
    directory = RunDirectory(tmp_path / "run")
    layout = elastic_layout(directory, "exact", None, batch_size, World(processes, 0))
    assert layout.groups == groups


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"elastic": True, "elastic_groups": 4},
            "elastic_groups: received 4; expected None unless elastic='exact'",
        ),
        (
            {"elastic": "exact", "elastic_groups": 0},
            "elastic_groups: received 0; expected a positive integer",
        ),
        ({"elastic": "exact", "precision": "16-mixed"}, "elastic='exact': received precision='16-mixed'"),
        ({"elastic": "exact", "train_step": lambda trainer, batch: 0.0}, "received a custom train_step"),
    ],
)
def test_exact_refuses_what_it_cannot_run(tmp_path, options, match):
    with pytest.raises(ConfigurationError, match=match):
        Experiment(tmp_path, make_network(), loss_function="cross_entropy", **options)


def test_exact_run_in_one_process_resumes_bit_identically(tmp_path):
    def train(directory, stop=None):
        exp = Experiment(
            directory,
            make_network(),
            optimizer="adamw",
            loss_function="cross_entropy",
            elastic="exact",
            elastic_groups=3,
            tensorboard=False,
        )
        with contextlib.suppress(Interrupt):
            exp.train(
                make_data(40),
                epochs=2,
                batch_size=6,
                checkpoint_every=1,
                progress=False,
                callbacks=[InterruptAt(stop)] if stop else [],
            )
        return exp

    whole = train(tmp_path / "whole")
    cut = train(tmp_path / "cut", stop=4)
    tree, _ = load_newest_state(RunDirectory(tmp_path / "cut"))
    assert tree["nodes"]["summation_grid"] == {"exponents": cut.loop.summation_grid.exponents}
    assert len(cut.loop.summation_grid.exponents) == 4  # two layers' weights and biases
    resumed = train(tmp_path / "cut")
    for key, value in whole.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key
    assert resumed.loop.summation_grid.exponents == whole.loop.summation_grid.exponents


def test_exact_refuses_a_network_in_the_user_ddp():
    wrapper = torch.nn.Module.__new__(torch.nn.parallel.DistributedDataParallel)
    torch.nn.Module.__init__(wrapper)
    wrapper.module = torch.nn.Linear(2, 2)
    with pytest.raises(
        ConfigurationError, match=r"elastic='exact': received a network inside DistributedDataParallel"
    ):
        choose_strategy("auto", World(2, 1), wrapper, sums_exactly=True)


def test_exact_refuses_a_network_with_running_statistics(tmp_path):
    network = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    with pytest.raises(ConfigurationError, match=r"modules \['1'\] track running statistics"):
        Experiment(tmp_path, network, loss_function="cross_entropy", elastic="exact")
    untracked = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4, track_running_stats=False))
    Experiment(tmp_path, untracked, loss_function="cross_entropy", elastic="exact")
