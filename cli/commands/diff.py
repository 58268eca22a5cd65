"""``exp diff DIR_A DIR_B``: two runs side by side."""

from __future__ import annotations

from pathlib import Path

import click

from cli.formatting import table
from experiment.inspection.comparison import SETTING_SECTIONS, compare_runs


@click.command()
@click.argument("directory_a", type=click.Path(path_type=Path))
@click.argument("directory_b", type=click.Path(path_type=Path))
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show the config, settings and created_with rows that are equal.",
)
def diff(directory_a: Path, directory_b: Path, show_all: bool) -> None:
    """Compare two runs: configuration, settings, what they were created with (optimizer class and
    hyperparameters, precision, accumulation, world size, data shape), and final and best metrics.

    Lines whose values differ are marked with "*". Config, settings and created_with lines that are
    equal are hidden unless --all is given; metrics are always shown.
    """
    rows = compare_runs(directory_a, directory_b)
    shown = [row for row in rows if show_all or row.differs or row.section not in SETTING_SECTIONS]
    lines = [["*" if row.differs else "", row.section, row.key, row.a, row.b] for row in shown]
    click.echo(table(["", "SECTION", "KEY", str(directory_a), str(directory_b)], lines))
