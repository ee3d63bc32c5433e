"""``audience-sync dbt ...``: commands over dbt's artifacts. Registered on the ``cli`` group in
``sync/cli/commands.py``; ``sync --after-dbt`` uses ``restrict_after_dbt`` below."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from audiencesync.sync.cli.options import config_option, input_errors, load
from audiencesync.sync.config import Config


@click.group()
def dbt() -> None:
    """Work with a dbt project whose models the audiences name."""


@dbt.command()
@config_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the YAML to FILE (say models/audience_sync_exposures.yml); default: stdout.",
)
@input_errors
def exposures(config_path: Path | None, out: Path | None) -> None:
    """Write one dbt exposure per audience and destination, for audiences that name a model."""
    from audiencesync.sync.dbt import exposures_yaml

    text = exposures_yaml(load(config_path))
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


def restrict_after_dbt(config: Config, run_results: Path) -> Config:
    """``config`` cut to the audiences whose models succeeded in ``run_results``; each skipped one
    is named on stderr with why. Exits 0 when nothing is left to sync."""
    from audiencesync.sync.dbt import after_dbt, only_audiences

    outcome = after_dbt(config, run_results)
    for name, reason in outcome.skipped.items():
        click.echo(f"skipped {name}: {reason}", err=True)
    if not outcome.sync:
        click.echo("no audience's model succeeded in this dbt run: nothing to sync", err=True)
        sys.exit(0)
    return only_audiences(config, outcome.sync)
