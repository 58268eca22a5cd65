"""Keeping logs and saved states to plain data and tensors, converted at the boundary.

Epoch logs and callback states may hold what users' code returns: NumPy scalars (scikit-learn's
metrics), NumPy arrays, 0-d tensors. A checkpoint must hold only what
``torch.load(weights_only=True)`` reads, and log.tsv only numbers and text, so such values are
converted where they enter the run: NumPy scalars become Python numbers, NumPy arrays become
tensors, and anything else that is not plain data is a clear error before anything is committed.
"""

from __future__ import annotations

import collections
import numbers
from typing import Any

import numpy as np
import torch

from experiment.errors import ConfigurationError

_PLAIN = (str, bytes, bool, int, float, type(None), torch.dtype, torch.device, torch.Size)


def plain_state(value: Any, where: str) -> Any:
    """``value`` with NumPy values converted, or ConfigurationError naming the first unfit part.

    Args:
        where: how the value is named in the error, e.g. ``"the state of callbacks/MyCallback"``.
    """
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        converted = {key: plain_state(item, f"{where}[{key!r}]") for key, item in value.items()}
        return collections.OrderedDict(converted) if isinstance(value, collections.OrderedDict) else converted
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(plain_state(item, f"{where}[{index}]") for index, item in enumerate(value))
    if isinstance(value, _PLAIN):  # subclasses of plain types (an IntEnum, a str subclass)
        return _base_value(value)
    raise ConfigurationError(
        f"{where}: received {type(value).__name__} ({_short(value)}); expected plain data (numbers, "
        "strings, None, lists, tuples and dicts of them) or tensors, which checkpoints can hold and "
        "load without running code. Convert it in the callback's state_dict() (e.g. float(x), "
        "x.tolist(), torch.as_tensor(x))."
    )


def plain_log_value(key: str, value: Any, epoch: int) -> Any:
    """An epoch log value as a Python number or text: NumPy scalars and one-element tensors or arrays
    become numbers; anything else that is not a number, text or None is a ConfigurationError."""
    if type(value) in (int, float, bool, str, type(None)):
        return value
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)) and _size(value) == 1:
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise ConfigurationError(
        f"logs[{key!r}] of epoch {epoch}: received {type(value).__name__} ({_short(value)}); expected a "
        "number (a Python or NumPy scalar, or a one-element tensor) or a string. Log one number per "
        "key, for example float(value). Nothing of this epoch was committed."
    )


def _size(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else int(np.size(value))


def _base_value(value: Any) -> Any:
    kind: Any
    for kind in (bool, int, float, str, bytes):
        if isinstance(value, kind):
            return kind(value)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
