"""``exp clean DIR``: remove what neither resuming nor the best model needs."""

from __future__ import annotations

from pathlib import Path

import click

from cli.formatting import format_bytes
from experiment.inspection.cleaning import KEEP_CHOICES, clean_run
from experiment.inspection.display import printable


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--keep",
    type=click.Choice(KEEP_CHOICES),
    default="both",
    show_default=True,
    help="both: what resuming needs and the best weights; last: what resuming needs; "
    "best: the best weights only, for a finished run (it can no longer be resumed).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def clean(directory: Path, keep: str, dry_run: bool) -> None:
    """Remove the files of a run that --keep does not need, and report the bytes freed.

    Removable: the previous state checkpoint (a fallback), best weights of former or uncommitted
    best epochs, and temporary files left by a crash. Files the library did not write are never
    touched. Refused while a process uses the run (cleaning takes the run's lock).
    """
    report = clean_run(directory, keep=keep, dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    for path in report.removed:
        click.echo(f"{verb} {printable(str(path))}")
    click.echo(
        f"{'Would free' if dry_run else 'Freed'} {format_bytes(report.bytes_freed)} "
        f"({report.bytes_freed} bytes) in {len(report.removed)} file(s)."
    )
