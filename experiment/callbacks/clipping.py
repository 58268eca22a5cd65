"""ClipNorm and ClipValue: clip the gradients between ``backward()`` and ``optimizer.step()``.

Both act in ``on_backward_end``; a loop given a custom ``train_step`` does its own backward and step
and calls no ``on_backward_end``, so clip inside that step instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from experiment.arguments import check_number
from experiment.callbacks.base import Callback
from experiment.errors import ConfigurationError


def _parameter_list(parameters: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    # A generator such as ``network.parameters()`` would be exhausted after the first batch.
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    try:
        found = list(parameters)
    except TypeError:
        raise ConfigurationError(
            f"parameters: received {type(parameters).__name__}; expected a tensor or an iterable of "
            "tensors, such as network.parameters()."
        ) from None
    if not found or not all(isinstance(p, torch.Tensor) for p in found):
        kinds = sorted({type(p).__name__ for p in found}) or ["nothing"]
        raise ConfigurationError(
            f"parameters: received an iterable of {', '.join(kinds)}; expected at least one tensor, "
            "such as network.parameters()."
        )
    return found


def _positive(name: str, value: Any) -> float:
    return float(check_number(name, value, above=0, finite=False))


class ClipNorm(Callback):
    """Rescales the gradients so that their total norm is at most ``max_norm``.

    Applies :func:`torch.nn.utils.clip_grad_norm_` after each ``backward()``, before the step.

    Args:
        parameters: the tensors whose gradients are clipped (``network.parameters()``).
        max_norm: the largest allowed norm of all the gradients together.
        norm_type: the p of the p-norm; ``float("inf")`` for the largest absolute value.

    Example:
        >>> exp.train(train_loader, epochs=10, callbacks=[ClipNorm(net.parameters(), 1.0)])
    """

    def __init__(
        self, parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0
    ) -> None:
        super().__init__()
        self.parameters = _parameter_list(parameters)
        self.max_norm = _positive("max_norm", max_norm)
        self.norm_type = _positive("norm_type", norm_type)

    def on_backward_end(self, batch_number: int) -> None:
        torch.nn.utils.clip_grad_norm_(self.parameters, self.max_norm, norm_type=self.norm_type)


class ClipValue(Callback):
    """Clamps every gradient element into ``[-clip_value, clip_value]``.

    Applies :func:`torch.nn.utils.clip_grad_value_` after each ``backward()``, before the step.

    Args:
        parameters: the tensors whose gradients are clipped (``network.parameters()``).
        clip_value: the largest allowed absolute value of a gradient element.

    Example:
        >>> exp.train(train_loader, epochs=10, callbacks=[ClipValue(net.parameters(), 0.5)])
    """

    def __init__(self, parameters: torch.Tensor | Iterable[torch.Tensor], clip_value: float) -> None:
        super().__init__()
        self.parameters = _parameter_list(parameters)
        self.clip_value = _positive("clip_value", clip_value)

    def on_backward_end(self, batch_number: int) -> None:
        torch.nn.utils.clip_grad_value_(self.parameters, self.clip_value)
