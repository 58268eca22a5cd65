"""``exp logs DIR``: the epoch log of a run as a table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from experiment.store.directory import RunDirectory
from experiment.store.logs import load_logs


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--tail", type=click.IntRange(min=1), metavar="N", help="Only the last N epochs.")
@click.option("--csv", "as_csv", is_flag=True, help="Comma-separated values instead of a table.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of rows instead of a table.")
def logs(directory: Path, tail: int | None, as_csv: bool, as_json: bool) -> None:
    """Print the epoch log (log.tsv) of the run in DIRECTORY, one row per completed epoch."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json are exclusive; choose one.")
    import pandas as pd

    RunDirectory(directory).read_metadata()  # a clear error for a directory that is not a run
    frame = load_logs(directory)
    if tail is not None:
        frame = frame.tail(tail)
    if as_json:
        click.echo(frame.to_json(orient="records", indent=2) if not frame.empty else "[]")
    elif as_csv:
        frame.to_csv(sys.stdout, index=False)
    elif frame.empty:
        click.echo(f"{directory} has no completed epoch yet.", err=True)
    else:
        with pd.option_context("display.max_columns", None, "display.width", None):
            click.echo(frame.to_string(index=False))
