"""Turning user data into batches, and replaying an epoch's data order after a resume.

``train``/``test`` accept a ``DataLoader``, a ``Dataset`` or a tuple ``(x, y)`` of tensors or NumPy
arrays. Datasets and tuples are batched here with a loader whose shuffling generator is seeded by the
run, so their order is part of the saved random state.

Mid-epoch resume: the loader's index sampler is wrapped by :class:`SkippingSampler`, which, when the
loader starts a pass, pulls the indices of the batches already consumed and drops them (no sample is
loaded), and computes the first remaining batch's indices at once so that the sampler's random draws
happen while the epoch-start random state is in place.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from experiment.errors import DataError

_END = object()


def make_loader(
    data: Any, *, batch_size: int, shuffle: bool, seed: int, role: str
) -> DataLoader | Any:
    """Return something that yields batches for ``data``.

    Raises:
        DataError: ``data`` is of an unsupported type or a tuple of mismatched lengths.
    """
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(part) for part in data):
        x, y = (_as_tensor(part) for part in data)
        if len(x) != len(y):
            raise DataError(
                f"{role}: x and y must have the same length; received {len(x)} and {len(y)} samples."
            )
        data = TensorDataset(x, y)
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


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def loader_length(loader: Any) -> int | None:
    """Number of batches in one pass, or None when the loader cannot tell."""
    try:
        return len(loader)
    except TypeError:
        return None


class SkippingSampler:
    """Wraps a loader's index sampler; the next pass drops its first ``skip`` items (indices only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.skip = 0

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        # A plain function, not a generator: the random draws of the inner sampler happen when the
        # loader starts its pass, not when the first batch is requested.
        indices = iter(self.inner)
        for _ in itertools.islice(indices, self.skip):
            pass
        self.skip = 0
        first = next(indices, _END)
        if first is _END:
            return iter(())
        return itertools.chain((first,), indices)


class BatchSource:
    """Yields the batches of each epoch, able to start an epoch past its first ``skip`` batches."""

    def __init__(self, loader: Any, steps_per_epoch: int | None, role: str) -> None:
        self.loader = loader
        self.role = role
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

    def epoch(self, skip: int = 0, on_start: Callable[[], None] | None = None) -> Iterator[Any]:
        """Yield the remaining batches of one epoch.

        Args:
            skip: batches of this epoch already consumed before an interruption.
            on_start: called once the pass holding the first remaining batch has drawn its order,
                before that batch is loaded (the resume restores the step's random state here).
        """
        remaining = None if self.steps_per_epoch is None else self.steps_per_epoch - skip
        started = False
        while remaining is None or remaining > 0:
            skip_here = skip if self.pass_length is None else min(skip, self.pass_length)
            iterator = self._start_pass(skip_here)
            skip -= skip_here
            if skip > 0 or (self.pass_length is not None and skip_here == self.pass_length > 0):
                continue  # this whole pass was consumed before the interruption
            if not started:
                started = True
                if on_start is not None:
                    on_start()
            produced = 0
            for batch in iterator:
                yield batch
                produced += 1
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return
            if remaining is None or produced == 0:
                return
        if not started and on_start is not None:
            on_start()

    def _start_pass(self, skip: int) -> Iterator[Any]:
        if self._sampler is not None:
            self._sampler.skip = skip
            return iter(self.loader)
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
