"""PeriodicSaveCallback: write a file at epoch ends, every ``period`` epochs or on a new best.

The file name is a format string filled with the epoch number and the epoch's logs, so one run can
keep several files (``weights.{epoch:02d}-{val_loss:.2f}.ckpt``) or overwrite one. Writes go through
the library's one atomic writer, so a killed process leaves either the previous file or the new one,
never half of it. How the files are named, written and read back, and the two methods a subclass
implements (``save_file``, ``restore``), are :class:`~experiment.callbacks.epoch_files.WritesEpochFiles`'s;
this module decides when to write and which file is the best.

What the callback remembers (the best value and epoch, the file of the last best, a file waiting to
be removed) is part of the run's checkpoint. After ``keep_only_last_best`` saves a new best, the
previous best file is removed only once that epoch is committed (at the next epoch's start, or at
the start or end of training), so a crash in between never leaves the committed state without its
best file; and a resumed run redoes an uncommitted epoch's save under the same name, so no file is
duplicated.

With ``restore_best``, the end of training reads the best saved file back through :meth:`restore`
(Poutyne's hook). Without ``save_best_only`` the best is the best of the epochs saved every
``period`` epochs, each under its own name: a filename without ``{epoch}`` would be overwritten by
later saves and lose the best one, so it is refused.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from experiment.arguments import check_int
from experiment.callbacks.base import Callback
from experiment.callbacks.epoch_files import WritesEpochFiles
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.errors import ConfigurationError
from experiment.state.best import (
    HoldsMonitoredBest,
    MonitoredBest,
    known_mode,
    monitored_value,
)

logger = logging.getLogger(__name__)


class PeriodicSaveCallback(HoldsMonitoredBest, WritesEpochFiles, Callback):
    """Base class of the callbacks that write a file after some epochs; subclasses say what to write.

    Args:
        filename: path of the file, a format string filled with ``epoch`` and the keys of the
            epoch's logs (``"weights.{epoch:02d}-{val_loss:.2f}.ckpt"``). Missing parent folders
            are created.
        monitor: the logged key that decides the best epoch (with ``save_best_only``).
        mode: ``"min"`` or ``"max"``: whether a lower or a higher ``monitor`` is better; by
            default inferred from ``monitor``'s name (:func:`~experiment.state.best.inferred_mode`;
            needed with ``save_best_only`` only).
        save_best_only: write only when ``monitor`` improves on the best so far (checked every
            epoch; ``period`` then does not apply).
        restore_best: at the end of training, read the best saved file back with :meth:`restore`
            (for subclasses that implement it). With ``save_best_only``, the file of the best
            epoch. Without it, the best of the epochs saved every ``period`` epochs (with
            ``period=1``, the best epoch); ``filename`` must then hold ``{epoch}`` so that each
            save keeps its own file, and ``mode`` must be known, as with ``save_best_only``.
        keep_only_last_best: with ``save_best_only``, remove the previous best file when a new best
            is written under another name.
        period: without ``save_best_only``, write every ``period`` epochs (epochs ``period``,
            ``2 * period``, ...).
        verbose: log a message (``logging`` INFO) at each save and restore.
        temporary_filename: where an atomic write puts its bytes before the final rename (formatted
            like ``filename``; same file system). By default a hidden name next to the file.
        atomic_write: write through a temporary file and an atomic rename (recommended); when
            false, open the final file directly.
        open_mode: the mode given to ``open``: ``"wb"`` for binary data, ``"w"`` for text.
        read_mode: the mode in which ``restore_best`` opens the file for :meth:`restore`; by
            default ``"rb"``, or ``"r"`` when ``open_mode`` is a text mode.

    Raises:
        ConfigurationError: an option is invalid, or ``restore_best`` is asked of a callback that
            cannot restore or with a filename that every save overwrites.

    Example:
        >>> class SaveEpochNumber(PeriodicSaveCallback):
        ...     def save_file(self, fd, epoch_number, logs):
        ...         fd.write(f"{epoch_number}\\n")
        >>> exp.train(train, valid, epochs=5,
        ...           callbacks=[SaveEpochNumber("runs/a/last-epoch.txt", open_mode="w")])
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        *,
        monitor: str = "val_loss",
        mode: str | None = None,
        save_best_only: bool = False,
        keep_only_last_best: bool = False,
        period: int = 1,
        verbose: bool = False,
        temporary_filename: str | os.PathLike[str] | None = None,
        atomic_write: bool = True,
        open_mode: str = "wb",
        restore_best: bool = False,
        read_mode: str | None = None,
    ) -> None:
        super().__init__()
        period = check_int("period", period, minimum=1, expected="a positive integer")
        if keep_only_last_best and not save_best_only:
            raise ConfigurationError(
                "keep_only_last_best=True applies only to best saves; received save_best_only=False. "
                "Pass save_best_only=True as well, or drop keep_only_last_best."
            )
        self._keep_file_options(
            filename,
            temporary_filename=temporary_filename,
            atomic_write=atomic_write,
            open_mode=open_mode,
            read_mode=read_mode,
        )
        if restore_best:
            self._check_restorable(save_best_only)
        if mode is None and not (save_best_only or restore_best) and known_mode(monitor) is None:
            mode = "min"  # saves every `period` epochs: no file depends on which value is best
        self.best = MonitoredBest(monitor, mode, owner=type(self).__name__)
        self.save_best_only = save_best_only
        self.keep_only_last_best = keep_only_last_best
        self.period = period
        self.verbose = verbose
        self.restore_best = bool(restore_best)
        self.best_filename: str | None = None
        self.pending_removal: str | None = None

    @property
    def restores_weights_at_end(self) -> bool:  # type: ignore[override]
        """Whether ``on_train_end`` reads the best file back (``restore_best``)."""
        return self.restore_best

    # ------------------------------------------------------------------------------------ hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self._remove_pending()

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._remove_pending()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self._remove_pending()
        if self.restore_best:
            self._restore_best()

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        role = f"{type(self).__name__}(monitor=...)"
        if self.save_best_only:
            value = monitored_value(logs, self.monitor, role=role)
            if self.best.improves(value):
                self._save_best(epoch_number, logs, value)
        elif epoch_number % self.period == 0:
            tracked = monitored_value(logs, self.monitor, role=role) if self.restore_best else None
            path = self.format_filename(self.filename, epoch_number, logs)
            self._write(path, epoch_number, logs)
            self._log("Epoch %d: saved %s", epoch_number, path)
            if self.best.update(tracked, epoch_number):  # None (no best) without restore_best
                self.best_filename = path

    def _restore_best(self) -> None:
        if self.best_filename is None:
            warnings.warn(
                f"{type(self).__name__}(restore_best=True): no file was saved with {self.monitor!r} "
                "logged, nothing to restore.",
                stacklevel=3,
            )
            return
        self.restore_file(Path(self.best_filename))
        self._log("Restored epoch %s from %s", self.best_epoch, self.best_filename)

    def _save_best(self, epoch_number: int, logs: dict[str, Any], value: float) -> None:
        path = self.format_filename(self.filename, epoch_number, logs)
        self._write(path, epoch_number, logs)
        self._log(
            "Epoch %d: %s improved from %s to %s; saved %s",
            epoch_number,
            self.monitor,
            self.best_value,
            value,
            path,
        )
        previous = self.best_filename
        self.best.update(value, epoch_number)
        self.best_filename = path
        if self.keep_only_last_best and previous is not None and previous != path:
            # Removed once this epoch is committed: until then the committed best must stay.
            self.pending_removal = previous

    # ---------------------------------------------------------------------------------- helpers
    def _remove_pending(self) -> None:
        if self.pending_removal is not None and self.is_main_process:
            Path(self.pending_removal).unlink(missing_ok=True)
            self._log("Removed the previous best file %s", self.pending_removal)
            self.pending_removal = None

    def _log(self, message: str, *args: Any) -> None:
        logger.log(logging.INFO if self.verbose else logging.DEBUG, message, *args)

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The best (monitor, mode, epoch, value), the file of the last best, a file to remove."""
        return {
            "best": self.best.state_dict(),
            "best_filename": self.best_filename,
            "pending_removal": self.pending_removal,
        }

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        """Missing keys of a saved state (a changed monitor only warns when loading)."""
        keys = ("best", "best_filename", "pending_removal")
        return missing_state_keys(type(self).__name__, state_dict, keys) or (
            self.best.state_problems(state_dict["best"])
        )

    @checked_load
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved best; one of another monitor or mode warns and the best starts fresh.

        The file bookkeeping (the last best file, a file waiting to be removed) is kept either way,
        so no file is left behind.
        """
        self.best.load_state_dict(state_dict["best"])
        self.best_filename = state_dict["best_filename"]
        self.pending_removal = state_dict["pending_removal"]
