"""Splitting a run's data (not its parameters) between the ranks of a distributed run.

Training data gets a ``DistributedSampler`` (seeded by the run's seed; its order for each pass is
set by the pass index, see :class:`~experiment.state.rng.RandomState`), which pads the last shard
by repeating a few samples so that every rank runs the same number of steps. Validation and test
data are split without padding (rank ``r`` takes samples ``r, r + world, ...``), so each sample
counts once in the metrics summed over the ranks.

A DataLoader built with the default sampler is rebuilt with the same arguments around the shard; one
with a DistributedSampler is kept; any other sampler cannot be split here and is refused.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
)
from torch.utils.data.distributed import DistributedSampler

from experiment.errors import DataError
from experiment.training.distributed import World


def sharded_dataset_loader(
    dataset: Dataset[Any], world: World, *, batch_size: int, train: bool, seed: int, role: str
) -> DataLoader[Any]:
    """A loader of this rank's share of ``dataset``: shuffled by a DistributedSampler for training,
    an unpadded stride of it otherwise."""
    _refuse_iterable(dataset, world, role)
    if train:
        sampler: DistributedSampler[Any] = DistributedSampler(
            dataset, world.size, world.rank, shuffle=True, seed=seed
        )
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return DataLoader(_stride(dataset, world, role), batch_size=batch_size)


def sharded_loader(
    loader: DataLoader[Any], world: World, *, train: bool, seed: int, role: str
) -> DataLoader[Any]:
    """``loader`` rebuilt around this rank's share of its dataset (kept when its sampler is a
    DistributedSampler already).

    Raises:
        DataError: the loader's dataset is iterable, or its sampler is not one that can be split.
    """
    _refuse_iterable(loader.dataset, world, role)
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    default_batches = loader.batch_sampler is None or type(loader.batch_sampler) is BatchSampler
    shuffled = type(loader.sampler) is RandomSampler and not loader.sampler.replacement
    if not default_batches or not (shuffled or type(loader.sampler) is SequentialSampler):
        custom = loader.batch_sampler if not default_batches else loader.sampler
        raise DataError(
            f"{role}: received a DataLoader with a {type(custom).__name__}, which this library cannot "
            f"split between the {world.size} processes of the run; expected the default sampler "
            "(shuffle=True or False) or a DistributedSampler. Build the DataLoader with "
            "sampler=DistributedSampler(dataset, seed=...) (the library calls its set_epoch at each "
            "pass), or pass the Dataset itself."
        )
    if train:
        sampler: DistributedSampler[Any] = DistributedSampler(
            loader.dataset, world.size, world.rank, shuffle=shuffled, seed=seed
        )
        return _rebuilt(loader, loader.dataset, sampler)
    return _rebuilt(loader, _stride(loader.dataset, world, role), None)


def _stride(dataset: Any, world: World, role: str) -> Subset[Any]:
    length = len(dataset)
    if length < world.size:
        raise DataError(
            f"{role} holds {length} sample(s) for {world.size} processes; expected at least one per "
            "process, since each evaluates its own share. Give it more samples."
        )
    return Subset(dataset, range(world.rank, length, world.size))


def _refuse_iterable(dataset: Any, world: World, role: str) -> None:
    if isinstance(dataset, IterableDataset):
        raise DataError(
            f"{role}: received an IterableDataset, which this library cannot split between the "
            f"{world.size} processes of the run; expected a map-style Dataset, (x, y) tensors or a "
            "DataLoader over one. Shard it yourself and give each rank a map-style dataset."
        )


def _rebuilt(loader: DataLoader[Any], dataset: Any, sampler: Any) -> DataLoader[Any]:
    """A DataLoader over ``dataset`` with ``sampler`` and every other argument of ``loader``."""
    options = {"batch_size": loader.batch_size, "drop_last": loader.drop_last, **loader_options(loader)}
    return DataLoader(dataset, sampler=sampler, **options)


def loader_options(loader: DataLoader[Any]) -> dict[str, Any]:
    """The arguments of ``loader`` that say how it loads (workers, collation, pinning, generator),
    all but its dataset, sampler, batch size and ``drop_last``: those a rebuilt loader keeps."""
    options: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    return options
