"""SkippingSampler and BatchSource: a resumed epoch yields the tail of the epoch without loading its head."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
)

from experiment.errors import DataError
from experiment.training.data import BatchSource, SkippingSampler, make_loader
from tests.support.training import make_data, make_experiment

SAMPLES, BATCH = 30, 4  # 8 batches per pass, the last one of 2 samples


class CountingDataset(Dataset):
    """Sample i is (i, i); remembers every index it was asked for."""

    def __init__(self, size: int = SAMPLES) -> None:
        self.size = size
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, int]:
        self.loaded.append(index)
        return index, index


def shuffled_loader(dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator())


def as_lists(batches: list[Any]) -> list[list[int]]:
    return [batch[0].tolist() for batch in batches]


@pytest.mark.parametrize("skip", [1, 3, 7, 8])
def test_data_skip_yields_the_tail_without_loading_the_head(skip):
    dataset = CountingDataset()
    loader = shuffled_loader(dataset)
    source = BatchSource(loader, None, "train_data")
    with source.installed():
        loader.generator.manual_seed(0)
        full = as_lists(list(source.epoch()))
        loader.generator.manual_seed(0)
        dataset.loaded.clear()
        loaded_at_start: list[int] = []
        tail = as_lists(list(source.epoch(skip, lambda: loaded_at_start.append(len(dataset.loaded)))))
    assert len(full) == 8 and sorted(i for batch in full for i in batch) == list(range(SAMPLES))
    assert tail == full[skip:]
    assert dataset.loaded == [i for batch in full[skip:] for i in batch]  # no skipped index loaded
    assert loaded_at_start == [0]  # the step's random state comes back before any sample is loaded


def test_data_skip_across_passes_yields_the_tail():
    """An epoch of 20 steps spans three passes; resume at step 10 from the second pass's start state."""
    dataset = CountingDataset()
    loader = shuffled_loader(dataset)
    source = BatchSource(loader, 20, "train_data")
    pass_starts: list[tuple[int, torch.Tensor]] = []
    with source.installed():
        loader.generator.manual_seed(0)
        full = as_lists(
            list(source.epoch(on_pass=lambda done: pass_starts.append((done, loader.generator.get_state()))))
        )
        assert [done for done, _ in pass_starts] == [0, 8, 16]
        loader.generator.set_state(pass_starts[1][1])
        dataset.loaded.clear()
        tail = as_lists(list(source.epoch(10, pass_skip=2)))
    assert len(full) == 20
    assert tail == full[10:]
    assert dataset.loaded == [i for batch in full[10:] for i in batch]


def test_data_skip_at_the_end_of_a_pass_continues_with_the_next_pass():
    dataset = CountingDataset()
    loader = shuffled_loader(dataset)
    source = BatchSource(loader, 12, "train_data")
    with source.installed():
        loader.generator.manual_seed(0)
        full = as_lists(list(source.epoch()))
        loader.generator.manual_seed(0)
        dataset.loaded.clear()
        tail = as_lists(list(source.epoch(8, pass_skip=8)))
    assert tail == full[8:]
    assert dataset.loaded == [i for batch in full[8:] for i in batch]


def test_data_skip_of_the_whole_epoch_yields_nothing_and_still_calls_on_start():
    dataset = CountingDataset()
    loader = shuffled_loader(dataset)
    source = BatchSource(loader, None, "train_data")
    started: list[bool] = []
    with source.installed():
        assert list(source.epoch(8, lambda: started.append(True))) == []
    assert started == [True]
    assert dataset.loaded == []


def test_data_skipping_sampler_drops_indices_of_an_unshuffled_sampler():
    sampler = SkippingSampler(BatchSampler(SequentialSampler(range(10)), batch_size=3, drop_last=False))
    assert len(sampler) == 4
    sampler.skip = 2
    assert list(sampler) == [[6, 7, 8], [9]]


def test_data_installed_puts_the_original_sampler_back():
    loader = shuffled_loader(CountingDataset())
    original = loader.batch_sampler
    source = BatchSource(loader, None, "train_data")
    with source.installed():
        assert isinstance(loader.batch_sampler, SkippingSampler)
    assert loader.batch_sampler is original
    assert loader.sampler is original.sampler


class CountingStream(IterableDataset):
    def __init__(self) -> None:
        self.loaded = 0

    def __iter__(self):
        for index in range(SAMPLES):
            self.loaded += 1
            yield index, index


def test_data_skip_without_index_sampler_loads_and_drops_with_a_warning():
    stream = CountingStream()
    source = BatchSource(DataLoader(stream, batch_size=BATCH), None, "train_data")
    with source.installed():
        full = as_lists(list(source.epoch()))
        with pytest.warns(UserWarning, match=r"train_data has no index sampler to fast-forward; the 3 batch"):
            tail = as_lists(list(source.epoch(3)))
    assert tail == full[3:]


def test_data_refuses_a_loader_with_persistent_workers():
    loader = DataLoader(CountingDataset(), batch_size=BATCH, num_workers=2, persistent_workers=True)
    with pytest.raises(DataError, match=r"train_data: received a DataLoader with persistent_workers=True"):
        BatchSource(loader, None, "train_data")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_data_experiment_refuses_persistent_workers_before_training(tmp_path):
    """A persistent loader would make a run restarted at an epoch boundary differ: refused at once."""
    loader = DataLoader(
        TensorDataset(*make_data()), batch_size=16, shuffle=True, num_workers=2, persistent_workers=True
    )
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(DataError, match=r"Build the DataLoader with persistent_workers=False"):
        exp.train(loader, epochs=1, progress=False)
    assert exp.loop.global_step == 0


def test_data_make_loader_refuses_a_pair_without_samples():
    with pytest.raises(
        DataError, match=r"train_data: received \(x, y\) with 0 samples \(x of shape \(0, 3\)\)"
    ):
        make_loader(
            (torch.empty(0, 3), torch.empty(0)), batch_size=4, shuffle=True, seed=0, role="train_data"
        )


def test_data_make_loader_refuses_a_pair_of_scalars():
    with pytest.raises(DataError, match=r"valid_data: received \(x, y\) with shapes \(\) and \(\)"):
        make_loader(
            (np.ones(()), torch.tensor(1)),
            batch_size=4,
            shuffle=False,
            seed=0,
            role="valid_data",
        )
