"""Splitting data between the ranks of a distributed run (no process group is needed to check it:
a World only names a rank among a size)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from experiment.errors import DataError
from experiment.training.data import make_loader
from experiment.training.data_sharding import sharded_loader
from experiment.training.distributed import World


def _dataset(samples: int = 10) -> TensorDataset:
    return TensorDataset(torch.arange(samples).float().unsqueeze(1), torch.arange(samples))


def _indices(loader) -> list[int]:
    return [int(i) for _, y in loader for i in y]


def _world(rank: int, size: int = 3) -> World:
    return World(size=size, rank=rank)


def test_training_data_gets_a_seeded_distributed_sampler_whose_shards_cover_every_sample():
    shards = []
    for rank in range(3):
        loader = make_loader(
            _dataset(), batch_size=2, shuffle=True, seed=7, role="train_data", world=_world(rank)
        )
        assert isinstance(loader.sampler, DistributedSampler)
        assert loader.sampler.seed == 7
        loader.sampler.set_epoch(1)
        shards.append(_indices(loader))

    assert {len(shard) for shard in shards} == {4}  # 10 samples padded to 12: the same steps per rank
    assert set().union(*shards) == set(range(10))


def test_each_pass_index_draws_another_order():
    loader = make_loader(
        _dataset(), batch_size=10, shuffle=True, seed=7, role="train_data", world=_world(0, 2)
    )
    loader.sampler.set_epoch(0)
    first = _indices(loader)
    loader.sampler.set_epoch(1)
    assert _indices(loader) != first
    loader.sampler.set_epoch(0)
    assert _indices(loader) == first


def test_evaluation_data_is_split_without_padding_so_each_sample_counts_once():
    shards = [
        _indices(
            make_loader(_dataset(), batch_size=4, shuffle=False, seed=0, role="valid_data", world=_world(r))
        )
        for r in range(3)
    ]

    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_a_dataloader_with_the_default_sampler_is_rebuilt_around_the_shard_with_its_other_arguments():
    def collate(batch):
        return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch]) * 10

    loader = DataLoader(_dataset(), batch_size=3, shuffle=True, drop_last=True, collate_fn=collate)

    sharded = make_loader(loader, batch_size=99, shuffle=True, seed=5, role="train_data", world=_world(1, 2))

    assert isinstance(sharded.sampler, DistributedSampler) and sharded.sampler.shuffle
    assert (sharded.batch_size, sharded.drop_last, sharded.collate_fn) == (3, True, collate)
    assert all(i % 10 == 0 for i in _indices(sharded))


def test_a_dataloader_that_has_a_distributed_sampler_already_is_kept():
    dataset = _dataset()
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, 2, 1, seed=3))

    assert (
        make_loader(loader, batch_size=2, shuffle=True, seed=0, role="train_data", world=_world(1, 2))
        is loader
    )


def test_a_sampler_that_cannot_be_split_is_refused_with_how_to_fix_it():
    loader = DataLoader(_dataset(), batch_size=2, sampler=WeightedRandomSampler([1.0] * 10, 10))

    with pytest.raises(DataError, match=r"WeightedRandomSampler.*2 processes.*DistributedSampler"):
        make_loader(loader, batch_size=2, shuffle=True, seed=0, role="train_data", world=_world(0, 2))


def test_iterable_data_and_too_few_evaluation_samples_are_refused():
    class Stream(IterableDataset):
        def __iter__(self):
            yield from range(4)

    with pytest.raises(DataError, match="IterableDataset"):
        make_loader(Stream(), batch_size=2, shuffle=True, seed=0, role="train_data", world=_world(0, 2))
    with pytest.raises(DataError, match="2 sample.*3 processes"):
        make_loader(_dataset(2), batch_size=2, shuffle=False, seed=0, role="valid_data", world=_world(0))


def test_data_sharding_module_is_named_for_the_data_it_splits():
    assert sharded_loader.__module__ == "experiment.training.data_sharding"
    assert importlib.util.find_spec("experiment.training.sharding") is None  # free for parameter sharding
