"""A committed checkpoint as one unit: what the read side asks of it, whatever its files are.

A commit is durable once its unit appears under its final name in ``checkpoints/``. Today the unit
is one file, ``state-NNNNNN.pt``, holding the whole state tree. Readers (resuming, ``exp status``,
``exp ls``, ``exp clean``) take the units from :meth:`RunDirectory.checkpoints
<experiment.store.directory.RunDirectory.checkpoints>` and ask each for the file that holds its
tree, its time, its size, or to be removed whole; none of them looks at the files of a unit. A unit
written as a folder (a sharded commit, renamed into place once complete) answers the same questions.

Example:
    >>> newest = RunDirectory("runs/a").checkpoints()[0]
    >>> newest.name, newest.serial, newest.size()
    ('state-000042.pt', 42, 1843)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One committed unit of a run's state.

    Attributes:
        serial: the commit's number (one more at each commit of the run).
        path: the unit in the run's ``checkpoints/`` folder.
    """

    serial: int
    path: Path

    @property
    def name(self) -> str:
        """The unit's name in ``checkpoints/`` (``state-000042.pt``)."""
        return self.path.name

    @property
    def tree_path(self) -> Path:
        """The file holding the unit's state tree, read with the safe loader."""
        return self.path

    def modified(self) -> float | None:
        """When the unit was committed (its modification time); None if it is gone."""
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def size(self) -> int:
        """The bytes the unit takes on disk; 0 if it is gone."""
        try:
            return os.lstat(self.path).st_size
        except OSError:
            return 0

    def remove(self) -> None:
        """Remove the unit (nothing happens if it is gone already).

        Raises:
            OSError: it cannot be removed (a read-only folder, say).
        """
        self.path.unlink(missing_ok=True)
