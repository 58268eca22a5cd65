"""The derived files of a run: log.tsv and the TensorBoard scalars, written before each epoch commit.

They may lead the committed state after a crash, never lag it: an epoch's row and scalars are
flushed before its checkpoint is committed. On resume, :meth:`EpochRecorder.open` repairs them to the
committed history: log.tsv is rewritten if it differs, and TensorBoard is reopened with
``purge_step`` so that readers drop the events written past the committed epoch.
"""

from __future__ import annotations

import numbers
from typing import Any

from experiment import tsv
from experiment.directory import RunDirectory


class EpochRecorder:
    """Appends one log.tsv row and one TensorBoard scalar per key at each epoch end."""

    def __init__(self, directory: RunDirectory, *, tensorboard: bool = True) -> None:
        self.directory = directory
        self.tensorboard = tensorboard
        self._writer: Any = None

    def open(self, history: list[dict[str, Any]]) -> None:
        """Repair the derived files to ``history`` (the committed epochs) and open the writer."""
        tsv.repair(self.directory.log_path, history)
        if not self.tensorboard:
            return
        from torch.utils.tensorboard import SummaryWriter

        purge_step = len(history) + 1 if self.directory.tensorboard_dir.exists() else None
        self._writer = SummaryWriter(str(self.directory.tensorboard_dir), purge_step=purge_step)

    def record(self, logs: dict[str, Any]) -> None:
        """Write an epoch's row and scalars and flush them (before the epoch is committed)."""
        tsv.append_row(self.directory.log_path, logs)
        if self._writer is None:
            return
        epoch = int(logs["epoch"])
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), epoch)
        self._writer.flush()

    def add_hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        if self._writer is not None and config:
            self._writer.add_hparams(config, metrics, run_name=".")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
