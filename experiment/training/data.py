"""Turning user data into batches, and replaying an epoch's data order after a resume.

``train``/``test`` accept a ``DataLoader``, a ``Dataset`` or a tuple ``(x, y)`` of tensors or NumPy
arrays (of any number of arrays with a custom step, see :mod:`experiment.training.arrays`). Datasets
and tuples are batched here with a loader whose shuffling generator is seeded by the
run, so their order is part of the saved random state.

Mid-epoch resume: the loader's index sampler is wrapped by :class:`SkippingSampler`, which, when the
loader starts a pass, pulls the indices of the batches already consumed and drops them (no sample is
loaded). The pulls happen as the pass starts, while the random state of the pass's start is in place;
the loop then puts back the random state of the interrupted step. An epoch may span several passes
(``steps_per_epoch`` larger than the loader), so the loop saves the random state at each pass start.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from experiment.errors import DataError
from experiment.training.arrays import array_dataset, bare_array_error, is_array, is_array_tuple
from experiment.training.data_sharding import sharded_dataset_loader, sharded_loader
from experiment.training.distributed import SINGLE, World
from experiment.training.elastic_data import elastic_loader


def make_loader(
    data: Any,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    role: str,
    world: World = SINGLE,
    whole_batches: bool = False,
    dtype: torch.dtype | None = None,
    global_batch: int | None = None,
    groups: int | None = None,
) -> DataLoader | Any:
    """Return something that yields batches for ``data`` (this rank's share of it, in a
    distributed ``world``: see :mod:`experiment.training.data_sharding`).

    Args:
        whole_batches: whether a custom step receives the batches: then a tuple of any number of
            arrays is batched element-wise, else only ``(x, y)`` (see :mod:`experiment.training.arrays`).
        dtype: the dtype of the network's parameters, to which the floating-point arrays of a tuple
            are cast; None keeps their dtype.
        global_batch: the samples per global batch of an elastic run's training data, which is then
            ordered and split independently of the world size
            (:mod:`experiment.training.elastic_data`); None: not elastic.
        groups: the groups of each global batch of an elastic run in exact mode (None: not exact).

    Raises:
        DataError: ``data`` is of an unsupported type, a bare array, or a tuple of arrays that the
            step cannot take, without samples or of mismatched lengths, or cannot be split between
            the ranks of ``world``.
    """
    if global_batch is not None and shuffle:
        if is_array(data):
            raise bare_array_error(data, role)
        if is_array_tuple(data):
            data = array_dataset(data, role, whole_batches=whole_batches, dtype=dtype)
        return elastic_loader(data, world, global_batch=global_batch, seed=seed, role=role, groups=groups)
    if isinstance(data, DataLoader):
        return sharded_loader(data, world, train=shuffle, seed=seed, role=role) if world.distributed else data
    if is_array(data):
        raise bare_array_error(data, role)
    if is_array_tuple(data):
        data = array_dataset(data, role, whole_batches=whole_batches, dtype=dtype)
    if isinstance(data, Dataset) and world.distributed:
        return sharded_dataset_loader(data, world, batch_size=batch_size, train=shuffle, seed=seed, role=role)
    if world.distributed:
        raise DataError(
            f"{role}: received {type(data).__name__}, which cannot be split between the {world.size} "
            "processes of the run; expected a DataLoader, a map-style Dataset or a tuple (x, y)."
        )
    if isinstance(data, Dataset):
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        shuffle = shuffle and not isinstance(data, IterableDataset)
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        return data
    raise DataError(
        f"{role}: received {type(data).__name__}; expected a torch DataLoader, a Dataset or a "
        "tuple (x, y) of tensors or NumPy arrays."
    )


def data_kind(data: Any) -> str:
    """How the user gave the data: "DataLoader", "Dataset", "tuple" (x, y), "tuple of 3 arrays"
    (any other number of arrays, for a custom step), "iterable" or "none"."""
    if data is None:
        return "none"
    if isinstance(data, DataLoader):
        return "DataLoader"
    if isinstance(data, Dataset):
        return "Dataset"
    if is_array_tuple(data) and len(data) != 2:
        return f"tuple of {len(data)} arrays"
    if isinstance(data, (tuple, list)):
        return "tuple"
    return "iterable"


def loader_length(loader: Any) -> int | None:
    """Number of batches in one pass, or None when the loader cannot tell."""
    try:
        return len(loader)
    except TypeError:
        return None


class SkippingSampler:
    """Wraps a loader's index sampler; a pass started while ``skip`` is set drops its first items.

    Only indices are dropped, so no sample of a consumed batch is loaded. Each pass keeps the
    ``skip`` in force when the loader asked for it (a DataLoader with workers asks twice per pass).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.skip = 0
        self._latest: _SkippingIterator | None = None

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        if not self.skip:  # the usual pass: the inner iterator itself, no Python call per batch
            self._latest = None
            return iter(self.inner)
        self._latest = _SkippingIterator(iter(self.inner), self.skip)
        return self._latest

    def start(self) -> None:
        """Drop the skipped items of the latest pass now, so that its random draws happen now."""
        if self._latest is not None:
            self._latest.start()


