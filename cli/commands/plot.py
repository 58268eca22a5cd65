"""``exp plot DIR...``: learning curves, one panel per metric, several runs overlaid."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("learning_curves.png"),
    show_default=True,
    help="The image to write; its suffix picks the format (png, pdf, svg).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="A metric to show (repeat for several; default: all). 'loss' shows loss and val_loss.",
)
def plot(directories: tuple[Path, ...], output: Path, metrics: tuple[str, ...]) -> None:
    """Plot the learning curves of one or several runs.

    Each metric gets a panel with its training curve (solid) and validation curve (dashed); the
    runs overlay in each panel, one colour per run. Needs matplotlib: pip install 'experiment[plot]'.
    """
    from experiment.inspection.plotting import plot_learning_curves
    from experiment.store.directory import RunDirectory

    for directory in directories:
        RunDirectory(directory).read_metadata()  # a clear error for a directory that is not a run
    written = plot_learning_curves(directories, output, metrics=metrics)
    click.echo(f"Wrote {written}")
