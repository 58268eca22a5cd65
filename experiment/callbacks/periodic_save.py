"""PeriodicSaveCallback: write a file at epoch ends, every ``period`` epochs or on a new best.

The file name is a format string filled with the epoch number and the epoch's logs, so one run can
keep several files (``weights.{epoch:02d}-{val_loss:.2f}.ckpt``) or overwrite one. Writes go through
the library's one atomic writer, so a killed process leaves either the previous file or the new one,
never half of it.

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
from typing import IO, Any

from experiment.arguments import check_int, reject
from experiment.callbacks.base import Callback
from experiment.callbacks.filename_templates import fill_template, names_epoch
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.errors import ConfigurationError
from experiment.state.best import (
    HoldsMonitoredBest,
    MonitoredBest,
    known_mode,
    monitored_value,
)
from experiment.store.files import atomic_writer

logger = logging.getLogger(__name__)


class PeriodicSaveCallback(HoldsMonitoredBest, Callback):
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
        if not isinstance(open_mode, str) or not any(letter in open_mode for letter in "wax"):
            raise reject("open_mode", open_mode, "a write mode of open() such as 'wb' or 'w'")
        if read_mode is None:
            read_mode = "rb" if "b" in open_mode else "r"
        if not isinstance(read_mode, str) or "r" not in read_mode or any(c in read_mode for c in "wax+"):
            raise reject("read_mode", read_mode, "a read mode of open() such as 'rb' or 'r'")
        self.filename = os.fspath(filename)
        self.temporary_filename = None if temporary_filename is None else os.fspath(temporary_filename)
        if restore_best:
            self._check_restorable(save_best_only)
        if mode is None and not (save_best_only or restore_best) and known_mode(monitor) is None:
            mode = "min"  # saves every `period` epochs: no file depends on which value is best
        self.best = MonitoredBest(monitor, mode, owner=type(self).__name__)
        self.save_best_only = save_best_only
        self.keep_only_last_best = keep_only_last_best
        self.period = period
        self.verbose = verbose
        self.atomic_write = atomic_write
        self.open_mode = open_mode
        self.restore_best = bool(restore_best)
        self.read_mode = read_mode
        self.best_filename: str | None = None
        self.pending_removal: str | None = None

    def _check_restorable(self, save_best_only: bool) -> None:
        name = type(self).__name__
        if not self._can_restore():
            raise ConfigurationError(
                f"restore_best=True: {name} cannot read a saved file back (it implements no "
                "restore(fd)). Drop restore_best, or implement restore(fd) in your subclass."
            )
        if not save_best_only and not names_epoch(self.filename):
            raise ConfigurationError(
                f"restore_best=True without save_best_only: received filename={self.filename!r}, "
                "which every save overwrites, so the best epoch's file would be lost; expected a "
                "filename holding {epoch} (e.g. 'weights-{epoch:03d}.pt'). Put {epoch} in it, or "
                "pass save_best_only=True."
            )

    @property
    def restores_weights_at_end(self) -> bool:  # type: ignore[override]
        """Whether ``on_train_end`` reads the best file back (``restore_best``)."""
        return self.restore_best

    # ------------------------------------------------------------------------------ to override
    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        """Write this epoch's content to the open file ``fd``."""
        raise NotImplementedError(f"{type(self).__name__} must implement save_file(fd, epoch_number, logs).")

    def restore(self, fd: IO[Any]) -> None:
        """Read back a file this callback wrote, open in ``read_mode`` (at the end of training with
        ``restore_best``: the best one). Subclasses that can restore implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement restore(fd).")

    def _can_restore(self) -> bool:
        return type(self).restore is not PeriodicSaveCallback.restore

    def restore_file(self, path: Path) -> None:
        """Restore from the file at ``path``: open it in ``read_mode`` and call :meth:`restore`."""
        with open(path, self.read_mode) as fd:
            self.restore(fd)

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
    def format_filename(self, template: str, epoch_number: int, logs: dict[str, Any]) -> str:
        """``template`` filled with ``epoch`` and the logs' keys.

        Raises:
            ConfigurationError: the template names a key that is not logged, or is not a valid
                format string.
        """
        return fill_template(template, epoch_number, logs)

    def _write(self, path_text: str, epoch_number: int, logs: dict[str, Any]) -> None:
        if not self.is_main_process:  # every rank keeps the state; rank 0 alone writes
            return
        path = Path(path_text)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.atomic_write:
            with open(path, self.open_mode) as fd:
                self.save_file(fd, epoch_number, logs)
            return
        temporary = None
        if self.temporary_filename is not None:
            temporary = Path(self.format_filename(self.temporary_filename, epoch_number, logs))
        with atomic_writer(path, mode=self.open_mode, temporary_path=temporary) as fd:
            self.save_file(fd, epoch_number, logs)

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
