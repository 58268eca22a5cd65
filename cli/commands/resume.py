"""``exp resume DIR``: run again the recorded command of a run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from experiment.inspection.resume import plan_resume


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the command and exit without running it.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    metavar="N",
    help="New total number of epochs (needed to extend a finished run).",
)
@click.option(
    "--here",
    is_flag=True,
    help="Rerun the command on this machine even for a run trained in a SLURM job.",
)
def resume(directory: Path, dry_run: bool, epochs: int | None, here: bool) -> None:
    """Resume the run in DIRECTORY by running again the command that started it.

    The interpreter, arguments and working directory recorded in DIRECTORY/experiment.json are
    printed, then run; exp exits with the command's exit code. SECURITY: resuming a directory you
    did not create runs whatever command it records; read it first with --dry-run.

    The target number of epochs reaches the run through EXPERIMENT_EPOCHS and
    EXPERIMENT_RESUME_DIR, which Experiment.train honours for DIRECTORY only: --epochs N, or else
    the target recorded in experiment.json.

    Refused: a directory that is not a run, a run in use by a live process, a finished run without
    --epochs, and a run stopped early by a callback. A run trained in a SLURM job is refused with
    how to requeue (scontrol requeue ID) or resubmit it, unless --here is given.
    """
    plan = plan_resume(directory, epochs=epochs, here=here)
    click.echo(plan.describe())
    if dry_run:
        return
    sys.stdout.flush()
    click.get_current_context().exit(plan.run())
