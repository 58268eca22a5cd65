"""CSVLogger and AtomicCSVLogger: one row per epoch (and optionally per batch) in a CSV file.

Both remember how many bytes of the file belong to the committed state of the run: every
checkpoint records that size after making the rows durable, and a resumed run cuts the file back to
it before writing again. Rows written after the last checkpoint by a run that crashed are dropped
and written again by the resumed run, so no row is ever duplicated or lost.

Batch rows are buffered and written together, at most every ``flush_interval`` seconds and at each
epoch end, checkpoint (``before_commit``) and train end: the training step itself never touches the
file. ``state_dict()`` writes nothing: rows still buffered when it is taken are part of the state,
and a resumed run writes them after cutting the file back.
"""

from __future__ import annotations

import csv
import io
import time
import warnings
from pathlib import Path
from typing import Any

from experiment.arguments import reject
from experiment.callbacks.base import Callback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.state.learning_rates import lr_logs, lr_names
from experiment.store.files import append_text, atomic_writer

_CHUNK = 1 << 20


class CSVLogger(Callback):
    """Writes the logs of each epoch (and each batch if asked) as rows of a CSV file.

    The columns are ``epoch``, (``batch``, ``size``,) ``time``, ``lr``, ``loss``, the batch and
    epoch metrics, then ``val_loss`` and the ``val_`` metrics (empty without validation data).
    Keys of the logs outside these columns are not written. Each row is appended in O(1); the
    file is cut back to the last checkpoint when a run resumes.

    Args:
        filename: the CSV file to write.
        batch_granularity: also write one row per training batch (its ``epoch``, ``batch``,
            ``size``, ``time``, ``lr``, ``loss`` and batch metrics).
        separator: the one-character field separator.
        append: keep what the file holds when a new run starts and add rows after it (no new
            header if the file is not empty). A resumed run always continues its own file.

    Example:
        >>> logger = CSVLogger("runs/blobs/epochs.csv")
        >>> exp.train(train_loader, valid_loader, epochs=10, callbacks=[logger])
        >>> pandas.read_csv("runs/blobs/epochs.csv")
    """

    main_process_only = True  # under torchrun, rank 0 alone writes and shows progress

    #: Seconds between two writes of buffered batch rows; None writes them only at epoch ends,
    #: checkpoints and the end of training.
    flush_interval: float | None = 1.0

    def __init__(
        self,
        filename: str | Path,
        *,
        batch_granularity: bool = False,
        separator: str = ",",
        append: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1 or separator in '\r\n"':
            raise reject(
                "separator",
                separator,
                "one character other than a quote or a line break, such as ',' or '\\t'",
            )
        self.path = Path(filename)
        self.batch_granularity = batch_granularity
        self.separator = separator
        self.append = append
        self.needs_batch_values = batch_granularity
        self.columns: list[str] | None = None
        self.size = 0
        self.rows = 0
        # Rows not yet written, as CSV text: one writer formats every row into this buffer.
        self._pending = io.StringIO()
        self._writer = csv.writer(self._pending, delimiter=separator, lineterminator="\n")
        self._committed_size: int | None = None
        self._last_flush = 0.0

    # -------------------------------------------------------------------------------------- hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if self._committed_size is not None:
            self._continue_file(self._committed_size)
            self._committed_size = None
        else:
            self.columns = self._columns()
            self._start_file()
        self._last_flush = time.monotonic()

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if not self.batch_granularity:
            return
        self._add_row({"epoch": self.trainer.epochs_completed + 1, **lr_logs(self.trainer.optimizer), **logs})
        if self.flush_interval is not None and time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._add_row(logs)
        self.flush()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.flush()

    # -------------------------------------------------------------------------------------- state
    def before_commit(self) -> None:
        """Write the buffered rows durably, so the committed size covers every row so far."""
        self.flush()

    def state_dict(self) -> dict[str, Any]:
        """The columns, the committed size of the file, the row count and the rows not yet written.

        Writes nothing (``before_commit`` does): rows still buffered are kept as text in the state.
        """
        return {
            "columns": self.columns,
            "size": self.size,
            "rows": self.rows,
            "pending": self._pending.getvalue(),
        }

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return missing_state_keys(type(self).__name__, state, ("columns", "size", "rows"))

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.columns = None if state["columns"] is None else list(state["columns"])
        self.rows = int(state["rows"])
        self._committed_size = int(state["size"])
        self._pending.seek(0)
        self._pending.truncate()
        self._pending.write(state.get("pending", ""))

    # ---------------------------------------------------------------------------------- the file
    def flush(self) -> None:
        """Write the buffered rows to the file (durably)."""
        self._last_flush = time.monotonic()
        text = self._pending.getvalue()
        if not text:
            return
        self._pending.seek(0)
        self._pending.truncate()
        self._write(text)

    def _write(self, text: str) -> None:
        append_text(self.path, text)
        self.size = self.path.stat().st_size

    def _replace(self, keep: int, text: str) -> None:
        """Atomically replace the file with its first ``keep`` bytes followed by ``text``."""
        with atomic_writer(self.path, mode="wb", temporary_path=self._temporary_path()) as out:
            if keep:
                with open(self.path, "rb") as source:
                    remaining = keep
                    while remaining:
                        chunk = source.read(min(_CHUNK, remaining))
                        if not chunk:
                            break
                        out.write(chunk)
                        remaining -= len(chunk)
            out.write(text.encode("utf-8"))
        self.size = self.path.stat().st_size

    def _temporary_path(self) -> Path | None:
        return None

    def _start_file(self) -> None:
        self.rows = 0
        if self.append and self.path.exists() and self.path.stat().st_size > 0:
            self.size = self.path.stat().st_size
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._replace(0, self._format_values(self.columns or []))

    def _continue_file(self, committed: int) -> None:
        """Cut the file back to the committed size of a resumed run."""
        current = self.path.stat().st_size if self.path.exists() else None
        if current == committed:
            self.size = committed
        elif current is not None and current > committed:
            self._replace(committed, "")
        elif current is None:
            warnings.warn(
                f"{type(self).__name__}: {self.path} is missing; the resumed run starts it "
                "again with a header (the rows of earlier epochs are lost).",
                stacklevel=2,
            )
            self.rows = 0
            self._start_file()
        else:
            warnings.warn(
                f"{type(self).__name__}: {self.path} holds {current} bytes, fewer than the "
                f"{committed} of the checkpoint; rows were lost and new rows follow what "
                "is left.",
                stacklevel=2,
            )
            self.size = current
        if self.columns is None:
            self.columns = self._columns()

    # ------------------------------------------------------------------------------------- rows
    def _add_row(self, row: dict[str, Any]) -> None:
        self._writer.writerow([row.get(column) for column in self.columns or []])
        self.rows += 1

    def _format_values(self, values: list[Any]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.separator, lineterminator="\n").writerow(values)
        return buffer.getvalue()

    def _columns(self) -> list[str]:
        metrics = self.trainer.train_metrics
        names = metrics.batch_names() + [name for name, _ in metrics.epoch_metrics]
        head = ["epoch", "batch", "size"] if self.batch_granularity else ["epoch"]
        return [*head, "time", *lr_names(self.trainer.optimizer), *names, *(f"val_{name}" for name in names)]


class AtomicCSVLogger(CSVLogger):
    """A :class:`CSVLogger` whose file is only ever replaced whole, never seen half-written.

    Each write copies the file to a temporary file, adds the new rows and replaces the original
    atomically, so a reader (or a crash) always finds complete rows. A write costs a copy of the
    file, so rows are written at epoch ends, checkpoints and the end of training only (batch rows
    wait in memory until then); for long batch logs prefer :class:`CSVLogger`.

    Args:
        filename: the CSV file to write.
        batch_granularity: also write one row per training batch.
        separator: the one-character field separator.
        append: keep what the file holds when a new run starts.
        temporary_filename: where to write before the replace (on the same file system); by
            default a hidden file next to ``filename``.

    Example:
        >>> exp.train(train_loader, valid_loader, epochs=10,
        ...           callbacks=[AtomicCSVLogger("runs/blobs/epochs.csv")])
    """

    flush_interval = None

    def __init__(
        self,
        filename: str | Path,
        *,
        batch_granularity: bool = False,
        separator: str = ",",
        append: bool = False,
        temporary_filename: str | Path | None = None,
    ) -> None:
        super().__init__(filename, batch_granularity=batch_granularity, separator=separator, append=append)
        self.temporary_path = None if temporary_filename is None else Path(temporary_filename)

    def _write(self, text: str) -> None:
        self._replace(self.size, text)

    def _temporary_path(self) -> Path | None:
        return self.temporary_path