class _SkippingIterator:
    """The inner sampler's iterator, without its first ``skip`` items (dropped at the first pull)."""

    def __init__(self, indices: Iterator[Any], skip: int) -> None:
        self._indices = indices
        self._skip = skip

    def start(self) -> None:
        skip, self._skip = self._skip, 0
        for _ in itertools.islice(self._indices, skip):
            pass

    def __iter__(self) -> _SkippingIterator:
        return self

    def __next__(self) -> Any:
        if self._skip:
            self.start()
        return next(self._indices)


def _refuse_persistent_workers(loader: Any, role: str) -> None:
    """Refuse ``persistent_workers=True``: its data would differ after a restart, even between epochs.

    A DataLoader draws the base seed of its workers from its generator each time it starts them. A
    persistent one starts them once per process, so a restarted run draws one seed more than the
    uninterrupted one, which shifts every data order after it; and its workers' random state,
    carried from pass to pass, cannot be saved.
    """
    if isinstance(loader, DataLoader) and loader.persistent_workers:
        raise DataError(
            f"{role}: received a DataLoader with persistent_workers=True (num_workers="
            f"{loader.num_workers}); expected persistent_workers=False. Persistent workers draw their "
            "random seed once per process, so a run restarted in a new process (even at an epoch "
            "boundary) draws one seed more than the uninterrupted run, and its data order and "
            "worker-side augmentations differ from there on. Build the DataLoader with "
            "persistent_workers=False; the cost is starting the workers again at each pass over it."
        )


class BatchSource:
    """Yields the batches of each epoch, able to start an epoch past its first ``skip`` batches."""

    def __init__(
        self, loader: Any, steps_per_epoch: int | None, role: str, *, kind: str = "iterable"
    ) -> None:
        _refuse_persistent_workers(loader, role)
        self.loader = loader
        self.role = role
        self.kind = kind  # how the user gave the data (see data_kind), recorded with the run
        self.pass_length = loader_length(loader)
        if self.pass_length == 0:
            raise DataError(
                f"{role} yields no batches (its length is 0). Give it at least one sample, or, with "
                "drop_last=True, at least batch_size samples."
            )
        self.steps_per_epoch = steps_per_epoch or self.pass_length
        self._sampler: SkippingSampler | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[BatchSource]:
        """Wrap the loader's index sampler for the duration of the block, then put it back."""
        loader = self.loader
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            yield self
            return
        attribute = "batch_sampler" if loader.batch_sampler is not None else "sampler"
        original = getattr(loader, attribute)
        self._sampler = SkippingSampler(original)
        # DataLoader forbids re-assigning its sampler after construction; the swap is undone below.
        object.__setattr__(loader, attribute, self._sampler)
        try:
            yield self
        finally:
            object.__setattr__(loader, attribute, original)
            self._sampler = None

    def epoch(
        self,
        skip: int = 0,
        on_start: Callable[[], None] | None = None,
        *,
        pass_skip: int | None = None,
        on_pass: Callable[[int], None] | None = None,
    ) -> Iterator[Any]:
        """Yield the remaining batches of one epoch.

        Args:
            skip: batches of this epoch already consumed before an interruption.
            on_start: called once the pass holding the first remaining batch has drawn its order,
                before that batch is loaded (the resume restores the step's random state here).
            pass_skip: how many of the ``skip`` batches the current pass had produced; the caller
                has put back the random state of that pass's start. By default the position
                within a pass that ``skip`` falls on.
            on_pass: called with the number of batches of the epoch done so far just before each
                new pass of the loader draws its order (the loop saves the random state there).
        """
        remaining = None if self.steps_per_epoch is None else self.steps_per_epoch - skip
        if remaining is not None and remaining <= 0:
            if on_start is not None:
                on_start()
            return
        done = skip
        if skip:
            if pass_skip is None:
                pass_skip = skip if not self.pass_length else (skip - 1) % self.pass_length + 1
            # A pass that ended exactly at the interruption was not exhausted yet: its end (and the
            # random draws some samplers make there) comes after the step's random state is back.
            iterator = self._start_pass(pass_skip)
            if on_start is not None:
                on_start()
        else:
            iterator = self._new_pass(on_pass, done)
        resumed_pass = bool(skip)
        while True:
            produced = 0
            for batch in iterator:
                yield batch
                produced += 1
                done += 1
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return
            if remaining is None or (produced == 0 and not resumed_pass):
                return
            resumed_pass = False
            iterator = self._new_pass(on_pass, done)

    def _new_pass(self, on_pass: Callable[[int], None] | None, done: int) -> Iterator[Any]:
        if on_pass is not None:
            on_pass(done)
        return self._start_pass(0)

    def _start_pass(self, skip: int) -> Iterator[Any]:
        if self._sampler is not None:
            self._sampler.skip = skip
            try:
                iterator = iter(self.loader)
            finally:
                self._sampler.skip = 0
            self._sampler.start()
            return iterator
        iterator = iter(self.loader)
        if skip:
            warnings.warn(
                f"{self.role} has no index sampler to fast-forward; the {skip} batch(es) already "
                "consumed this epoch are loaded and dropped.",
                stacklevel=3,
            )
            for _ in itertools.islice(iterator, skip):
                pass
        return iterator
