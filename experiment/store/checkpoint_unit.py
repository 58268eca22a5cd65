"""A committed checkpoint as one unit: what the read side asks of it, whatever its files are.

A commit is durable once its unit appears under its final name in ``checkpoints/``. Today the unit
is one file, ``state-NNNNNN.pt``, holding the whole state tree, or (a sharded commit of FSDP2) a
folder ``state-NNNNNN/`` holding DCP's shard files, its ``.metadata`` and ``tree.pt`` (the tree
with every node that is not sharded), renamed into place once complete. Readers (resuming, ``exp status``,
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
import shutil
from pathlib import Path

#: The file of a directory unit (a sharded commit) that holds its state tree.
TREE_FILE = "tree.pt"


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
    def sharded(self) -> bool:
        """Whether the unit is a folder of shards (``state-000042/``) rather than one file."""
        return self.path.suffix != ".pt"

    @property
    def tree_path(self) -> Path:
        """The file holding the unit's state tree, read with the safe loader."""
        return self.path / TREE_FILE if self.sharded else self.path

    def modified(self) -> float | None:
        """When the unit was committed (its modification time); None if it is gone."""
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def size(self) -> int:
        """The bytes the unit takes on disk; 0 if it is gone."""
        if self.sharded:
            return sum(_size(self.path / name) for name in _names(self.path))
        return _size(self.path)

    def remove(self) -> None:
        """Remove the unit (nothing happens if it is gone already).

        Raises:
            OSError: it cannot be removed (a read-only folder, say).
        """
        if self.sharded:
            if self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            return
        self.path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
