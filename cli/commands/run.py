"""``exp run MODULE:FUNCTION DIR [-- ARGS]``: start a run through a recorded entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from experiment.errors import ConfigurationError
from experiment.inspection.entry_points import parse_entry_point, run_entry_point


def _check_entry_point(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_entry_point(value)
    except ConfigurationError as error:
        raise click.BadParameter(str(error)) from None
    return value


@click.command()
@click.argument("entry_point", metavar="MODULE:FUNCTION", callback=_check_entry_point)
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(entry_point: str, directory: Path, args: tuple[str, ...]) -> None:
    """Start (or continue) a run by calling FUNCTION(DIRECTORY, *ARGS) from MODULE.

    FUNCTION receives the run directory as a pathlib.Path and the words after "--" as strings; it
    builds its Experiment on that directory and trains. The run records this entry point, so that
    `exp resume DIRECTORY` calls it again (as `python -m cli run ...`, in the same working
    directory). MODULE is imported as `python -m` would: from the working directory, then
    PYTHONPATH.

    Example: exp run mypackage.train:main runs/lr-0.1 -- --lr 0.1
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    run_entry_point(entry_point, directory, list(args))
