"""Entry point of the ``exp`` console script (also ``python -m cli``)."""

from __future__ import annotations

from typing import Any

import click

from cli.commands.clean import clean
from cli.commands.diff import diff
from cli.commands.export import export
from cli.commands.logs import logs
from cli.commands.ls import ls
from cli.commands.plot import plot
from cli.commands.resume import resume
from cli.commands.run import run
from cli.commands.status import status
from cli.formatting import one_line
from experiment import __version__
from experiment.errors import ExperimentError


class ExpGroup(click.Group):
    """A click group that reports the library's errors as one-line messages with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ExperimentError as error:
            raise click.ClickException(one_line(str(error))) from None


@click.group(cls=ExpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exp")
def cli() -> None:
    """Inspect, compare and resume run directories of the experiment library.

    Exit codes: 0 success, 1 an error with a one-line message, 2 bad usage.
    """


for command in (resume, run, status, ls, logs, plot, diff, clean, export):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="exp")
