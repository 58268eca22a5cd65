"""Writing the files of a saving callback, and reading one back.

:class:`WritesEpochFiles` holds what :class:`~experiment.callbacks.periodic_save.PeriodicSaveCallback`
needs for its files: the file name templates (filled with the epoch number and the epoch's logs,
see :mod:`~experiment.callbacks.filename_templates`), the open and read modes, the write itself, and
the two methods a subclass implements, :meth:`~WritesEpochFiles.save_file` (what goes into a file)
and :meth:`~WritesEpochFiles.restore` (reading one back). Writes go through the library's one atomic
writer unless ``atomic_write`` is false, so a killed process leaves either the previous file or the
new one, never half of it. When to write, and which file is the best, is the callback's business.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from experiment.arguments import reject
from experiment.callbacks.filename_templates import fill_template, names_epoch
from experiment.errors import ConfigurationError
from experiment.store.files import atomic_writer


class WritesEpochFiles:
    """The files of a saving callback: ``filename`` and ``temporary_filename`` (templates),
    ``atomic_write``, ``open_mode`` and ``read_mode``, kept by :meth:`_keep_file_options`.

    A subclass implements :meth:`save_file`, and :meth:`restore` if it can read a file back.
    Only the main process writes (``is_main_process``, from the Callback it is mixed into).
    """

    filename: str
    temporary_filename: str | None
    atomic_write: bool
    open_mode: str
    read_mode: str
    is_main_process: bool

    def _keep_file_options(
        self,
        filename: str | os.PathLike[str],
        *,
        temporary_filename: str | os.PathLike[str] | None,
        atomic_write: bool,
        open_mode: str,
        read_mode: str | None,
    ) -> None:
        """Check the modes, then keep the options (``read_mode`` None: ``"rb"``, or ``"r"`` when
        ``open_mode`` is a text mode).

        Raises:
            ConfigurationError: ``open_mode`` is not a write mode of ``open``, or ``read_mode`` not
                a read mode.
        """
        if not isinstance(open_mode, str) or not any(letter in open_mode for letter in "wax"):
            raise reject("open_mode", open_mode, "a write mode of open() such as 'wb' or 'w'")
        if read_mode is None:
            read_mode = "rb" if "b" in open_mode else "r"
        if not isinstance(read_mode, str) or "r" not in read_mode or any(c in read_mode for c in "wax+"):
            raise reject("read_mode", read_mode, "a read mode of open() such as 'rb' or 'r'")
        self.filename = os.fspath(filename)
        self.temporary_filename = None if temporary_filename is None else os.fspath(temporary_filename)
        self.atomic_write = atomic_write
        self.open_mode = open_mode
        self.read_mode = read_mode

    def _check_restorable(self, save_best_only: bool) -> None:
        """Refuse ``restore_best`` when no file could be read back: without :meth:`restore`, or
        without ``save_best_only`` and with a ``filename`` that every save overwrites.

        Raises:
            ConfigurationError: either case, with what to change.
        """
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

    # ------------------------------------------------------------------------------ to override
    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        """Write this epoch's content to the open file ``fd``."""
        raise NotImplementedError(f"{type(self).__name__} must implement save_file(fd, epoch_number, logs).")

    def restore(self, fd: IO[Any]) -> None:
        """Read back a file this callback wrote, open in ``read_mode`` (at the end of training with
        ``restore_best``: the best one). Subclasses that can restore implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement restore(fd).")

    def _can_restore(self) -> bool:
        return type(self).restore is not WritesEpochFiles.restore

    def restore_file(self, path: Path) -> None:
        """Restore from the file at ``path``: open it in ``read_mode`` and call :meth:`restore`."""
        with open(path, self.read_mode) as fd:
            self.restore(fd)

    # ---------------------------------------------------------------------------------- writing
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
