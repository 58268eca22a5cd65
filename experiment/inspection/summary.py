"""Summaries of run directories, read cheaply enough to list hundreds of them.

:func:`summarize` reads experiment.json, the names and times of the committed checkpoints and the
tail of log.tsv: the last row, and the rows back to the best epoch (whose number is in the name
of the best-weights file). It never loads a checkpoint. :func:`read_position` does, for the exact
step of an interrupted run (``exp status``).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiment.errors import RunDirectoryError
from experiment.inspection.log_tail import LogTail, read_log_tail
from experiment.store.directory import RunDirectory
from experiment.store.lock import describe_holder


@dataclasses.dataclass
class RunSummary:
    """What a run directory holds, as ``exp status`` and ``exp ls`` show it.

    ``status`` is the recorded one, except that a run recorded as running whose process is gone
    (killed, or its machine crashed) is reported as "interrupted".

    Example:
        >>> summary = summarize("runs/blobs")
        >>> summary.status, summary.epochs_done, summary.best_value
        ('finished', 20, 0.153)
    """

    path: Path
    status: str
    message: str | None
    pid: int | None
    host: str | None
    created: str | None
    updated: float
    epochs_done: int
    epochs_planned: int | None
    steps_per_epoch: int | None
    monitor: str | None
    monitor_mode: str | None
    best_epoch: int | None
    best_value: float | None
    last_row: dict[str, str] | None
    best_row: dict[str, str] | None
    last_checkpoint: Path | None
    last_checkpoint_time: float | None
    config: dict[str, Any]
    settings: dict[str, Any]
    command: dict[str, Any] | None
    created_with: dict[str, Any] = dataclasses.field(default_factory=dict)
    changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: The SLURM job of the latest training call (job_id, array, restart_count, partition), or None.
    slurm: dict[str, Any] | None = None

    def world_sizes(self) -> list[int]:
        """The numbers of processes the run has had, in order: at its creation, then at each change
        (an elastic run resumed on another number)."""
        sizes = [int(self.created_with.get("world_size", 1))]
        sizes += [int(c["to"]) for c in self.changes if c.get("what") == "world_size"]
        return sizes

    def slurm_job(self) -> str | None:
        """The SLURM job in one line ("job 41 (array element 40_3), partition gpu, restart 2"), or
        None for a run not trained in a job."""
        if not self.slurm:
            return None
        job = f"job {self.slurm.get('job_id')}"
        if self.slurm.get("array"):
            job += f" (array element {self.slurm['array']})"
        return f"{job}, partition {self.slurm.get('partition') or '-'}, restart {self.slurm.get('restart_count', 0)}"

    def training(self) -> str:
        """Processes, precision, accumulation and commit mode, as recorded ("32-true" and one
        process for runs made before they were); for an elastic run, its global batch and every
        number of processes it has had."""
        precision = self.created_with.get("precision", "32-true")
        accumulate = self.created_with.get("accumulate_grad_batches", 1)
        processes = self.created_with.get("world_size", 1)
        parts = [precision] if processes == 1 else [f"{processes} processes (torchrun)", precision]
        if self.created_with.get("elastic"):
            sizes = " -> ".join(map(str, self.world_sizes()))
            batch = self.created_with.get("global_batch")
            parts = [f"elastic (global batch {batch}; processes {sizes})", precision]
        if accumulate != 1:
            parts.append(f"{accumulate} batches per optimizer step")
        parts.append(
            "asynchronous commits" if self.settings.get("async_checkpoint") else "synchronous commits"
        )
        return ", ".join(parts)

    @property
    def accumulate_grad_batches(self) -> int:
        """Batches per optimizer step, as recorded (1 for runs made before it was)."""
        return int(self.created_with.get("accumulate_grad_batches", 1))

    def optimizer_steps_per_epoch(self) -> int | None:
        """Optimizer steps in a full epoch: one per group of ``accumulate_grad_batches`` batches, the
        epoch's last, shorter group included (None when ``steps_per_epoch`` is unknown)."""
        if not self.steps_per_epoch:
            return None
        return -(-self.steps_per_epoch // self.accumulate_grad_batches)

    def optimizer_steps_planned(self) -> int | None:
        """Optimizer steps of the whole run, the unit of ``global_step`` (None when unknown)."""
        per_epoch = self.optimizer_steps_per_epoch()
        return per_epoch * self.epochs_planned if per_epoch and self.epochs_planned else None

    def to_dict(self) -> dict[str, Any]:
        """The summary as strict JSON data: every time in ISO 8601 with its UTC offset (``created``
        as recorded, ``updated`` and ``last_checkpoint_time`` converted alike), the logged values
        of ``last_row`` and ``best_row`` as numbers, and a number that is not finite (NaN, inf)
        anywhere as None (JSON has no such number)."""
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        data["last_checkpoint"] = None if self.last_checkpoint is None else str(self.last_checkpoint)
        data["updated"] = iso_time(self.updated)
        data["last_checkpoint_time"] = iso_time(self.last_checkpoint_time)
        for key in ("last_row", "best_row"):
            row = data[key]
            data[key] = None if row is None else {name: log_value(text) for name, text in row.items()}
        return _finite(data)


def summarize(directory: str | os.PathLike[str]) -> RunSummary:
    """Summarize one run directory without loading any checkpoint.

    Raises:
        RunDirectoryError: the directory holds no run or its experiment.json is unreadable.
    """
    run = RunDirectory(directory)
    metadata = run.read_metadata()
    settings = metadata.get("settings") or {}
    monitor, mode = settings.get("monitor_metric"), settings.get("monitor_mode")
    checkpoints = run.checkpoints()
    bests = run.best_paths()
    tail = read_log_tail(run.log_path, monitor=monitor, mode=mode, best_epoch=max(bests) if bests else None)
    status, message = effective_status(run, metadata)
    newest = checkpoints[0] if checkpoints else None
    return RunSummary(
        path=run.path,
        status=status,
        message=message,
        pid=metadata.get("pid"),
        host=metadata.get("host"),
        created=metadata.get("created"),
        updated=max(
            _mtime(run.metadata_path) or 0.0, _mtime(run.log_path) or 0.0, _mtime(run.checkpoints_dir) or 0.0
        ),
        epochs_done=_epoch_of(tail.last_row),
        epochs_planned=settings.get("epochs"),
        steps_per_epoch=settings.get("steps_per_epoch"),
        monitor=monitor,
        monitor_mode=mode,
        best_epoch=_epoch_of(tail.best_row) or None,
        best_value=_monitored(tail, monitor),
        last_row=tail.last_row,
        best_row=tail.best_row,
        last_checkpoint=None if newest is None else newest.path,
        last_checkpoint_time=None if newest is None else newest.modified(),
        config=dict(metadata.get("config") or {}),
        settings=dict(settings),
        command=metadata.get("command"),
        created_with=dict(metadata.get("created_with") or {}),
        changes=list(metadata.get("changes") or []),
        slurm=metadata.get("slurm") or None,
    )


def effective_status(run: RunDirectory, metadata: dict[str, Any]) -> tuple[str, str | None]:
    """The recorded status and message, correcting "running" when no live process holds the lock."""
    status, message = metadata.get("status", "unknown"), metadata.get("message")
    if status == "running" and not run.is_locked():
        who = f"pid {metadata.get('pid')} on host {metadata.get('host')}"
        return "interrupted", f"the process ({who}) ended without a clean exit (killed or crashed)"
    if status == "running":
        return status, describe_holder(run.holder_path)
    return status, message


def find_runs(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Run directories at or below ``root`` (hidden folders and a run's own folders are skipped)."""
    for folder, subfolders, files in os.walk(root):
        if "experiment.json" in files:
            subfolders[:] = []
            yield Path(folder)
        else:
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))


def summarize_all(root: str | os.PathLike[str]) -> list[RunSummary | tuple[Path, str]]:
    """Summaries of every run below ``root``; an unreadable run gives ``(path, error message)``."""
    summaries: list[RunSummary | tuple[Path, str]] = []
    for path in find_runs(root):
        try:
            summaries.append(summarize(path))
        except (RunDirectoryError, OSError, ValueError) as error:
            summaries.append((path, str(error)))
    return summaries


@dataclasses.dataclass
class RunPosition:
    """The committed position of a run, read from its newest checkpoint."""

    checkpoint: Path
    epochs_completed: int
    steps_in_epoch: int
    global_step: int
    best_epoch: int | None
    best_value: float | None


def read_position(directory: str | os.PathLike[str]) -> RunPosition | None:
    """Load the newest checkpoint that verifies and return its position (None without checkpoint).

    Raises:
        CheckpointError: checkpoints exist and none of them loads.
    """
    with warnings.catch_warnings():
        # A checkpoint pruned by a live run between listing and loading is skipped: no news.
        warnings.simplefilter("ignore")
        from experiment.store.checkpoints import load_newest_state  # torch loads with the file

        found = load_newest_state(RunDirectory(directory))
    if found is None:
        return None
    tree, checkpoint = found
    progress, best = tree["nodes"]["progress"], tree["nodes"]["best"]
    return RunPosition(
        checkpoint.path,
        progress["epochs_completed"],
        progress["steps_in_epoch"],
        progress["global_step"],
        best["epoch"],
        best["value"],
    )


def log_value(text: str) -> int | float | str | None:
    """A cell of log.tsv as the value it stands for: an int, a float (NaN included), None for an
    empty cell, the text itself when it is not a number."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def iso_time(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC, to the second, as experiment.json's ``created``."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite, in nested dicts and lists, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _epoch_of(row: dict[str, str] | None) -> int:
    try:
        return int(row["epoch"]) if row else 0
    except (KeyError, ValueError):
        return 0


def _monitored(tail: LogTail, monitor: str | None) -> float | None:
    if tail.best_row is None or monitor is None:
        return None
    try:
        return float(tail.best_row[monitor])
    except (KeyError, ValueError):
        return None
