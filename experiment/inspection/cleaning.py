"""Free disk space in a run directory without losing what resuming or the best model needs.

What a run needs: the newest state checkpoint that loads (to resume) and the weights of its best
epoch (``Experiment.test(checkpoint="best")``). What it may also hold: the previous state checkpoint
(a fallback kept until the next commit), best-weights files of former best epochs or of an epoch
that was never committed, and temporary files of writes interrupted by a crash. Files the library
did not write (a callback's saves, notes) are never touched.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiment.arguments import check_choice
from experiment.errors import ConfigurationError, RunDirectoryError
from experiment.inspection.summary import effective_status
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory

KEEP_CHOICES = ("both", "last", "best")


@dataclasses.dataclass
class CleanReport:
    """The files removed (or that would be, for a dry run) and their total size in bytes."""

    removed: list[Path]
    bytes_freed: int
    dry_run: bool


def clean_run(directory: str | os.PathLike[str], *, keep: str = "both", dry_run: bool = False) -> CleanReport:
    """Remove the files of a run that are not needed by what ``keep`` names.

    Args:
        directory: the run directory.
        keep: "both": what resuming needs and the best weights; "last": what resuming needs
            only (the best weights go); "best": the best weights only, for a finished or stopped
            run (the state checkpoints go: the run can no longer be resumed or extended).
        dry_run: only report what would be removed.

    Raises:
        RunDirectoryError: not a run directory; a folder to clean is read-only, or a file or
            folder of the run is a symbolic link (nothing is removed).
        DirectoryLockedError: a live process holds the run (the lock is held while cleaning).
        ConfigurationError: ``keep`` is unknown, or "best" for a run that is not over or has no
            best weights.
        CheckpointError: state checkpoints exist but none loads (nothing is removed).
    """
    check_choice("keep", keep, KEEP_CHOICES)
    run = RunDirectory(directory)
    metadata = run.read_metadata()
    with run.lock():
        from experiment.store.checkpoints import load_newest_state  # torch loads with the file

        found = load_newest_state(run)
        checkpoints = run.checkpoints()
        bests = run.best_paths()
        best_epoch = found[0]["nodes"]["best"]["epoch"] if found else (max(bests) if bests else None)
        if keep == "best":
            _check_keep_best(run, effective_status(run, metadata)[0], best_epoch, bests)
            units = list(checkpoints)
        else:
            newest_good = checkpoints.index(found[1]) if found else len(checkpoints)
            units = checkpoints[newest_good + 1 :]  # older than the one that resumes (newer ones stay)
        # Commit folders that a kill cut short before their rename: removed whole, like a unit.
        units += [Checkpoint(0, folder) for folder in run.temporary_directories()]
        kept_best = best_epoch if keep in ("both", "best") else None
        files = [path for epoch, path in sorted(bests.items()) if epoch != kept_best]
        files += run.temporary_files()
        freed = sum(unit.size() for unit in units) + sum(_size(path) for path in files)
        if not dry_run:
            _remove(run, metadata, units, files, keep)
    return CleanReport([unit.path for unit in units] + files, freed, dry_run)


def _remove(
    run: RunDirectory, metadata: dict[str, Any], units: list[Checkpoint], files: list[Path], keep: str
) -> None:
    """Remove the checkpoints ``units`` and the ``files``, once every folder they touch is known to
    be writable (nothing half-done)."""
    doomed: list[tuple[Path, Callable[[], None]]] = [(unit.path, unit.remove) for unit in units]
    doomed += [(path, functools.partial(path.unlink, missing_ok=True)) for path in files]
    folders = {path.parent for path, _ in doomed} | ({run.path} if keep == "best" else set())
    for folder in sorted(folders):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise RunDirectoryError(
                f"{folder} is read-only: cleaning {run.path} must remove files there. Nothing was "
                "removed. Fix its permissions (chmod u+w) and clean again."
            )
    if keep == "best":  # written first: a crash halfway must not leave a run that looks resumable
        run.write_metadata({**metadata, "resumable": False})
    for path, remove in doomed:
        try:
            remove()
        except PermissionError as error:
            raise RunDirectoryError(
                f"Cannot remove {path}: {error.strerror}; its folder is read-only or the file is "
                "protected. What is already removed is not needed by the run; fix the permissions "
                "and clean again."
            ) from error


def _check_keep_best(run: RunDirectory, status: str, best_epoch: int | None, bests: dict[int, Path]) -> None:
    if status not in ("finished", "stopped"):
        raise ConfigurationError(
            f"keep: received 'best' for {run.path}, whose status is {status!r}; it would remove what "
            "resuming needs. Expected a finished or stopped run; use --keep both or --keep last."
        )
    if best_epoch is None or best_epoch not in bests:
        raise ConfigurationError(
            f"keep: received 'best' for {run.path}, which holds no best-weights file to keep; "
            "use --keep last."
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
