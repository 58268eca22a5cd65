"""Predictions: the network's outputs over data that may hold inputs only, concatenated.

What counts as the inputs of the data given to ``Experiment.predict``:

- a tensor or a NumPy array: inputs only, cut into batches along the first dimension;
- a tuple or list of two tensors or arrays: ``(x, y)`` pairs, as everywhere else; ``x`` is used;
- a tuple or list of one or three or more tensors or arrays: the inputs of a network that takes
  that many (``network(x1, x2, x3)``), cut into batches together;
- a Dataset, a DataLoader or another iterable of batches (a generator): a batch that is a tuple or
  list of two items is ``(x, y)`` and ``x`` is used; any other batch (a tensor, a dict...) is the
  inputs.

``has_targets`` overrides the guess: False takes every batch whole as the inputs (a tuple of
arrays, or a batch ``(x1, x2)``, then feeds a network of several inputs), True requires pairs.
A tuple or list of inputs is passed as ``network(*x)``. With a custom evaluation step, every batch
is given whole to the step and its ``y_pred`` is the output (:func:`step_output`).

Outputs come back in float32 where the network gave half precision (bfloat16 or float16, as a
mixed-precision run's autocast does): NumPy has no bfloat16, so ``.numpy()`` would fail, and float32
holds every half-precision value exactly. Float64, integer and bool leaves are returned as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from experiment.errors import ConfigurationError, DataError
from experiment.training.arrays import cast_floating
from experiment.training.batches import forward, move_batch
from experiment.training.custom_step import step_result
from experiment.training.data import make_loader


def prediction_inputs(
    data: Any, *, batch_size: int, has_targets: bool | None, dtype: torch.dtype | None = None
) -> Iterator[Any]:
    """The inputs of each batch of ``data`` (see the module's documentation).

    Args:
        dtype: the network's parameter dtype: floating arrays given as a tensor, a NumPy array or
            a tuple of them are cast to it once (NumPy's float64 for a float32 network), as
            training casts them; batches of a Dataset, DataLoader or iterable are not.

    Raises:
        DataError: ``data`` cannot be batched, or a batch is not a pair when ``has_targets`` is True.
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if has_targets:
            raise DataError(
                f"data: received a single {type(data).__name__} with has_targets=True; expected (x, y) "
                "pairs. Pass (x, y), or has_targets=None for inputs only."
            )
        tensor = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
        if tensor.ndim == 0:
            raise DataError(f"data: received a 0-dim {type(data).__name__}; expected one sample per row.")
        (tensor,) = cast_floating([tensor], dtype, "data")
        return iter(tensor.split(batch_size))
    loader = _loader(data, batch_size=batch_size, has_targets=has_targets, dtype=dtype)
    return (_inputs(batch, has_targets) for batch in loader)


def _loader(
    data: Any, *, batch_size: int, has_targets: bool | None, dtype: torch.dtype | None
) -> Iterable[Any]:
    arrays = isinstance(data, (tuple, list)) and all(isinstance(a, (torch.Tensor, np.ndarray)) for a in data)
    if arrays and data and (has_targets is False or len(data) != 2):
        return _inputs_loader(data, batch_size=batch_size, has_targets=has_targets, dtype=dtype)
    if not isinstance(data, Dataset) and (
        isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__")
    ):
        raise DataError(
            f"data: received {type(data).__name__}; expected inputs as a tensor or NumPy array, (x, y) "
            "arrays, a Dataset, a DataLoader or an iterable of batches."
        )
    return make_loader(data, batch_size=batch_size, shuffle=False, seed=0, role="data", dtype=dtype)


def _inputs_loader(
    arrays: Any, *, batch_size: int, has_targets: bool | None, dtype: torch.dtype | None
) -> DataLoader:
    """Batches of several input arrays, for a network of several inputs."""
    if has_targets:
        raise DataError(f"data: received {len(arrays)} arrays with has_targets=True; expected (x, y).")
    tensors = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in arrays]
    lengths = [len(tensor) if tensor.ndim else 0 for tensor in tensors]
    if len(set(lengths)) != 1 or not lengths[0]:
        raise DataError(
            f"data: received input arrays of {lengths} samples; expected the same number of samples "
            "(at least one) in each. Give batches one by one through a DataLoader or a generator."
        )
    return DataLoader(
        TensorDataset(*cast_floating(tensors, dtype, "data")), batch_size=batch_size, shuffle=False
    )


def _inputs(batch: Any, has_targets: bool | None) -> Any:
    pair = isinstance(batch, (tuple, list)) and len(batch) == 2
    if has_targets and not pair:
        raise DataError(
            f"has_targets=True, but a batch is {type(batch).__name__}"
            f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}; expected "
            "(x, y) pairs. Pass has_targets=False (every batch is the inputs) or None (guess)."
        )
    return batch[0] if pair and has_targets is not False else batch


