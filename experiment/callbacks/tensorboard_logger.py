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

from experiment.callbacks.base import Callback
from experiment.callbacks.gradient_tracker import GRADIENT_STATISTICS, GradientTracker
from experiment.errors import ConfigurationError
from experiment.store.tensorboard_layout import LAYOUT_CATEGORY, paired_layout

__all__ = [
    "GRADIENT_STATISTICS",
    "LAYOUT_CATEGORY",
    "TensorBoardGradientTracker",
    "TensorBoardLogger",
    "mark_restart",
    "paired_layout",
]


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


class TensorBoardGradientTracker(GradientTracker):
    """Writes per-parameter gradient statistics of each epoch to a ``SummaryWriter``.

    The statistics are those of :class:`~experiment.callbacks.gradient_tracker.GradientTracker`
    (kept on the device, saved with each checkpoint, so that an epoch interrupted and resumed
    reports the same values as an uninterrupted one). At the epoch end, five scalars per parameter
    are written under ``gradients/<parameter name>/``: ``norm_mean``, ``norm_std``, ``abs_mean``,
    ``min`` and ``max``.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (the callback never closes it).
        keep_bias: also track parameters named ``bias`` (skipped by default).
        purge_on_resume: as in :class:`TensorBoardLogger`.

    Example:
        >>> writer = SummaryWriter("tb/my-run")
        >>> exp.train(train_loader, epochs=10, callbacks=[TensorBoardGradientTracker(writer)])
    """

    def __init__(self, writer: Any, keep_bias: bool = False, *, purge_on_resume: bool = True) -> None:
        super().__init__(keep_bias=keep_bias)
        _check_writer(writer)
        self.writer = writer
        self.purge_on_resume = purge_on_resume

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        super().on_train_begin(logs)
        if self.purge_on_resume and _is_resumed(self):
            mark_restart(self.writer, self.trainer.epochs_completed + 1)

    def log_gradient_statistics(
        self, epoch_number: int, statistics: dict[str, dict[str, float]], logs: dict[str, Any]
    ) -> None:
        for statistic in GRADIENT_STATISTICS:
            for name, values in statistics.items():
                self.writer.add_scalar(f"gradients/{name}/{statistic}", values[statistic], epoch_number)
        self.writer.flush()


def _check_writer(writer: Any) -> None:
    if not callable(getattr(writer, "add_scalar", None)) or not callable(getattr(writer, "flush", None)):
        raise ConfigurationError(
            f"writer: received {type(writer).__name__}; expected a SummaryWriter (an object with "
            "add_scalar and flush), e.g. torch.utils.tensorboard.SummaryWriter('runs/name')."
        )
