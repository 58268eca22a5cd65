"""Data given as a tuple of tensors or NumPy arrays: checked, cast, and made a ``TensorDataset``.

A tuple (or list) of arrays of the same length is cut into batches element-wise: ``(x, y)`` gives
batches ``(x_b, y_b)`` for the built-in step; ``(x, y, sample_weight)``, or any other number of
arrays, gives batches ``(x_b, y_b, w_b)`` for a custom step (``Experiment(train_step=...)``), which
receives each batch whole. Without a custom step, such a tuple is refused: the built-in step takes
pairs.

Floating-point arrays are cast here, once, to the dtype of the network's parameters: NumPy and
scikit-learn give float64 by default, which a float32 network cannot multiply. Integer arrays (class
indices) are kept as they are. A bare array (a tensor or NumPy array alone) is refused: iterated, it
would yield one row per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from experiment.errors import DataError

logger = logging.getLogger(__name__)

#: How each role's data is passed, for the advice given with a bare array.
_TUPLE_ADVICE = {
    "train_data": (
        "Pass the inputs and targets together as one tuple: train((x, y)), not train(x, y) as in Keras; "
        "the second argument of train is valid_data."
    ),
    "valid_data": (
        "Pass the validation inputs and targets together as one tuple: train(train_data, (x_valid, y_valid))."
    ),
}


def is_array(value: Any) -> bool:
    """Whether ``value`` is a tensor or a NumPy array."""
    return isinstance(value, (torch.Tensor, np.ndarray))


def is_array_tuple(data: Any) -> bool:
    """Whether ``data`` is a non-empty tuple or list of tensors and NumPy arrays only."""
    return isinstance(data, (tuple, list)) and len(data) > 0 and all(is_array(part) for part in data)


def bare_array_error(data: Any, role: str) -> DataError:
    """The error for a tensor or NumPy array given alone as a data source."""
    shape = tuple(data.shape)
    advice = _TUPLE_ADVICE.get(role, "Pass the inputs and targets together as one tuple (x, y).")
    return DataError(
        f"{role}: received a {type(data).__name__} of shape {shape} alone; expected a DataLoader, a "
        "Dataset or a tuple (x, y) of arrays (a bare array would be iterated row by row, each row "
        f"taken as a batch). {advice}"
    )


def array_dataset(
    data: Sequence[Any], role: str, *, whole_batches: bool, dtype: torch.dtype | None
) -> TensorDataset:
    """A TensorDataset of the arrays of ``data``, floating ones cast to ``dtype`` (when given).

    Args:
        whole_batches: whether a custom step receives the batches (any number of arrays is then
            accepted); else ``data`` must be a pair ``(x, y)``.
        dtype: the dtype of the network's parameters; None keeps every dtype.

    Raises:
        DataError: not a pair without a custom step; arrays of 0 dimensions, of different lengths or
            without samples.
    """
    if len(data) != 2 and not whole_batches:
        raise DataError(
            f"{role}: received a {type(data).__name__} of {len(data)} arrays; the built-in step takes "
            f"(x, y) pairs. Pass (x, y), or {_custom_step_advice(role)}, a function step(trainer, "
            f"batch) that receives each batch as a tuple of {len(data)} slices (such as "
            "(x_b, y_b, weight_b) for (x, y, sample_weight))."
        )
    tensors = _checked([torch.from_numpy(p) if isinstance(p, np.ndarray) else p for p in data], role)
    return TensorDataset(*cast_floating(tensors, dtype, role))


def _custom_step_advice(role: str) -> str:
    if role == "train_data":
        return "pass Experiment(train_step=...) (and eval_step=...)"
    return "pass Experiment(eval_step=...) (or train_step=..., which evaluation uses by default)"


def _checked(tensors: list[torch.Tensor], role: str) -> list[torch.Tensor]:
    pair = len(tensors) == 2
    label = "(x, y)" if pair else f"a tuple of {len(tensors)} arrays"
    shapes = [tuple(tensor.shape) for tensor in tensors]
    if any(tensor.ndim == 0 for tensor in tensors):
        listed = ", ".join(map(str, shapes[:-1])) + f" and {shapes[-1]}"
        raise DataError(
            f"{role}: received {label} with shapes {listed}; expected arrays whose first dimension "
            "counts the samples. Add it, e.g. x.reshape(1, -1)."
        )
    lengths = [len(tensor) for tensor in tensors]
    if len(set(lengths)) > 1:
        if pair:
            raise DataError(
                f"{role}: x and y must have the same length; received {lengths[0]} and {lengths[1]} samples."
            )
        raise DataError(
            f"{role}: the arrays of {label} must have the same length; received {lengths} samples. "
            "A tuple of arrays is cut into batches element-wise; to give batches one by one, pass a "
            "DataLoader or a generator."
        )
    if lengths[0] == 0:
        first = "x" if pair else "the first"
        raise DataError(
            f"{role}: received {label} with 0 samples ({first} of shape {shapes[0]}); expected at least "
            "one. Check the step that selected or split the data."
        )
    return tensors


def cast_floating(tensors: list[torch.Tensor], dtype: torch.dtype | None, role: str) -> list[torch.Tensor]:
    """``tensors`` with the floating-point ones cast to ``dtype``; a log line says which were."""
    if dtype is None:
        return tensors
    cast = [i for i, t in enumerate(tensors) if t.dtype.is_floating_point and t.dtype != dtype]
    if cast:
        logger.info(
            "%s: cast the floating-point arrays %s (%s) to %s, the dtype of the network's parameters.",
            role,
            cast,
            ", ".join(str(tensors[i].dtype) for i in cast),
            dtype,
        )
    return [t.to(dtype) if i in cast else t for i, t in enumerate(tensors)]
