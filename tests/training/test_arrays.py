"""Tuples of tensors or NumPy arrays as data: batched element-wise, checked, cast to the network's dtype."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from experiment.errors import DataError
from experiment.training.data import make_loader
from experiment.training.distributed import World


def loader(data, *, whole_batches=True, dtype=None, role="train_data", batch_size=4):
    return make_loader(
        data,
        batch_size=batch_size,
        shuffle=False,
        seed=0,
        role=role,
        whole_batches=whole_batches,
        dtype=dtype,
    )


def test_arrays_a_triple_is_batched_element_wise_for_a_custom_step():
    x, y, w = torch.arange(20.0).reshape(10, 2), torch.arange(10), np.linspace(0, 1, 10)
    batches = list(loader((x, y, w)))
    assert [len(batch) for batch in batches] == [3, 3, 3]
    assert [tuple(batch[0].shape) for batch in batches] == [(4, 2), (4, 2), (2, 2)]
    assert torch.equal(torch.cat([batch[1] for batch in batches]), y)
    assert torch.equal(torch.cat([batch[2] for batch in batches]), torch.from_numpy(w))


@pytest.mark.parametrize("arrays", [1, 3, 4])
def test_arrays_other_than_pairs_without_custom_step_are_refused_naming_train_step(arrays):
    data = [torch.zeros(8, 2)] * arrays
    with pytest.raises(
        DataError,
        match=rf"train_data: received a list of {arrays} arrays; the built-in step takes \(x, y\) pairs\. "
        r"Pass \(x, y\), or pass Experiment\(train_step=\.\.\.\)",
    ):
        loader(data, whole_batches=False)


def test_arrays_evaluation_data_without_eval_step_names_both_steps():
    with pytest.raises(
        DataError, match=r"test_data: .*Experiment\(eval_step=\.\.\.\) \(or train_step=\.\.\."
    ):
        loader((torch.zeros(8, 2),) * 3, whole_batches=False, role="test_data")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            (torch.zeros(8, 2), torch.zeros(8), torch.zeros(5)),
            r"the arrays of a tuple of 3 arrays must have the same length; received \[8, 8, 5\] samples",
        ),
        (
            (torch.zeros(8, 2), torch.zeros(8), torch.tensor(1.0)),
            r"received a tuple of 3 arrays with shapes \(8, 2\), \(8,\) and \(\); expected arrays whose "
            r"first dimension counts the samples",
        ),
        (
            (np.zeros((0, 2)), np.zeros(0), np.zeros(0)),
            r"received a tuple of 3 arrays with 0 samples \(the first of shape \(0, 2\)\)",
        ),
    ],
)
def test_arrays_a_triple_is_checked_as_pairs_are(data, match):
    with pytest.raises(DataError, match=match):
        loader(data)


@pytest.mark.parametrize("role", ["train_data", "valid_data", "test_data"])
@pytest.mark.parametrize("array", [torch.zeros(8, 3), np.zeros((8, 3))])
def test_arrays_a_bare_array_is_refused_with_the_tuple_advice(role, array):
    advice = {
        "train_data": r"train\(\(x, y\)\), not train\(x, y\) as in Keras",
        "valid_data": r"train\(train_data, \(x_valid, y_valid\)\)",
        "test_data": r"as one tuple \(x, y\)",
    }[role]
    with pytest.raises(
        DataError, match=rf"{role}: received a (Tensor|ndarray) of shape \(8, 3\) alone; .*{advice}"
    ):
        loader(array, role=role)


def test_arrays_floating_arrays_are_cast_to_the_parameters_dtype_once_and_logged(caplog):
    x, y, w = np.ones((6, 2)), np.arange(6), np.ones(6, dtype=np.float16)
    with caplog.at_level(logging.INFO, logger="experiment.training.arrays"):
        dataset = loader((x, y, w), dtype=torch.float32).dataset
    assert [t.dtype for t in dataset.tensors] == [torch.float32, torch.int64, torch.float32]
    assert caplog.messages == [
        "train_data: cast the floating-point arrays [0, 2] (torch.float64, torch.float16) to "
        "torch.float32, the dtype of the network's parameters."
    ]


def test_arrays_a_pair_of_the_parameters_dtype_is_kept_as_given(caplog):
    x, y = torch.ones(6, 2), torch.ones(6, 1)
    with caplog.at_level(logging.INFO, logger="experiment.training.arrays"):
        dataset = loader((x, y), whole_batches=False, dtype=torch.float32).dataset
    assert dataset.tensors[0] is x and dataset.tensors[1] is y
    assert caplog.messages == []


def test_arrays_a_triple_is_sharded_between_ranks_through_the_dataset_path():
    x, y, w = torch.arange(10.0).unsqueeze(1), torch.arange(10), torch.arange(10.0) * 2
    shards = []
    for rank in range(2):
        sharded = make_loader(
            (x, y, w),
            batch_size=2,
            shuffle=True,
            seed=7,
            role="train_data",
            world=World(size=2, rank=rank),
            whole_batches=True,
        )
        assert isinstance(sharded.sampler, DistributedSampler) and sharded.sampler.seed == 7
        batches = list(sharded)
        assert all(len(batch) == 3 and torch.equal(batch[0].squeeze(1) * 2, batch[2]) for batch in batches)
        shards.append([int(i) for batch in batches for i in batch[1]])
    assert sorted(shards[0] + shards[1]) == list(range(10))
