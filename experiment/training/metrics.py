"""On-device accumulation of the loss and metrics of an epoch, and the former built-in ``F1``.

Named metrics live in ``named_metrics`` (``accuracy`` is re-exported here); ``metric_resolution``
turns what the user passes into named metrics. Batch metrics are callables ``(y_pred, y_true) ->
tensor`` averaged over the epoch, weighted by batch size. Epoch metrics are objects with
``update(y_pred, y_true)``, ``compute()`` and ``reset()`` (torchmetrics style). Sums stay on the
device; they are read only when an epoch ends or something is displayed, so the training step never
waits for the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from experiment.errors import ConfigurationError, DataError
from experiment.training.distributed import SINGLE, World, sharing_problems
from experiment.training.named_metrics import TopKAccuracy, accuracy
from experiment.training.targets import class_target_problem, describe

MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class F1:
    """The former built-in ``f1`` (the named ``f1`` is now torchmetrics'), kept for callers.

    Macro-averaged F1 score over the classes seen in the epoch, a fraction in [0, 1].

    Example:
        >>> metric = F1()
        >>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        >>> float(metric.compute())
        1.0
    """

    def __init__(self) -> None:
        self.confusion: torch.Tensor | None = None

    def reset(self) -> None:
        self.confusion = None

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
        if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] > 1:
            classes = y_pred.shape[-1]
            predicted = y_pred.argmax(dim=-1)
        else:
            classes = 2
            predicted = (y_pred.reshape(y_true.shape) > 0).long()
        index = y_true.long().reshape(-1) * classes + predicted.reshape(-1)
        counts = torch.bincount(index, minlength=classes * classes).reshape(classes, classes)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> torch.Tensor:
        if self.confusion is None:
            return torch.tensor(float("nan"))
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        predicted = confusion.sum(dim=0)
        actual = confusion.sum(dim=1)
        f1 = 2 * true_positive / (predicted + actual).clamp(min=1)
        present = (predicted + actual) > 0
        return f1[present].mean().float()

    def state_dict(self) -> dict[str, Any]:
        return {"confusion": None if self.confusion is None else self.confusion.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.confusion = state["confusion"]


class EpochAccumulator:
    """Running sums of the loss and batch metrics of one epoch (or evaluation), kept on device.

    Each rank of a distributed run keeps its own sums (they are saved per rank); what is read
    (:meth:`mean_loss`, :meth:`averages`) is summed over every rank of ``world``, and the epoch
    metrics must combine every rank's batches themselves when computed.

    Raises:
        ConfigurationError: ``world`` is distributed and an epoch metric does not sync across
            processes (see :func:`~experiment.training.distributed.sharing_problems`).
    """

    def __init__(
        self,
        batch_metrics: list[tuple[str, MetricFn]],
        epoch_metrics: list[tuple[str, Any]],
        device: torch.device | None = None,
        world: World = SINGLE,
    ):
        unsynced = sharing_problems(epoch_metrics) if world.distributed else []
        if unsynced:
            raise ConfigurationError(
                f"epoch_metrics {unsynced}: under torchrun ({world.size} processes) an epoch metric must "
                "combine every rank's batches; expected a metric name (such as 'f1') or a torchmetrics "
                "Metric, which sync across processes when computed."
            )
        self.batch_metrics = batch_metrics
        self.world = world
        self.device = device or torch.device("cpu")
        self.epoch_metrics = epoch_metrics
        self._weight_size = 0
        self._weight = torch.tensor(0.0)
        self._targets_checked = False
        self._plain_values = False  # every value a 0-dim tensor: known after the first batch
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.sums: torch.Tensor | None = None
        for _, metric in self.epoch_metrics:
            metric.reset()

    def update(
        self, loss: torch.Tensor, y_pred: torch.Tensor, y_true: torch.Tensor, size: int
    ) -> torch.Tensor:
        """Add one batch; return its values on the device: the loss alone as a 0-dim tensor when
        there are no batch metrics, else a 1-dim tensor (loss first, then the batch metrics)."""
        # This runs at every step, so it keeps to a few tensor operations: a cached 0-dim factor
        # costs less than a Python int and gives the same products; the sum is updated in place.
        loss = loss.detach()
        if self.batch_metrics or self.epoch_metrics:
            with torch.no_grad():
                if self._plain_values:
                    values = [loss] + [fn(y_pred, y_true).detach() for _, fn in self.batch_metrics]
                else:
                    values = self._checked_values(loss, y_pred, y_true)
                batch = torch.stack(values) if len(values) > 1 else values[0]
                for _, metric in self.epoch_metrics:
                    metric.update(y_pred.detach(), y_true)
        else:
            batch = loss
        if size != self._weight_size:
            self._weight_size, self._weight = size, torch.tensor(float(size))
        weighted = batch.mul(self._weight)
        if self.sums is None:
            self.sums = weighted.reshape(-1)
        else:
            self.sums.add_(weighted)  # never shared: state_dict and load_state_dict copy it
        self.samples += size
        return batch

    def _checked_values(self, loss: torch.Tensor, y_pred: Any, y_true: Any) -> list[torch.Tensor]:
        """The batch's values, made 0-dim: the slow path of the first batch and of metrics that return
        a one-element tensor or a number. The first batch also checks the targets of the built-in
        classification metrics, so that no wrong number is ever logged."""
        if not self._targets_checked:
            self._check_targets(y_pred, y_true)
            self._targets_checked = True
        raw = [("loss", loss)] + [(name, fn(y_pred, y_true)) for name, fn in self.batch_metrics]
        self._plain_values = all(isinstance(v, torch.Tensor) and v.ndim == 0 for _, v in raw)
        return [_as_scalar(name, value, self.device) for name, value in raw]

    def _check_targets(self, y_pred: Any, y_true: Any) -> None:
        checked = [name for name, fn in self.batch_metrics if fn is accuracy]
        for name in checked + [name for name, metric in self.epoch_metrics if isinstance(metric, F1)]:
            problem = class_target_problem(name, y_pred, y_true)
            if problem is not None:
                raise DataError(problem)
        for _, fn in self.batch_metrics:
            problem = fn.target_problem(y_pred, y_true) if isinstance(fn, TopKAccuracy) else None
            if problem is not None:
                raise DataError(problem)

    def batch_names(self, prefix: str = "") -> list[str]:
        return [f"{prefix}loss"] + [f"{prefix}{name}" for name, _ in self.batch_metrics]

    def mean_loss(self) -> float:
        """The epoch's average loss so far (one device-to-host copy)."""
        sums, samples = self._totals()
        return float("nan") if sums is None else float(sums[0] / samples)

    def averages(self, prefix: str = "") -> dict[str, float]:
        """Read the epoch's averages (one device-to-host copy) and the epoch metrics."""
        names = self.batch_names(prefix)
        sums, samples = self._totals()
        values = [float("nan")] * len(names) if sums is None else (sums / samples).tolist()
        logs = dict(zip(names, values))
        for name, metric in self.epoch_metrics:
            logs[f"{prefix}{name}"] = float(metric.compute())
        return logs

    def _totals(self) -> tuple[torch.Tensor | None, int | torch.Tensor]:
        """The sums and the number of samples of every rank (this one's, in one process)."""
        if not self.world.distributed:
            return self.sums, self.samples
        width = len(self.batch_metrics) + 1
        local = torch.zeros(width + 1, dtype=torch.float64, device=self.device)
        if self.sums is not None:
            local[:width] = self.sums
        local[width] = self.samples
        total = self.world.total(local)
        return (None, 0) if total[width] == 0 else (total[:width], total[width])

    def state_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "sums": None if self.sums is None else self.sums.to("cpu", copy=True),
            "epoch_metrics": {name: _metric_state(metric) for name, metric in self.epoch_metrics},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples = state["samples"]
        self.sums = None if state["sums"] is None else state["sums"].to(self.device, copy=True)
        for name, metric in self.epoch_metrics:
            _load_metric_state(metric, state["epoch_metrics"].get(name), self.device)


def _as_scalar(name: str, value: Any, device: torch.device) -> torch.Tensor:
    """A batch value as a detached 0-dim tensor; a one-element tensor or a number is accepted."""
    tensor = value
    if not isinstance(value, torch.Tensor):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            tensor = torch.as_tensor(value, dtype=torch.get_default_dtype(), device=device)
    if not isinstance(tensor, torch.Tensor) or tensor.numel() != 1:
        raise ConfigurationError(
            f"batch metric {name!r} returned {describe(tensor)}; expected one number per batch (a "
            "0-dim or one-element tensor). Reduce it (e.g. .mean()), or make it an epoch metric."
        )
    return tensor.detach().reshape(())


def _metric_state(metric: Any) -> Any:
    if hasattr(metric, "metric_state"):  # torchmetrics keeps its accumulators out of state_dict
        return {k: v.cpu() if torch.is_tensor(v) else v for k, v in metric.metric_state.items()}
    if hasattr(metric, "state_dict"):
        return metric.state_dict()
    return None


def _load_metric_state(metric: Any, state: Any, device: torch.device) -> None:
    if state is None:
        return
    if hasattr(metric, "metric_state"):
        for key, value in state.items():
            setattr(metric, key, value.to(device) if torch.is_tensor(value) else value)
        if hasattr(metric, "_update_count"):
            metric._update_count = max(1, metric._update_count)
    elif hasattr(metric, "load_state_dict"):
        metric.load_state_dict(state)
