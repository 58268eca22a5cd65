"""A CPU copy of a state tree in buffers that are reused from one commit to the next.

An asynchronous commit copies the state here on the training thread (the only part that blocks
training) and lets a writer thread serialize the copy. Tensors are copied with ``copy_`` into
buffers allocated at the first commit (pinned host memory for CUDA tensors, copied
``non_blocking`` on a side stream); containers are rebuilt and plain values are immutable, so a
``state_dict()`` that returns live lists cannot change the copy afterwards.

Example:
    >>> snapshot = Snapshot()
    >>> copied = snapshot.take({"model": network.state_dict()})
    >>> snapshot.wait_copied()      # in the writer thread, before reading ``copied``
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import torch


class Snapshot:
    """Reused CPU buffers holding the latest copy of a state tree."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._stream: Any = None
        self._event: Any = None

    def take(self, tree: Any) -> Any:
        """Copy ``tree`` into the buffers and return the copy (its tensors are the buffers).

        On CUDA the copies are issued on a side stream and the current stream waits for them
        before its next kernel, so that no host synchronization happens here and no later
        ``optimizer.step`` can change a tensor before it is copied.
        """
        used: dict[tuple[Any, ...], torch.Tensor] = {}
        self._event = None
        cuda = _has_cuda_tensor(tree)
        if cuda:
            if self._stream is None:
                self._stream = torch.cuda.Stream()
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                copied = self._copy(tree, (), used)
            self._event = torch.cuda.Event()
            self._event.record(self._stream)
            torch.cuda.current_stream().wait_event(self._event)
        else:
            copied = self._copy(tree, (), used)
        self._buffers = used
        return copied

    def wait_copied(self) -> None:
        """Block until the copies of the latest :meth:`take` are complete (a no-op on CPU)."""
        if self._event is not None:
            self._event.synchronize()

    @property
    def nbytes(self) -> int:
        """The size of the buffers, in bytes."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self._buffers.values())

    def _copy(self, value: Any, path: tuple[Any, ...], used: dict[tuple[Any, ...], torch.Tensor]) -> Any:
        if isinstance(value, torch.Tensor):
            buffer = self._buffer(path, value)
            buffer.copy_(value.detach(), non_blocking=value.is_cuda)
            used[path] = buffer
            return buffer
        if isinstance(value, dict):
            items = ((key, self._copy(item, (*path, key), used)) for key, item in value.items())
            return (
                collections.OrderedDict(items) if isinstance(value, collections.OrderedDict) else dict(items)
            )
        if type(value) in (list, tuple):
            return type(value)(self._copy(item, (*path, index), used) for index, item in enumerate(value))
        return copy.deepcopy(value)

    def _buffer(self, path: tuple[Any, ...], value: torch.Tensor) -> torch.Tensor:
        buffer = self._buffers.get(path)
        if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
            buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=value.is_cuda)
        return buffer


def _has_cuda_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_cuda
    if isinstance(value, dict):
        return any(_has_cuda_tensor(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_cuda_tensor(item) for item in value)
    return False
