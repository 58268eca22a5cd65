"""GradientTracker: per-parameter gradient statistics of each epoch, handed to a method to override.

The base of :class:`~experiment.callbacks.tensorboard_logger.TensorBoardGradientTracker`, and of any
tracker that sends the statistics elsewhere (Poutyne's ``GradientTracker``, whose subclasses
override ``_on_epoch_end_log``; here they override :meth:`GradientTracker.log_gradient_statistics`).

The running statistics stay on the parameters' device: the only copy to the host is made once per
epoch, when they are handed over. They are saved with each checkpoint, so an epoch interrupted and
resumed hands over the same values as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from experiment.callbacks.base import Callback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.errors import ConfigurationError
from experiment.state.torch_nodes import plain_module

#: The statistics of each parameter, in the order they are computed.
GRADIENT_STATISTICS = ("norm_mean", "norm_std", "abs_mean", "min", "max")


class GradientTracker(Callback):
    """Accumulates per-parameter gradient statistics over each epoch; subclasses say where they go.

    After every backward pass, for each tracked parameter, the L2 norm of its gradient, the mean of
    its absolute values and its smallest and largest entries are folded into running statistics. At
    the epoch end, :meth:`log_gradient_statistics` receives, for each parameter name, the
    statistics named in ``GRADIENT_STATISTICS``:

    - ``norm_mean`` and ``norm_std``: mean and (population) standard deviation over the epoch's
      batches of the gradient's L2 norm;
    - ``abs_mean``: mean over the batches of the mean absolute gradient entry;
    - ``min`` and ``max``: the smallest and largest gradient entry seen in the epoch.

    A parameter without a gradient in a batch counts as a zero gradient. Under torchrun the tracker
    runs on rank 0 only (gradients are the same on every rank after DDP's reduction).

    Args:
        keep_bias: also track parameters named ``bias`` (skipped by default, as in Poutyne).

    Example:
        >>> class PrintGradients(GradientTracker):
        ...     def log_gradient_statistics(self, epoch_number, statistics, logs):
        ...         for name, values in statistics.items():
        ...             print(epoch_number, name, values["norm_mean"])
        >>> exp.train(train_loader, epochs=10, callbacks=[PrintGradients()])
    """

    main_process_only = True

    reads_every_gradient = True

    needs_batch_values = False

    def __init__(self, keep_bias: bool = False) -> None:
        super().__init__()
        self.keep_bias = bool(keep_bias)
        self.names: list[str] = []
        self._parameters: list[torch.nn.Parameter] = []
        self._sizes = torch.zeros(0)
        self.count = 0
        self.stats: dict[str, torch.Tensor] | None = None

    # ---------------------------------------------------------------------------- to override
    def log_gradient_statistics(
        self, epoch_number: int, statistics: dict[str, dict[str, float]], logs: dict[str, Any]
    ) -> None:
        """Receive the statistics of an epoch; the base does nothing with them.

        Args:
            epoch_number: the epoch that ended.
            statistics: for each tracked parameter name (``"0.weight"``), its statistics by name
                (``"norm_mean"``, ``"norm_std"``, ``"abs_mean"``, ``"min"``, ``"max"``), as floats.
            logs: the epoch's logs, as ``on_epoch_end`` receives them.
        """

    # ---------------------------------------------------------------------------------- hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        named = [
            (n, p)
            for n, p in plain_module(self.trainer.network).named_parameters()
            if p.requires_grad and (self.keep_bias or "bias" not in n.rsplit(".", 1)[-1])
        ]
        names = [n for n, _ in named]
        if self.stats is not None and names != self.names:
            raise ConfigurationError(
                f"{type(self).__name__}: the saved statistics track {self.names}, but the network "
                f"now has {names} to track. Keep keep_bias and the network as in the interrupted run."
            )
        self.names, self._parameters = names, [p for _, p in named]
        if self._parameters:
            device = self._parameters[0].device
            # built once: a tensor made from host numbers at every step would wait for the device
            self._sizes = torch.tensor(
                [p.numel() for p in self._parameters], dtype=torch.float32, device=device
            )
            if self.stats is not None:
                self.stats = {key: value.to(device) for key, value in self.stats.items()}

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.count, self.stats = 0, None

    def on_backward_end(self, batch_number: int) -> None:
        if not self._parameters:
            return
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._parameters]
            norms = torch.stack(torch._foreach_norm(grads, 2)).float()
            abs_sums = torch.stack(torch._foreach_norm(grads, 1)).float()
            mins = torch.stack([g.min() for g in grads]).float()
            maxs = torch.stack([g.max() for g in grads]).float()
            self._accumulate(norms, abs_sums / self._sizes, mins, maxs)

    def _accumulate(
        self, norms: torch.Tensor, abs_means: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor
    ) -> None:
        self.count += 1
        if self.stats is None:
            self.stats = {
                "norm_mean": norms,
                "norm_m2": torch.zeros_like(norms),
                "abs_sum": abs_means,
                "min": mins,
                "max": maxs,
            }
            return
        stats = self.stats
        delta = norms - stats["norm_mean"]  # Welford's update: stable without float64
        stats["norm_mean"] = stats["norm_mean"] + delta / self.count
        stats["norm_m2"] = stats["norm_m2"] + delta * (norms - stats["norm_mean"])
        stats["abs_sum"] = stats["abs_sum"] + abs_means
        stats["min"] = torch.minimum(stats["min"], mins)
        stats["max"] = torch.maximum(stats["max"], maxs)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if self.stats is None:
            return
        stats = self.stats
        table = torch.stack(  # one copy to the host for the whole epoch
            [
                stats["norm_mean"],
                (stats["norm_m2"] / self.count).sqrt(),
                stats["abs_sum"] / self.count,
                stats["min"],
                stats["max"],
            ]
        ).tolist()
        statistics = {
            name: {statistic: table[row][column] for row, statistic in enumerate(GRADIENT_STATISTICS)}
            for column, name in enumerate(self.names)
        }
        self.log_gradient_statistics(epoch_number, statistics, logs)
        self.count, self.stats = 0, None

    # ---------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The tracked names, the batches counted and the running statistics of the epoch (CPU)."""
        stats = None if self.stats is None else {k: v.detach().cpu() for k, v in self.stats.items()}
        return {"names": list(self.names), "count": self.count, "stats": stats}

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return missing_state_keys(type(self).__name__, state, ("names", "count", "stats"))

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.names = list(state["names"])
        self.count = int(state["count"])
        self.stats = None if state["stats"] is None else dict(state["stats"])
