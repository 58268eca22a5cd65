"""``exp ls [ROOT]``: one line per run directory below ROOT."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from cli.formatting import format_age, format_value, table
from experiment.inspection.summary import RunSummary, summarize_all

COLUMNS = ("run", "status", "epochs", "best", "updated")


@click.command()
@click.argument("root", default=".", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--sort",
    "sort_by",
    type=click.Choice(COLUMNS),
    default="run",
    show_default=True,
    help="Order of the lines: best groups the runs by monitored metric, best first (by "
    "its mode); updated puts the most recent first, epochs the most advanced first.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of run summaries instead: times in ISO 8601 (UTC), logged values as "
    "numbers, NaN as null.",
)
def ls(root: Path, sort_by: str, as_json: bool) -> None:
    """List the run directories below ROOT (default: the current directory).

    One line per run: status, epochs done / planned, best monitored value and its epoch, and the
    time of the last update; and where some run was trained in a SLURM job, its job (the array
    element's id for an array) and restart count. Fast: it reads each run's experiment.json and the end of its log.tsv,
    never a checkpoint.
    """
    found = summarize_all(root)
    runs = sorted((s for s in found if isinstance(s, RunSummary)), key=_sort_key(sort_by))
    broken = [entry for entry in found if not isinstance(entry, RunSummary)]
    if as_json:
        data = [{"run": _name(s.path, root), **s.to_dict()} for s in runs]
        data += [{"run": _name(path, root), "path": str(path), "error": error} for path, error in broken]
        click.echo(json.dumps(data, indent=2, allow_nan=False))  # strict JSON: to_dict gives NaN as None
        return
    if not found:
        click.echo(f"No run directory below {root}.", err=True)
        return
    jobs = any(s.slurm for s in runs)  # a column for the SLURM job only where some run has one
    rows: list[list[Any]] = [
        [_name(s.path, root), s.status, _epochs(s), _best(s), format_age(s.updated)]
        + ([_job(s)] if jobs else [])
        for s in runs
    ]
    rows += [
        [_name(path, root), "unreadable", "-", error, "-"] + (["-"] if jobs else []) for path, error in broken
    ]
    headers = [c.upper() for c in COLUMNS] + (["SLURM_JOB"] if jobs else [])
    click.echo(table(headers, rows))


def _name(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) if path != root else str(root)
    except ValueError:
        return str(path)


def _job(summary: RunSummary) -> str:
    if not summary.slurm:
        return "-"
    job = summary.slurm.get("array") or summary.slurm.get("job_id")
    return f"{job} (restart {summary.slurm.get('restart_count', 0)})"


def _epochs(summary: RunSummary) -> str:
    return f"{summary.epochs_done}/{format_value(summary.epochs_planned)}"


def _best(summary: RunSummary) -> str:
    if summary.best_value is None:
        return "-"
    return f"{summary.monitor}={format_value(summary.best_value)} (epoch {summary.best_epoch})"


def _sort_key(column: str) -> Any:
    if column == "best":

        def best(s: RunSummary) -> tuple[bool, str, float]:
            if s.best_value is None or math.isnan(s.best_value):
                return (True, "", 0.0)
            return (False, s.monitor or "", -s.best_value if s.monitor_mode == "max" else s.best_value)

        return best
    keys = {
        "run": lambda s: str(s.path),
        "status": lambda s: (s.status, str(s.path)),
        "epochs": lambda s: (-s.epochs_done, str(s.path)),
        "updated": lambda s: -s.updated,
    }
    return keys[column]
