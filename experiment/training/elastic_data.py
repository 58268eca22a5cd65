"""Training data of an elastic run: an order and global batches that do not depend on the world size.

An elastic run (``Experiment(elastic=True)``) fixes its global batch ``G`` when it is created
(``batch_size`` times the number of processes then). Pass ``p`` over ``n`` samples is ordered by a
permutation drawn from ``(seed, p)`` alone (or kept in order for a DataLoader without shuffling);
global batch ``k`` is ``order[k*G:(k+1)*G]`` (the last one shorter unless the loader drops it), and
rank ``r`` of ``W`` takes the contiguous slice ``[floor(r*B/W), floor((r+1)*B/W))`` of a batch of
``B`` samples, so ranks may get one sample more than others when ``W`` does not divide ``B``. The
position of a run is the number of global batches done in the pass, the same for any ``W``: a run
resumed on another number of processes goes on with the same global batches.

The loss of a rank's slice, a mean over its ``b`` samples, is weighted by ``W * b / B`` before
``backward`` (:meth:`ElasticBatchSampler.weight`): DistributedDataParallel divides the summed
gradients by ``W``, so the update is the mean over the global batch, whatever ``W`` is.

With ``elastic="exact"`` a global batch is also cut into ``M`` groups fixed at creation (group ``j``:
``[floor(j*B/M), floor((j+1)*B/M))``), rank ``r`` takes groups ``[floor(r*M/W), floor((r+1)*M/W))``,
and each group is stepped on its own (:meth:`ElasticBatchSampler.groups_of`,
:mod:`experiment.training.exact_step`).

Example:
    >>> sampler = ElasticBatchSampler(11, global_batch=4, world_size=3, rank=1, seed=0, shuffle=False)
    >>> list(sampler)
    [[1], [5], [9]]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from experiment.errors import ConfigurationError, DataError
from experiment.training.data_sharding import loader_options
from experiment.training.distributed import World

#: Mixes the pass index into the seed of its permutation (a large odd constant).
_PASS_MIX = 0x9E3779B97F4A7C15


def slice_bounds(size: int, world_size: int, rank: int) -> tuple[int, int]:
    """The slice ``[start, stop)`` of a global batch of ``size`` samples that ``rank`` takes."""
    return rank * size // world_size, (rank + 1) * size // world_size


class ElasticBatchSampler:
    """Yields this rank's indices of each global batch of a pass; its order is set by ``set_epoch``.

    Args:
        length: the number of samples of the dataset.
        global_batch: samples per global batch (fixed when the run was created).
        world_size: the processes of the run now.
        rank: this process's rank.
        seed: the run's seed; a pass's order is drawn from it and the pass index.
        shuffle: False keeps the dataset's order.
        drop_last: whether a last, shorter global batch is dropped.
        groups: the number of groups of a global batch in exact mode (None: not exact).
    """

    #: Its order is set by ``set_epoch`` at each pass (see :func:`~experiment.state.rng.find_epoch_samplers`).
    ordered_by_pass = True

    def __init__(
        self,
        length: int,
        *,
        global_batch: int,
        world_size: int,
        rank: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        groups: int | None = None,
    ) -> None:
        self.length = length
        self.groups = groups
        self.global_batch = global_batch
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Order the next pass as pass ``epoch`` of the run (its index counted over the whole run)."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.length // self.global_batch
        return -(-self.length // self.global_batch)

    def order(self) -> torch.Tensor:
        """The indices of the current pass, in order (the same on every rank, for any world size)."""
        if not self.shuffle:
            return torch.arange(self.length)
        generator = torch.Generator().manual_seed((self.seed * _PASS_MIX + self.epoch) % 2**63)
        return torch.randperm(self.length, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for index in range(len(self)):
            batch = order[index * self.global_batch : (index + 1) * self.global_batch]
            start, stop = self.bounds(len(batch))
            yield batch[start:stop].tolist()

    def batch_size(self, index: int) -> int:
        """The number of samples of the pass's ``index``-th global batch (from 0)."""
        return min(self.global_batch, self.length - index * self.global_batch)

    def bounds(self, size: int, rank: int | None = None) -> tuple[int, int]:
        """The slice ``[start, stop)`` of a global batch of ``size`` samples that ``rank`` (this
        one by default) takes: by samples, or in exact mode by whole groups."""
        rank = self.rank if rank is None else rank
        if self.groups is None:
            return slice_bounds(size, self.world_size, rank)
        first, last = slice_bounds(self.groups, self.world_size, rank)
        return first * size // self.groups, last * size // self.groups

    def weight(self, index: int) -> float:
        """The factor of the loss of the pass's ``index``-th batch (from 0): ``W * b / B``."""
        size = self.batch_size(index)
        start, stop = self.bounds(size)
        return self.world_size * (stop - start) / size

    def groups_of(self, index: int) -> list[tuple[int, int, int, float]]:
        """Exact mode: this rank's groups of the pass's ``index``-th batch, each as ``(group,
        start, stop, weight)`` within the rank's slice, ``weight`` being the group's share of the
        global batch; the empty groups of a short batch are left out."""
        assert self.groups is not None
        size = self.batch_size(index)
        first, last = slice_bounds(self.groups, self.world_size, self.rank)
        offset = first * size // self.groups
        found = []
        for group in range(first, last):
            start, stop = group * size // self.groups, (group + 1) * size // self.groups
            if stop > start:
                found.append((group, start - offset, stop - offset, (stop - start) / size))
        return found


