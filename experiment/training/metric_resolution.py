"""Turning what the user passes as metrics (names, callables, objects, pairs) into named metrics.

A name is looked up in :mod:`~experiment.training.named_metrics` (``(name, options)`` builds a named
epoch metric with options); a callable or an object is named by its ``__name__`` or its class (a
lambda is refused); a ``(name, metric)`` pair names it. A callable given as an epoch metric is computed once over the epoch's concatenated
predictions (:class:`ConcatenatingMetric`). Two metrics of one role may not log the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from experiment.errors import ConfigurationError
from experiment.training import named_metrics
from experiment.training.metrics import MetricFn
from experiment.training.named_metrics import batch_metric, epoch_metric


class ConcatenatingMetric:
    """Adapts a callable ``(y_pred, y_true) -> tensor`` to an epoch metric over all predictions."""

    def __init__(self, function: MetricFn) -> None:
        self.function = function
        self.reset()

    def reset(self) -> None:
        self.predictions: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
        self.predictions.append(y_pred.detach())
        self.targets.append(y_true.detach())

    def compute(self) -> torch.Tensor:
        return self.function(torch.cat(self.predictions), torch.cat(self.targets))

    def state_dict(self) -> dict[str, Any]:
        return {
            "predictions": [p.cpu() for p in self.predictions],
            "targets": [t.cpu() for t in self.targets],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.predictions = list(state["predictions"])
        self.targets = list(state["targets"])


def resolve_batch_metrics(metrics: Iterable[Any]) -> list[tuple[str, MetricFn]]:
    """Turn names, callables or ``(name, callable)`` pairs into named batch metrics."""
    resolved = [_resolve(m, "batch_metrics", lambda f: f) for m in metrics]
    _check_unique(resolved, "batch_metrics")
    return resolved


def resolve_epoch_metrics(metrics: Iterable[Any]) -> list[tuple[str, Any]]:
    """Turn names, metric objects, callables or ``(name, metric)`` pairs into named epoch metrics."""
    resolved = [_resolve(m, "epoch_metrics", _as_epoch_metric) for m in metrics]
    _check_unique(resolved, "epoch_metrics")
    return resolved


def _as_epoch_metric(value: Any) -> Any:
    if all(hasattr(value, name) for name in ("update", "compute", "reset")):
        return value
    return ConcatenatingMetric(value)


def _resolve(metric: Any, role: str, wrap: Callable[[Any], Any]) -> Any:
    if isinstance(metric, str):
        return _named(metric, None, role)
    if isinstance(metric, tuple) and len(metric) == 2 and isinstance(metric[1], dict):
        return _named(metric[0], metric[1], role)
    if isinstance(metric, tuple) and len(metric) == 2 and isinstance(metric[0], str):
        return metric[0], wrap(metric[1])
    if callable(metric) or hasattr(metric, "update"):
        name = getattr(metric, "__name__", None) or type(metric).__name__.lower()
        if name == "<lambda>":
            raise ConfigurationError(
                f"A lambda in {role} has no usable name; pass it as a pair, e.g. ('my_metric', fn)."
            )
        return name, wrap(metric)
    raise ConfigurationError(
        f"{role}: received {metric!r} of type {type(metric).__name__}; expected a metric name, "
        "a callable (y_pred, y_true) -> tensor or an object with update/compute/reset."
    )


def _named(name: str, options: dict[str, Any] | None, role: str) -> tuple[str, Any]:
    key = name.lower()
    batch = role == "batch_metrics"
    found = (batch_metric(key) if options is None else None) if batch else epoch_metric(key, options)
    if found is None:
        hint = " (an epoch metric: pass it in epoch_metrics)" if batch and epoch_metric(key) else ""
        known = ["acc", "accuracy"] if batch else sorted(named_metrics.EPOCH_NAMES)
        raise ConfigurationError(
            f"Unknown {role} name: received {name!r}{hint}; expected one of {known + ['top{k}_acc']}, "
            "a callable (y_pred, y_true) -> tensor, or a (name, metric) pair."
        )
    return found


def _check_unique(resolved: list[tuple[str, Any]], role: str) -> None:
    names = [name for name, _ in resolved]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigurationError(
            f"{role} logs the same name more than once: {duplicates}. Name them apart with "
            "(name, metric) pairs."
        )
