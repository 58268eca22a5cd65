"""RunDirectory: the only code that knows the paths and file names of a run directory.

Layout (a stable contract, documented in README)::

    RUN/
      experiment.json             metadata, command, config and status
      log.tsv                     one row per completed epoch
      test_log.tsv                one row per test() call
      checkpoints/
        state-000042.pt           full training state of commit 42 (and the previous one)
        best-epoch0007.pt         weights of the best epoch (a plain state_dict)
      tensorboard/                event files, one scalar per logged key and epoch
      .lock, .lock.holder         the directory lock and who holds it
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from experiment.errors import RunDirectoryError
from experiment.store.files import atomic_write_text
from experiment.store.lock import DirectoryLock, is_locked

_STATE = re.compile(r"^state-(\d+)\.pt$")
_BEST = re.compile(r"^best-epoch(\d+)\.pt$")
#: Temporary files of experiment.store.files.atomic_writer: ".NAME.XXXXXXXX.tmp".
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


class RunDirectory:
    """Paths of one run directory, its metadata and its lock.

    Args:
        path: the run directory; it need not exist yet.

    Raises:
        RunDirectoryError: ``path`` exists and is not a directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
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
            RunDirectoryError: the directory cannot be created or written.
        """
        try:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirectoryError(
                f"Cannot create the run directory {self.path}: {error.strerror}. Choose a writable "
                "location or fix the permissions."
            ) from error
        for folder in (self.path, self.checkpoints_dir):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise RunDirectoryError(
                    f"The run directory {folder} is read-only; training needs to write checkpoints "
                    "and logs there. Fix its permissions (chmod u+w) or choose another directory."
                )

    def lock(self) -> DirectoryLock:
        """The directory's lock (not yet acquired)."""
        return DirectoryLock(self.lock_path, self.holder_path)

    def is_locked(self) -> bool:
        return is_locked(self.lock_path)

    # ------------------------------------------------------------------------------ metadata
    def read_metadata(self) -> dict[str, Any]:
        """The content of experiment.json.

        Raises:
            RunDirectoryError: the file is missing or not valid JSON.
        """
        try:
            return json.loads(self.metadata_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirectoryError(
                f"{self.path} is not a run directory: it has no experiment.json. Pass the directory "
                "an Experiment was created with."
            ) from None
        except ValueError as error:
            raise RunDirectoryError(f"{self.metadata_path} is not valid JSON: {error}.") from error

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        atomic_write_text(self.metadata_path, json.dumps(metadata, indent=2, sort_keys=False) + "\n")

    # --------------------------------------------------------------------------- checkpoints
    def state_path(self, serial: int) -> Path:
        return self.checkpoints_dir / f"state-{serial:06d}.pt"

    def state_paths(self) -> list[Path]:
        """The full-state checkpoints, newest first."""
        return [path for _, path in sorted(self._numbered(_STATE), reverse=True)]

    def best_path(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"best-epoch{epoch:04d}.pt"

    def best_paths(self) -> dict[int, Path]:
        """The best-weights files by epoch."""
        return dict(self._numbered(_BEST))

    def _numbered(self, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for path in self.checkpoints_dir.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return found

    def temporary_files(self) -> list[Path]:
        """Leftovers of atomic writes cut short by a crash, in the run folder and its checkpoints."""
        found: list[Path] = []
        for folder in (self.path, self.checkpoints_dir):
            if folder.is_dir():
                found += sorted(p for p in folder.iterdir() if p.is_file() and _TEMPORARY.match(p.name))
        return found

    def size_on_disk(self) -> int:
        """Bytes used by every file below the directory."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
