"""The derived files of a run: log.tsv and the TensorBoard scalars, written before each epoch commit.

They may lead the committed state after a crash, never lag it: an epoch's row and scalars are
flushed before its checkpoint is committed. On resume, :meth:`EpochRecorder.open` repairs them to the
committed history: log.tsv is rewritten if it differs, and TensorBoard is reopened with
``purge_step`` so that readers drop the events written past the committed epoch.

Each writer also writes, with its first scalars, the custom-scalars layout that charts each metric
with its ``val_`` twin (TensorBoard's Custom Scalars tab), over the keys of the committed epochs and
of the new one. It is written at step 0, which no ``purge_step`` drops, so a resumed run keeps it; a
resume writes it again, and TensorBoard shows the newest layout of the run, which holds every chart
of the ones before.
"""

from __future__ import annotations

import numbers
import re
import time
from pathlib import Path
from typing import Any

from experiment.store import tsv
from experiment.store.directory import RunDirectory
from experiment.store.files import fsync_dir
from experiment.store.metadata import flat_hparams
from experiment.store.tensorboard_layout import paired_layout


class EpochRecorder:
    """Appends one log.tsv row and one TensorBoard scalar per key at each epoch end (and, once per
    writer, the custom-scalars layout)."""

    def __init__(
        self, directory: RunDirectory, *, tensorboard: bool = True, hparams: dict[str, Any] | None = None
    ) -> None:
        self.directory = directory
        self.tensorboard = tensorboard
        self.hparams = dict(hparams or {})
        self._writer: Any = None
        self._hparams_written = False
        self._layout_written = False
        self._committed_keys: list[str] = []

    def open(self, history: list[dict[str, Any]]) -> None:
        """Repair the derived files to ``history`` (the committed epochs) and open the writer."""
        tsv.repair(self.directory.log_path, history)
        if not self.tensorboard:
            return
        from torch.utils.tensorboard import SummaryWriter

        existed = self.directory.tensorboard_dir.exists()
        if existed:
            order_event_files(self.directory.tensorboard_dir)
        purge_step = len(history) + 1 if existed else None
        self._writer = SummaryWriter(str(self.directory.tensorboard_dir), purge_step=purge_step)
        self._layout_written = False
        self._committed_keys = list(dict.fromkeys(key for logs in history for key in _scalar_keys(logs)))
        if not existed and history:  # the folder was deleted: rebuild it from the committed epochs
            for logs in history:
                self._write_scalars(logs)
            self._writer.flush()

    def record(self, logs: dict[str, Any]) -> None:
        """Write an epoch's row and scalars and flush them (before the epoch is committed)."""
        # Not fsynced: after a crash, open() rebuilds log.tsv from the committed history.
        tsv.append_row(self.directory.log_path, logs, durable=False)
        if self._writer is None:
            return
        self._write_scalars(logs)
        self._writer.flush()

    def _write_scalars(self, logs: dict[str, Any]) -> None:
        epoch = int(logs["epoch"])
        scalars = _scalar_keys(logs)
        for key in scalars:
            self._writer.add_scalar(key, float(logs[key]), epoch)
        if not self._layout_written:
            self._write_layout(scalars)
        if self.hparams and not self._hparams_written:
            self.add_hparams(self.hparams, [key for key in scalars if key not in ("time", "lr")])
            self._hparams_written = True

    def _write_layout(self, scalars: list[str]) -> None:
        """Write the custom-scalars layout of the committed keys and ``scalars`` (none without a
        ``val_`` twin), at step 0."""
        self._layout_written = True
        layout = paired_layout(list(dict.fromkeys([*self._committed_keys, *scalars])))
        if layout:
            self._writer.add_custom_scalars(layout)

    def add_hparams(self, config: dict[str, Any], metric_tags: list[str]) -> None:
        """Declare the run's hyperparameters to TensorBoard's HParams tab, in the run's own folder.

        Only the hparams summaries are written (at step 0, which a resume never purges); the metric
        columns of the tab refer to the scalars already logged under ``metric_tags``. Nested values
        are flattened to "a.b" keys; values other than numbers, strings and booleans become text.
        """
        if self._writer is None or not config:
            return
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, _ = hparams(flat_hparams(config), dict.fromkeys(metric_tags, 0.0))
        self._writer.file_writer.add_summary(experiment)
        self._writer.file_writer.add_summary(session_start)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _scalar_keys(logs: dict[str, Any]) -> list[str]:
    """The keys of an epoch's logs written as TensorBoard scalars: the numbers, but the epoch."""
    return [
        key
        for key, value in logs.items()
        if key != "epoch" and isinstance(value, numbers.Real) and not isinstance(value, bool)
    ]


def order_event_files(tensorboard_dir: Path) -> None:
    """Rename the event files dated this second or later, so that a writer opened now sorts last.

    Readers take a run's event files in the order of their names, which begin with the second their
    writer was opened. A file from the same second (another pid, a uid with more digits) or from a
    clock that ran ahead would sort after the new file, and its stale events would be read after the
    new file's purge. Renamed files keep their order; each rename is atomic.
    """
    now = int(time.time())
    prefix = f"events.out.tfevents.{now - 1:010d}.~"
    names = sorted(path.name for path in tensorboard_dir.iterdir() if "tfevents" in path.name)
    late = [name for name in names if _opened_second(name) >= now]
    rank = sum(name.startswith(prefix) for name in names)
    for name in late:
        (tensorboard_dir / name).rename(tensorboard_dir / f"{prefix}{rank:06d}.{name}")
        rank += 1
    if late:
        fsync_dir(tensorboard_dir)


def _opened_second(name: str) -> int:
    match = re.match(r"events\.out\.tfevents\.(\d+)\.", name)
    return int(match.group(1)) if match else 0
