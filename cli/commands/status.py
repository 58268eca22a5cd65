"""``exp status DIR``: what a run directory holds and where its training stands."""

from __future__ import annotations

from pathlib import Path

import click

from cli.formatting import format_age, format_bytes, format_time, format_value, key_values, one_line
from experiment.errors import CheckpointError
from experiment.inspection.display import shell_line
from experiment.inspection.summary import RunPosition, RunSummary, read_position, summarize
from experiment.store.directory import RunDirectory
from experiment.store.metadata import flat_hparams


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
def status(directory: Path) -> None:
    """Show the status, progress, best epoch, last checkpoint, size and configuration of a run.

    Status is one of: running (with its pid and host), finished, stopped (early, by a callback),
    interrupted (by a signal, or killed; in a SLURM job, whether the job was requeued) and failed
    (with the error). A run trained in a SLURM job shows the job, its array element, partition
    and restart count. Steps are optimizer steps
    (with accumulate_grad_batches=N, one per N batches); the batches done are added for a run
    stopped inside an epoch. The position is read from the newest checkpoint that loads (an
    unreadable one is reported, not fatal); everything else from experiment.json, log.tsv and the
    files' names.
    """
    summary = summarize(directory)
    try:
        position, unreadable = read_position(directory), None
    except CheckpointError as error:
        position, unreadable = None, one_line(str(error))
    lines = [("run", str(summary.path)), ("status", _status(summary))]
    lines += [("epochs", _epochs(summary, position)), ("steps", _steps(summary, position))]
    lines += [("best", _best(summary, position)), ("checkpoint", unreadable or _checkpoint(summary))]
    lines += [("training", summary.training())]
    job = summary.slurm_job()
    if job is not None:
        lines += [("slurm", job)]
    lines += [("updated", f"{format_time(summary.updated)} ({format_age(summary.updated)})")]
    lines += [("size", format_bytes(RunDirectory(directory).size_on_disk()))]
    if summary.command:
        argv = shell_line(summary.command.get("argv", []))
        lines += [("command", f"{argv}  (in {summary.command.get('cwd')})")]
    config = flat_hparams(summary.config)
    lines += [("config", "" if config else "(none)")]
    click.echo(key_values(lines))
    if config:
        click.echo(key_values(list(config.items()), indent="  "))


def _status(summary: RunSummary) -> str:
    return summary.status + (f": {summary.message}" if summary.message else "")


def _epochs(summary: RunSummary, position: RunPosition | None) -> str:
    done = position.epochs_completed if position else summary.epochs_done
    return f"{done} / {format_value(summary.epochs_planned)}"


def _steps(summary: RunSummary, position: RunPosition | None) -> str:
    """Optimizer steps done / planned (global_step's unit); a checkpoint in the middle of an epoch
    adds the batches done in that epoch (the data position, a finer unit under accumulation)."""
    planned = f"{format_value(summary.optimizer_steps_planned())} optimizer steps"
    if position is not None:
        within = (
            f" (epoch {position.epochs_completed + 1}: {position.steps_in_epoch} / "
            f"{format_value(summary.steps_per_epoch)} batches)"
        )
        return f"{position.global_step} / {planned}" + (within if position.steps_in_epoch else "")
    per_epoch = summary.optimizer_steps_per_epoch()
    done_estimate = summary.epochs_done * per_epoch if per_epoch else None
    return f"{format_value(done_estimate)} / {planned}"


def _best(summary: RunSummary, position: RunPosition | None) -> str:
    epoch, value = summary.best_epoch, summary.best_value
    if position is not None and position.best_epoch is not None:
        epoch, value = position.best_epoch, position.best_value
    if epoch is None:
        return "-"
    return f"epoch {epoch}: {summary.monitor} = {format_value(value)} ({summary.monitor_mode})"


def _checkpoint(summary: RunSummary) -> str:
    if summary.last_checkpoint is None:
        return "-"
    when = summary.last_checkpoint_time
    return f"{format_time(when)} ({format_age(when)}), {summary.last_checkpoint.name}"
