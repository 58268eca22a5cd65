"""What the loop does with one batch before the network sees it: split, move, measure; and the
first batch's forward pass, whose failure is explained in terms of the data."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiment.errors import DataError
from experiment.training.targets import describe


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


def first_forward(network: nn.Module, x: Any, role: str) -> Any:
    """:func:`forward` of a source's first batch; a RuntimeError of torch (a feature count or dtype
    the network cannot take) becomes a DataError giving the inputs' shapes and what the network
    expects, the original error as its cause. Out-of-memory errors pass through.

    Raises:
        DataError: the forward pass raised a RuntimeError.
    """
    try:
        return forward(network, x)
    except (torch.OutOfMemoryError, NotImplementedError):
        raise
    except RuntimeError as error:
        raise DataError(_input_problem(network, x, role, error)) from error


#: Attributes of the layers that say what input size they take, and the input dimension it is.
_INPUT_SIZES = (("in_features", -1), ("input_size", -1), ("in_channels", 1))

_CHECK_FIRST_LAYER = "Check that the inputs fit the network's first layer."


def _input_problem(network: nn.Module, x: Any, role: str, error: RuntimeError) -> str:
    inputs = list(x) if isinstance(x, (tuple, list)) else [x]
    tensors = [item for item in inputs if isinstance(item, torch.Tensor)]
    dtype = parameter_dtype(network)
    expects, fix = _layer_expectation(network, tensors)
    if dtype is not None and any(t.dtype.is_floating_point and t.dtype != dtype for t in tensors):
        fix = (
            f"Convert the inputs to {dtype} in the dataset (x.to({dtype})), or pass the arrays as one "
            "tuple (x, y), whose floating-point arrays the library casts to the parameters' dtype."
        )
    held = f"its parameters are {dtype}" if dtype is not None else "it has no floating-point parameters"
    described = ", ".join(describe(item) for item in inputs)
    return (
        f"{role}: the network failed on the first batch, whose inputs are {described}; {held}{expects}. "
        f"{fix} torch: {error}"
    )


def _layer_expectation(network: nn.Module, tensors: list[torch.Tensor]) -> tuple[str, str]:
    """What the first registered layer with a known input size takes, in words, and the fix when
    the first input's size differs from it."""
    for name, module in network.named_modules():
        for attribute, dimension in _INPUT_SIZES:
            size = getattr(module, attribute, None)
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                continue
            words = (
                f" and its first layer with a known input size, {name!r} ({type(module).__name__}), "
                f"takes {attribute}={size}"
            )
            given = tensors[0].shape[dimension] if tensors and tensors[0].ndim > max(dimension, 0) else size
            if given == size:
                return words, _CHECK_FIRST_LAYER
            what = "features" if dimension == -1 else "channels"
            return (
                words,
                f"The inputs have {given} {what}: give {size}, or build the network's first layer for {given}.",
            )
    return "", _CHECK_FIRST_LAYER


def parameter_dtype(network: nn.Module) -> torch.dtype | None:
    """The dtype of the network's first floating-point parameter; None when it has none."""
    for parameter in network.parameters():
        if parameter.dtype.is_floating_point:
            return parameter.dtype
    return None


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
