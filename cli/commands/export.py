"""``exp export DIR -o model.pt``: a run's weights as one plain state dict file."""

from __future__ import annotations

from pathlib import Path

import click

from cli.formatting import format_bytes
from experiment.inspection.display import printable
from experiment.inspection.exporting import EXPORT_CHOICES, export_weights


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="The file to write (refused if it exists, unless --force).",
)
@click.option(
    "--checkpoint",
    type=click.Choice(EXPORT_CHOICES),
    default="last",
    show_default=True,
    help="last: the weights at the end of the last completed epoch; best: the best epoch's.",
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
def export(directory: Path, output: Path, checkpoint: str, force: bool) -> None:
    """Write a run's weights as one file: the network's full state dict, which
    network.load_state_dict(torch.load(path, weights_only=True)) takes without this library.

    A run trained with strategy="fsdp" is read from its shards in this one process.
    """
    report = export_weights(directory, output, checkpoint=checkpoint, force=force)
    click.echo(
        f"Wrote {printable(str(report.path))}: the weights of epoch {report.epoch} "
        f"(--checkpoint {checkpoint}), {report.tensors} tensors, {format_bytes(report.bytes_written)}."
    )
