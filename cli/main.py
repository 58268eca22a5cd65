"""Entry point of the ``exp`` console script."""

from __future__ import annotations

import click

from experiment import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exp")
def cli() -> None:
    """Inspect and resume run directories of the experiment library."""


def main() -> None:
    cli()