def predict(
    network: nn.Module,
    inputs: Iterable[Any],
    device: torch.device,
    *,
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    output: Callable[[Any], Any] | None = None,
) -> Any:
    """The network's outputs over ``inputs`` in eval mode without gradients, concatenated on the CPU
    (half-precision outputs as float32, see :func:`concatenate`); the network's training mode is
    restored after.

    Args:
        output: computes the output of one batch already on ``device`` (by default
            ``network(batch)``; a custom evaluation step's ``y_pred``, see :func:`step_output`).

    Raises:
        DataError: ``inputs`` yielded no batch, or outputs that cannot be concatenated.
    """
    compute = output or (lambda batch: forward(network, batch))
    was_training = network.training
    network.eval()
    outputs = []
    try:
        with torch.no_grad(), autocast():
            for batch in inputs:
                outputs.append(to_cpu(compute(move_batch(batch, device))))
    finally:
        network.train(was_training)
    if not outputs:
        raise DataError("data yielded no batches; expected at least one.")
    return concatenate(outputs)


def to_cpu(output: Any) -> Any:
    """``output`` with every tensor moved to the CPU (through tuples, lists and dicts)."""
    return move_batch(output, torch.device("cpu"))


#: The tensor types given back as float32 (see the module's documentation).
HALF_PRECISION = (torch.float16, torch.bfloat16)


def concatenate(outputs: list[Any], where: str = "output") -> Any:
    """Batch outputs joined along the first dimension, leaf by leaf through tuples, lists and dicts.

    0-dim tensors are stacked; leaves that are not tensors are gathered in a list. Half-precision
    tensors (bfloat16, float16) become float32; other dtypes are kept.

    Raises:
        DataError: the batches' outputs differ in structure.
    """
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        _check_all(outputs, torch.Tensor, where)
        tensor = torch.stack(outputs) if first.ndim == 0 else torch.cat(outputs)
        return tensor.float() if tensor.dtype in HALF_PRECISION else tensor
    if isinstance(first, dict):
        _check_all(outputs, dict, where)
        if any(output.keys() != first.keys() for output in outputs):
            raise DataError(f"The {where} has other keys in some batches; expected the same in every batch.")
        return {key: concatenate([output[key] for output in outputs], f"{where}[{key!r}]") for key in first}
    if isinstance(first, (tuple, list)):
        _check_all(outputs, (tuple, list), where)
        if any(len(output) != len(first) for output in outputs):
            raise DataError(
                f"The {where} has another length in some batches; expected the same in every batch."
            )
        joined = [concatenate([output[i] for output in outputs], f"{where}[{i}]") for i in range(len(first))]
        return type(first)(*joined) if hasattr(first, "_fields") else type(first)(joined)
    return list(outputs)


def _check_all(outputs: list[Any], kind: Any, where: str) -> None:
    for output in outputs:
        if not isinstance(output, kind):
            raise DataError(
                f"The {where} is {type(outputs[0]).__name__} in one batch and {type(output).__name__} in "
                "another; expected the same structure in every batch."
            )


def step_output(step: Callable[[Any, Any], Any], trainer: Any) -> Callable[[Any], Any]:
    """The output of a batch as the custom evaluation ``step(trainer, batch)`` gives it: its
    ``y_pred``.

    Raises:
        ConfigurationError: the step returns no ``y_pred``.
    """

    def output(batch: Any) -> Any:
        _, y_pred, _ = step_result(step(trainer, batch), "eval_step")
        if y_pred is None:
            raise ConfigurationError(
                "predict() with an eval_step uses the 'y_pred' it returns, and it returned a loss only. "
                "Return {'loss': loss, 'y_pred': y_pred} from eval_step (a loss may be 0 when the "
                "batch has no targets)."
            )
        return y_pred

    return output
