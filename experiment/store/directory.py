"""RunDirectory: the only code that knows the paths and file names of a run directory.

Layout (a stable contract, documented in README)::

    RUN/
      experiment.json             metadata, command, config and status
      log.tsv                     one row per completed epoch
      test_log.tsv                one row per test() call
      checkpoints/
        state-000042.pt           full training state of commit 42 (and the previous one)
        state-000042/             or, with strategy="fsdp", a folder: DCP shards, .metadata, tree.pt
        best-epoch0007.pt         weights of the best epoch (a plain state_dict)
      tensorboard/                event files, one scalar per logged key and epoch
      .lock, .lock.holder         the directory lock and who holds it
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiment.arguments import reject
from experiment.errors import RunDirectoryError
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.files import (
    atomic_write_text,
    on_read_only_mount,
    read_only_mount_message,
    refuse_symlink,
)
from experiment.store.lock import DirectoryLock, is_locked
from experiment.store.metadata import check_metadata, plain_config

# Whole names (fullmatch), ASCII digits only: "state-000042.pt\n" or other digits are not ours.
_STATE = re.compile(r"state-([0-9]+)\.pt", re.ASCII)
#: A directory commit (sharded state, FSDP2): "state-000042/"; its temporary name ".state-000042.tmp".
_STATE_DIR = re.compile(r"state-([0-9]+)", re.ASCII)
_TEMPORARY_DIR = re.compile(r"\.state-[0-9]+\.tmp", re.ASCII)
_BEST = re.compile(r"best-epoch([0-9]+)\.pt", re.ASCII)
#: Temporary files of experiment.store.files.atomic_writer: ".NAME.XXXXXXXX.tmp".
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp", re.ASCII | re.DOTALL)


class RunDirectory:
    """Paths of one run directory, its metadata and its lock.

    Args:
        path: the run directory; it need not exist yet.

    Raises:
        ConfigurationError: ``path`` is not a path (None, a number, an empty string).
        RunDirectoryError: ``path`` exists and is not a directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise reject(
                "directory", path, "a path (a str or pathlib.Path) to the run directory, existing or not"
            )
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(
                f"The run directory {self.path} is a file; expected a directory (existing or not). "
                "Choose another path or move the file away."
            )
        self.metadata_path = self.path / "experiment.json"
        self.log_path = self.path / "log.tsv"
        self.test_log_path = self.path / "test_log.tsv"
        self.checkpoints_dir = self.path / "checkpoints"
        self.tensorboard_dir = self.path / "tensorboard"
        self.lock_path = self.path / ".lock"
        self.holder_path = self.path / ".lock.holder"

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def is_run(self) -> bool:
        """Whether the directory holds a run (its experiment.json exists)."""
        return self.metadata_path.is_file()

    def prepare(self) -> None:
        """Create the directory and its checkpoints folder, and check that they are writable.

        Raises:
            RunDirectoryError: the directory cannot be created or written, or a file or folder
                of the run is a symbolic link.
        """
        self.check_links()
        try:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if error.errno == errno.EROFS and self.path.is_dir():
                raise RunDirectoryError(read_only_mount_message(self.path)) from error
            raise RunDirectoryError(
                f"Cannot create the run directory {self.path}: {error.strerror}. Choose a writable "
                "location or fix the permissions."
            ) from error
        for folder in (self.path, self.checkpoints_dir):
            if on_read_only_mount(folder):
                raise RunDirectoryError(read_only_mount_message(folder))
            if not os.access(folder, os.W_OK | os.X_OK):
                raise RunDirectoryError(
                    f"The run directory {folder} is read-only; training needs to write checkpoints "
                    "and logs there. Fix its permissions (chmod u+w) or choose another directory."
                )

    def lock(self) -> DirectoryLock:
        """The directory's lock (not yet acquired), taken by every process that writes the run.

        Raises:
            RunDirectoryError: a file or folder of the run is a symbolic link (see :meth:`check_links`).
        """
        self.check_links()
        return DirectoryLock(self.lock_path, self.holder_path)

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """The directory's lock held to read saved files; a shared lock that writes nothing where
        this process may not write the run (see :meth:`DirectoryLock.reading`).

        Raises:
            RunDirectoryError: a file or folder of the run is a symbolic link.
            DirectoryLockedError: another live process holds the lock (on entering).
        """
        return self.lock().reading()

    def check_links(self) -> None:
        """Check that no file or folder of the run is a symbolic link, which a write or a cleanup
        would follow out of the run directory.

        Raises:
            RunDirectoryError: naming the first link found.
        """
        for path in (self.metadata_path, self.log_path, self.test_log_path, self.checkpoints_dir):
            refuse_symlink(path)
        for path in (self.tensorboard_dir, self.lock_path, self.holder_path):
            refuse_symlink(path)

    def is_locked(self) -> bool:
        return is_locked(self.lock_path)

    # ------------------------------------------------------------------------------ metadata
    def read_metadata(self) -> dict[str, Any]:
        """The content of experiment.json.

        Raises:
            RunDirectoryError: the file is missing, not valid JSON, or not of the shape this
                library writes (the message names the field).
        """
        try:
            if not stat.S_ISREG(os.stat(self.metadata_path).st_mode):  # a FIFO would block forever
                raise RunDirectoryError(
                    f"{self.metadata_path} is not a regular file; expected the JSON file this library "
                    "writes. Remove it, or restore it from a backup."
                )
            return check_metadata(
                json.loads(self.metadata_path.read_text(encoding="utf-8")), self.metadata_path
            )
        except FileNotFoundError:
            raise RunDirectoryError(
                f"{self.path} is not a run directory: it has no experiment.json. Pass the directory "
                "an Experiment was created with."
            ) from None
        except ValueError as error:  # UnicodeDecodeError included
            raise RunDirectoryError(
                f"{self.metadata_path} is not valid JSON: {error}. Fix it with a text editor or "
                "restore it from a backup."
            ) from error

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        """Write experiment.json atomically; a new run also records its resolved ``directory``.

        Raises:
            RunDirectoryError: experiment.json is a symbolic link.
            ConfigurationError: the config is not JSON data.
        """
        refuse_symlink(self.metadata_path)
        if not self.metadata_path.exists() and metadata.get("directory") is None:
            metadata = {**metadata, "directory": str(self.path.resolve())}
        try:
            text = json.dumps(metadata, indent=2, sort_keys=False, allow_nan=True)
        except TypeError:
            plain_config(metadata.get("config"))  # names the key that is not JSON data
            raise
        atomic_write_text(self.metadata_path, text + "\n")

    # --------------------------------------------------------------------------- checkpoints
    def state_path(self, serial: int) -> Path:
        return self.checkpoints_dir / f"state-{serial:06d}.pt"

    def state_dir_path(self, serial: int) -> Path:
        """The folder of a directory commit (sharded state) of ``serial``."""
        return self.checkpoints_dir / f"state-{serial:06d}"

    def temporary_state_dir(self, serial: int) -> Path:
        """Where a directory commit of ``serial`` is written before its rename commits it."""
        return self.checkpoints_dir / f".state-{serial:06d}.tmp"

    def checkpoints(self) -> list[Checkpoint]:
        """The committed checkpoints (the units of the full state: files, or folders of shards),
        newest first."""
        found = self._numbered(_STATE) + self._numbered(_STATE_DIR, folders=True)
        return [Checkpoint(serial, path) for serial, path in sorted(found, reverse=True)]

    def state_paths(self) -> list[Path]:
        """The paths of the committed checkpoints, newest first."""
        return [checkpoint.path for checkpoint in self.checkpoints()]

    def best_path(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"best-epoch{epoch:04d}.pt"

    def best_paths(self) -> dict[int, Path]:
        """The best-weights files by epoch."""
        return dict(self._numbered(_BEST))

    def _numbered(self, pattern: re.Pattern[str], *, folders: bool = False) -> list[tuple[int, Path]]:
        found = []
        for path in (_folders if folders else _regular_files)(self.checkpoints_dir):
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return found

    def temporary_files(self) -> list[Path]:
        """Leftovers of atomic writes cut short by a crash, in the run folder and its checkpoints."""
        found: list[Path] = []
        for folder in (self.path, self.checkpoints_dir):
            found += sorted(p for p in _regular_files(folder) if _TEMPORARY.fullmatch(p.name))
        return found

    def temporary_directories(self) -> list[Path]:
        """Directory commits that a crash cut short before their rename (``.state-000042.tmp/``)."""
        return sorted(p for p in _folders(self.checkpoints_dir) if _TEMPORARY_DIR.fullmatch(p.name))

    def size_on_disk(self) -> int:
        """Bytes used by every file below the directory (links are not followed)."""
        total = 0
        for folder, _, names in os.walk(self.path):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total


def _folders(folder: Path) -> Iterator[Path]:
    """The folders in ``folder`` (not links to folders), none when it is not a folder."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                    yield Path(entry.path)
            except FileNotFoundError:  # removed meanwhile
                continue


def _regular_files(folder: Path) -> Iterator[Path]:
    """The regular files of ``folder`` (not links, FIFOs or folders), none when it is not a folder."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                regular = stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)
            except FileNotFoundError:  # removed meanwhile (a live run prunes its checkpoints)
                continue
            if regular:
                yield Path(entry.path)
