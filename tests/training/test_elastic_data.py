"""The training data of elastic runs: an order of (seed, pass) alone, contiguous slices per rank, and
the loss factor that makes an update the mean over the global batch for any world size."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from experiment.errors import ConfigurationError, DataError
from experiment.state.rng import find_epoch_samplers
from experiment.training.accumulation import AccumulationGroups
from experiment.training.data import SkippingSampler, make_loader
from experiment.training.distributed import World
from experiment.training.elastic_data import ElasticBatchSampler, elastic_loader, loss_weights


def _sampler(world: int, rank: int, *, length: int = 23, batch: int = 6, **options) -> ElasticBatchSampler:
    return ElasticBatchSampler(length, global_batch=batch, world_size=world, rank=rank, seed=5, **options)


def _global_batches(world: int, epoch: int, **options) -> list[list[int]]:
    ranks = [_sampler(world, rank, **options) for rank in range(world)]
    for sampler in ranks:
        sampler.set_epoch(epoch)
    return [[i for part in parts for i in part] for parts in zip(*ranks)]


@pytest.mark.parametrize("world", [2, 3, 4, 5])
def test_elastic_sampler_global_batches_do_not_depend_on_the_world_size(world):
    assert _global_batches(world, epoch=2) == _global_batches(1, epoch=2)


def test_elastic_sampler_order_changes_with_the_pass_and_covers_every_sample_once():
    first, second = _global_batches(1, epoch=0), _global_batches(1, epoch=1)
    assert first != second
    assert sorted(i for batch in first for i in batch) == list(range(23))
    assert [len(batch) for batch in first] == [6, 6, 6, 5]


def test_elastic_sampler_slices_are_contiguous_and_uneven_by_one_at_most():
    parts = [list(_sampler(4, rank, shuffle=False)) for rank in range(4)]
    assert [p[0] for p in parts] == [[0], [1, 2], [3], [4, 5]]  # 6 samples over 4 ranks
    assert [p[-1] for p in parts] == [[18], [19], [20], [21, 22]]  # the last batch: 5 samples


def test_elastic_sampler_drop_last_drops_the_short_global_batch():
    assert len(_sampler(1, 0, drop_last=True)) == 3
    assert len(_sampler(1, 0)) == 4


def test_elastic_weights_make_each_rank_share_of_the_global_batch():
    # 6 samples over 4 ranks: slices of 1, 2, 1, 2; DDP divides the sum by 4.
    weights = [_sampler(4, rank).weight(0) for rank in range(4)]
    assert weights == [4 / 6, 8 / 6, 4 / 6, 8 / 6]
    assert _sampler(2, 0).weight(0) == 1.0
    assert _sampler(2, 0).weight(3) == 2 * 2 / 5  # the last batch: 5 samples, 2 of them here


def test_elastic_weights_scale_the_loss_before_backward():
    loader = elastic_loader(
        TensorDataset(torch.zeros(23, 1), torch.zeros(23)), World(4, 1), global_batch=6, seed=0, role="t"
    )
    groups = AccumulationGroups(2, weights=loss_weights(loader))
    groups.place(1)
    assert groups.divide(torch.tensor(3.0)).item() == pytest.approx(3.0 * (8 / 6) / 2)


def test_elastic_loader_rebuilds_a_dataloader_keeping_its_order_and_drop_last():
    dataset = TensorDataset(torch.arange(10.0)[:, None], torch.zeros(10))
    loader = make_loader(
        DataLoader(dataset, batch_size=2, drop_last=True),
        batch_size=99,
        shuffle=True,
        seed=0,
        role="train_data",
        global_batch=4,
    )
    assert [batch[0].reshape(-1).tolist() for batch in loader] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]


def test_elastic_loader_batch_sampler_gets_each_pass_index():
    loader = make_loader(
        (torch.zeros(8, 2), torch.zeros(8)),
        batch_size=2,
        shuffle=True,
        seed=0,
        role="train_data",
        global_batch=4,
    )
    wrapped = SkippingSampler(loader.batch_sampler)
    object.__setattr__(loader, "batch_sampler", wrapped)
    assert find_epoch_samplers([loader]) == [wrapped.inner]


def test_elastic_loader_refuses_a_dataloader_with_its_own_sampler():
    dataset = TensorDataset(torch.zeros(8, 1), torch.zeros(8))
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, 2, 0))
    with pytest.raises(DataError, match="DistributedSampler, whose order an elastic run cannot keep"):
        elastic_loader(loader, World(), global_batch=4, seed=0, role="train_data")


def test_elastic_loader_refuses_an_iterable_dataset():
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1), torch.zeros(())

    with pytest.raises(DataError, match="received Stream, which an elastic run cannot order"):
        elastic_loader(Stream(), World(), global_batch=4, seed=0, role="train_data")


def test_elastic_loader_refuses_a_last_global_batch_smaller_than_the_world():
    dataset = TensorDataset(torch.zeros(9, 1), torch.zeros(9))  # batches of 4, 4 and 1
    with pytest.raises(
        DataError,
        match="a global batch of 1 sample.s. .9 samples in batches of 4. leaves one of the 3 processes",
    ):
        elastic_loader(dataset, World(3, 0), global_batch=4, seed=0, role="train_data")


def test_elastic_loader_refuses_more_processes_than_the_global_batch():
    dataset = TensorDataset(torch.zeros(8, 1), torch.zeros(8))
    with pytest.raises(
        ConfigurationError, match="global batch holds 2 sample.s., fewer than the 3 processes now"
    ):
        elastic_loader(dataset, World(3, 0), global_batch=2, seed=0, role="train_data")


def test_a_user_batch_sampler_is_not_given_the_pass_index_unless_it_asks():
    class Batches(BatchSampler):
        def set_epoch(self, epoch):
            raise AssertionError("not an elastic batch sampler")

    dataset = TensorDataset(torch.zeros(8, 1), torch.zeros(8))
    loader = DataLoader(dataset, batch_sampler=Batches(SequentialSampler(dataset), 2, False))
    assert find_epoch_samplers([loader]) == []


def test_elastic_weights_are_left_out_when_every_slice_is_even():
    def loader(length, world):
        dataset = TensorDataset(torch.zeros(length, 1), torch.zeros(length))
        return elastic_loader(dataset, World(world, 0), global_batch=6, seed=0, role="t")

    assert loss_weights(loader(24, 2)) is None  # 4 batches of 6: 3 samples per rank
    assert loss_weights(loader(23, 2)) is not None  # the last batch: 5 samples, 2 and 3
    assert loss_weights(loader(24, 4)) is not None  # 6 samples over 4 ranks