class ElasticWeights:
    """The loss factor of each batch of an epoch, by its number in the epoch (from 1); every epoch
    starts a pass of the loader, and an epoch longer than a pass goes on with the next one."""

    def __init__(self, sampler: ElasticBatchSampler) -> None:
        self.sampler = sampler
        # Every global batch but a pass's last holds the same number of samples.
        self.uniform = len(sampler) == 0 or sampler.weight(0) == sampler.weight(len(sampler) - 1) == 1.0

    def __call__(self, batch_number: int) -> float:
        return self.sampler.weight((batch_number - 1) % len(self.sampler))


def elastic_sampler(loader: Any) -> ElasticBatchSampler | None:
    """The batch sampler of an elastic ``loader`` (possibly wrapped, see
    :class:`~experiment.training.data.SkippingSampler`), else None."""
    sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(sampler, "inner", sampler)
    return sampler if isinstance(sampler, ElasticBatchSampler) else None


def loss_weights(loader: Any) -> ElasticWeights | None:
    """The loss factors of ``loader``'s batches when it is an elastic loader that DDP reduces
    (not in exact mode, whose step weights each group itself) and some factor is not 1, else None."""
    sampler = elastic_sampler(loader)
    if sampler is None or sampler.groups is not None:
        return None
    weights = ElasticWeights(sampler)
    return None if weights.uniform else weights  # no call per batch when every factor is 1


def elastic_loader(
    data: Any, world: World, *, global_batch: int, seed: int, role: str, groups: int | None = None
) -> DataLoader[Any]:
    """A loader of this rank's slices of ``data`` (a map-style Dataset, or a DataLoader over one
    with the default sampler, rebuilt with its other arguments), in global batches of ``global_batch``
    (cut into ``groups`` groups in exact mode).

    Raises:
        DataError: the data is iterable, its DataLoader has a sampler of its own, or a global
            batch would leave a process without samples.
    """
    loader = data if isinstance(data, DataLoader) else None
    dataset = data.dataset if loader is not None else data
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
        raise DataError(
            f"{role}: received {type(dataset).__name__}, which an elastic run cannot order independently "
            "of the number of processes; expected a map-style Dataset, (x, y) tensors or a DataLoader "
            "over one. Pass a map-style dataset, or train with elastic=False."
        )
    shuffle, drop_last = True, False
    if loader is not None:
        shuffle, drop_last = _default_order(loader, role)
    sampler = ElasticBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        global_batch=global_batch,
        world_size=world.size,
        rank=world.rank,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        groups=groups,
    )
    _refuse_empty_slices(sampler, role)
    if loader is None:
        return DataLoader(dataset, batch_sampler=sampler)
    return DataLoader(dataset, batch_sampler=sampler, **loader_options(loader))


def _default_order(loader: DataLoader[Any], role: str) -> tuple[bool, bool]:
    """Whether ``loader`` shuffles and drops its last batch; refused unless it batches by default."""
    default_batches = type(loader.batch_sampler) is BatchSampler
    order = type(loader.sampler)
    if (
        not default_batches
        or order not in (RandomSampler, SequentialSampler)
        or (
            order is RandomSampler and loader.sampler.replacement  # type: ignore[attr-defined]
        )
    ):
        custom = loader.batch_sampler if not default_batches else loader.sampler
        raise DataError(
            f"{role}: received a DataLoader with a {type(custom).__name__}, whose order an elastic run "
            "cannot keep when the number of processes changes; expected the default sampler "
            "(shuffle=True or False) with batch_size=. Build the DataLoader without sampler= or "
            "batch_sampler=, or pass the Dataset itself, or train with elastic=False."
        )
    return order is RandomSampler, bool(loader.drop_last)


def _refuse_empty_slices(sampler: ElasticBatchSampler, role: str) -> None:
    world, size = sampler.world_size, sampler.global_batch
    units, what = (size, "sample(s)") if sampler.groups is None else (sampler.groups, "group(s)")
    if units < world:
        raise ConfigurationError(
            f"{role}: the run's global batch holds {units} {what}, fewer than the {world} processes "
            f"now; expected at most {units} processes, since each must take at least one of every "
            "global batch. Launch fewer processes."
        )
    sizes = [sampler.batch_size(index) for index in {0, len(sampler) - 1} if len(sampler)]
    for batch in sizes:
        if any(sampler.bounds(batch, rank)[0] == sampler.bounds(batch, rank)[1] for rank in range(world)):
            raise DataError(
                f"{role}: a global batch of {batch} sample(s) ({sampler.length} samples in batches of "
                f"{size}) leaves one of the {world} processes without samples; expected every "
                "process to get at least one. Pass a DataLoader with drop_last=True, change the "
                "dataset's length, or launch fewer processes."
            )
