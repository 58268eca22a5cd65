"""TensorBoard callbacks for a writer of the user's own: epoch scalars and gradient statistics.

The run directory already holds TensorBoard scalars of every epoch (``RUN/tensorboard/``), repaired
on resume, and the custom-scalars layout that :class:`TensorBoardLogger` writes. These callbacks are
for a ``SummaryWriter`` the user creates, elsewhere or with other settings. Both log on the epoch
axis (TensorBoard's step is the epoch number).

A restarted script creates a new writer, hence a new event file next to the old one, which may hold
scalars of an epoch that was written but not committed before the crash. With ``purge_on_resume``
(the default) a callback that starts on a resumed run writes TensorBoard's restart marker at the
first epoch not committed; readers then drop the older events from that step on. TensorBoard
purges by step for every tag of the directory, so pass ``purge_on_resume=False`` when the writer
also holds data on another step axis (per batch, say), and give that writer ``purge_step`` yourself.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from experiment.callbacks.base import Callback, missing_state_keys
from experiment.errors import ConfigurationError
from experiment.state.torch_nodes import plain_module
from experiment.store.tensorboard_layout import LAYOUT_CATEGORY, paired_layout

__all__ = [
    "GRADIENT_STATISTICS",
    "LAYOUT_CATEGORY",
    "TensorBoardGradientTracker",
    "TensorBoardLogger",
    "mark_restart",
    "paired_layout",
]

#: The statistics written per parameter, in the order of the tracker's accumulators.
GRADIENT_STATISTICS = ("norm_mean", "norm_std", "abs_mean", "min", "max")


def mark_restart(writer: Any, step: int) -> None:
    """Write TensorBoard's restart marker: readers drop earlier events at ``step`` and after.

    This is what ``SummaryWriter(purge_step=step)`` does when it opens its file, for a writer that
    is already open.
    """
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    # SummaryWriter has no public way to add a raw event; its own purge_step goes through the same
    # file writer, which is (re)created on demand by _get_file_writer.
    file_writer = writer._get_file_writer()
    file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))


def _is_resumed(callback: Callback) -> bool:
    if not callback.has_trainer:
        return False
    return callback.trainer.epochs_completed > 0 or callback.trainer.steps_in_epoch > 0


class TensorBoardLogger(Callback):
    """Writes every numeric value of the epoch logs to a ``SummaryWriter``, one point per epoch.

    Tags are the log keys (``loss``, ``val_loss``, ``acc``, ``lr``, ``time``...) and the step is
    the epoch number. The writer is flushed at each epoch end, before the epoch is committed.

    At its first epoch end, the callback also writes a custom-scalars layout (TensorBoard's Custom
    Scalars tab, category ``training and validation``) with one chart per metric that has a
    ``val_`` twin, so that ``loss`` and ``val_loss`` are drawn together. The layout is written at
    step 0, which a resume's restart marker never drops.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (the callback never closes it).
        purge_on_resume: on a resumed run, mark the first uncommitted epoch so that TensorBoard
            drops the scalars the interrupted attempt wrote from that epoch on.

    Example:
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> writer = SummaryWriter("tb/my-run")
        >>> exp.train(train_loader, valid_loader, epochs=10, callbacks=[TensorBoardLogger(writer)])
        >>> writer.close()
    """

    main_process_only = True  # under torchrun, rank 0 alone writes and shows progress

    needs_batch_values = False

    def __init__(self, writer: Any, *, purge_on_resume: bool = True) -> None:
        super().__init__()
        _check_writer(writer)
        self.writer = writer
        self.purge_on_resume = purge_on_resume
        self._layout_written = False

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if self.purge_on_resume and _is_resumed(self):
            mark_restart(self.writer, self.trainer.epochs_completed + 1)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        scalars = {
            key: float(value)
            for key, value in logs.items()
            if key != "epoch" and isinstance(value, numbers.Real) and not isinstance(value, bool)
        }
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, epoch_number)
        if not self._layout_written:
            self._write_layout(scalars)
        self.writer.flush()

    def _write_layout(self, scalars: dict[str, float]) -> None:
        """Write the custom-scalars layout once (a writer without ``add_custom_scalars`` gets none)."""
        self._layout_written = True
        layout = paired_layout(scalars)
        add_custom_scalars = getattr(self.writer, "add_custom_scalars", None)
        if layout and callable(add_custom_scalars):
            add_custom_scalars(layout)


class TensorBoardGradientTracker(Callback):
    """Writes per-parameter gradient statistics of each epoch to a ``SummaryWriter``.

    After every backward pass, for each tracked parameter, the L2 norm of its gradient, the mean of
    its absolute values and its smallest and largest entries are folded into running statistics kept
    on the device (no copy to the host per batch). At the epoch end, five scalars per parameter are
    written under ``gradients/<parameter name>/``:

    - ``norm_mean`` and ``norm_std``: mean and (population) standard deviation over the epoch's
      batches of the gradient's L2 norm;
    - ``abs_mean``: mean over the batches of the mean absolute gradient entry;
    - ``min`` and ``max``: the smallest and largest gradient entry seen in the epoch.

    A parameter without a gradient in a batch counts as a zero gradient. The running statistics are
    saved with each checkpoint, so an epoch interrupted and resumed reports the same values as an
    uninterrupted one.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (the callback never closes it).
        keep_bias: also track parameters named ``bias`` (skipped by default).
        purge_on_resume: as in :class:`TensorBoardLogger`.

    Example:
        >>> writer = SummaryWriter("tb/my-run")
        >>> exp.train(train_loader, epochs=10, callbacks=[TensorBoardGradientTracker(writer)])
    """

    main_process_only = True  # under torchrun, rank 0 alone writes and shows progress

    needs_batch_values = False

    def __init__(self, writer: Any, keep_bias: bool = False, *, purge_on_resume: bool = True) -> None:
        super().__init__()
        _check_writer(writer)
        self.writer = writer
        self.keep_bias = bool(keep_bias)
        self.purge_on_resume = purge_on_resume
        self.names: list[str] = []
        self._parameters: list[torch.nn.Parameter] = []
        self._sizes = torch.zeros(0)
        self.count = 0
        self.stats: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        named = [
            (n, p)
            for n, p in plain_module(self.trainer.network).named_parameters()
            if p.requires_grad and (self.keep_bias or "bias" not in n.rsplit(".", 1)[-1])
        ]
        names = [n for n, _ in named]
        if self.stats is not None and names != self.names:
            raise ConfigurationError(
                f"TensorBoardGradientTracker: the saved statistics track {self.names}, but the "
                f"network now has {names} to track. Keep keep_bias and the network as in the "
                "interrupted run."
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
        if self.purge_on_resume and _is_resumed(self):
            mark_restart(self.writer, self.trainer.epochs_completed + 1)

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
        table = torch.stack(
            [
                stats["norm_mean"],
                (stats["norm_m2"] / self.count).sqrt(),
                stats["abs_sum"] / self.count,
                stats["min"],
                stats["max"],
            ]
        ).tolist()
        for statistic, values in zip(GRADIENT_STATISTICS, table, strict=True):
            for name, value in zip(self.names, values, strict=True):
                self.writer.add_scalar(f"gradients/{name}/{statistic}", value, epoch_number)
        self.writer.flush()
        self.count, self.stats = 0, None

    def state_dict(self) -> dict[str, Any]:
        stats = None if self.stats is None else {k: v.detach().cpu() for k, v in self.stats.items()}
        return {"names": list(self.names), "count": self.count, "stats": stats}

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return missing_state_keys("TensorBoardGradientTracker", state, ("names", "count", "stats"))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.names = list(state["names"])
        self.count = int(state["count"])
        self.stats = None if state["stats"] is None else dict(state["stats"])


def _check_writer(writer: Any) -> None:
    if not callable(getattr(writer, "add_scalar", None)) or not callable(getattr(writer, "flush", None)):
        raise ConfigurationError(
            f"writer: received {type(writer).__name__}; expected a SummaryWriter (an object with "
            "add_scalar and flush), e.g. torch.utils.tensorboard.SummaryWriter('runs/name')."
        )
