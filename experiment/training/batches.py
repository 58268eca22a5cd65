"""What the loop does with one batch before the network sees it: split, move, measure."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiment.errors import DataError


def split_batch(batch: Any, device: torch.device) -> tuple[Any, Any]:
    """The ``(x, y)`` of a batch, on ``device``.

    Raises:
        DataError: the batch is not a pair.
    """
    if type(batch) in (tuple, list) and len(batch) == 2 and device.type == "cpu":
        x, y = batch
        if type(x) is torch.Tensor and type(y) is torch.Tensor and not (x.is_cuda or y.is_cuda):
            return x, y  # the common case on CPU, without the cost of two no-op .to() calls
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise DataError(
            f"Each batch must be a pair (x, y); received {type(batch).__name__}"
            f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}. "
            "Make the dataset return (input, target) pairs, or pass Experiment(train_step=...) (and "
            "eval_step=...), a function that receives the whole batch, for any other structure."
        )
    return _move(batch[0], device), _move(batch[1], device)


def forward(network: nn.Module, x: Any) -> Any:
    """``network(*x)`` when ``x`` is a tuple or list of inputs, else ``network(x)``."""
    return network(*x) if isinstance(x, (tuple, list)) else network(x)


def batch_size(x: Any, y: Any) -> int:
    """The number of samples of a batch: the length of the first tensor found in ``y``, then ``x``
    (searching tuples, lists and dicts in order); 1 when there is none."""
    if type(y) is torch.Tensor and y.ndim > 0:
        return y.shape[0]
    for value in (y, x):
        tensor = first_tensor(value)
        if tensor is not None:
            return len(tensor)
    return 1


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor of at least one dimension in ``value``, depth first through tuples, lists
    and dicts (in their order), or None."""
    if isinstance(value, torch.Tensor):
        return value if value.ndim > 0 else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def move_batch(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device``, through tuples, lists and dicts (a custom
    step's batch of any structure)."""
    return _move(batch, device)


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        moved = {key: _move(item, device) for key, item in value.items()}
        if type(value) is dict:
            return moved
        try:
            return type(value)(moved)  # an OrderedDict or another mapping built from a dict
        except TypeError:
            return moved
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(_move(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_move(v, device) for v in value)
    return value
