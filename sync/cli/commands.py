"""The ``audience-sync`` command: a thin layer over the library that turns domain errors into short
messages naming the file, key or row, and exit codes cron can act on.

Exit codes are ``sync.status.ExitCode`` (0 done, 1 a destination failed, 2 bad input, 3 breaker,
4 lag SLO breach, 5 an invalid ``hash`` value, 6 a busy port, 130/143 stopped by SIGINT/SIGTERM),
documented in the README.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from audiencesync import load_config
from audiencesync.connectors.contract import IDENTIFIER_KINDS
from audiencesync.connectors.registry import PLATFORMS, emulated_platforms
from audiencesync.sync.cli.logs import setup_logging
from audiencesync.sync.cli.options import FILE, config_file_option, config_option, input_errors, load
from audiencesync.sync.cli.table_output import choose_format, format_option
from audiencesync.sync.config import check_country
from audiencesync.sync.errors import InputError
from audiencesync.sync.run_status import ExitCode
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from audiencesync import SyncReport


# The platforms with identity rules of their own (a file destination hashes by its format's).
HASHING_PLATFORMS = [name for name, spec in PLATFORMS.items() if spec.identity is not None]


def _default_ports(which: str) -> str:
    """``meta 8801, tiktok 8802, ...``: each emulator's default ``port`` or ``admin_port``."""
    ports = [
        (name, getattr(spec.settings.emulator, which, None))
        for name, spec in PLATFORMS.items()
        if spec.settings.emulator is not None
    ]
    return ", ".join(f"{name} {port}" for name, port in ports if port is not None)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", help="Log lines as text or JSON."
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="audience-sync")
def cli(log_format: str, verbose: bool) -> None:
    """Keep ad-platform custom audiences in step with your lifecycle segments."""
    setup_logging(log_format, verbose)


@cli.command()
@config_option
@click.option("--offline", is_flag=True, help="Check the config file only; do not open the source.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@input_errors
def validate(config_path: Path | None, offline: bool, as_json: bool) -> None:
    """Check a config file and its source, and report every problem at once, each with its key path."""
    config = load(config_path)
    targets = config.targets()
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    summary = (
        f"{config.path}: ok ({len(config.audiences)} audiences, {len(config.destinations)} destinations, "
        f"{len(targets)} sync targets)"
    )
    if offline:
        click.echo(json.dumps({"config": str(config.path), "ok": True}) if as_json else summary)
        return
    from audiencesync.sync.source_check import check_source

    report = check_source(config)
    if as_json:
        click.echo(json.dumps({"config": str(config.path), **report.as_dict()}, indent=2))
    else:
        _render_source_report(report, summary)
    if not report.ok:
        sys.exit(InputError.exit_code)


def _render_source_report(report: Any, summary: str) -> None:
    out = Console(highlight=False, soft_wrap=True)
    if report.ok:
        out.print(escape(summary))
    out.print(escape(f"source {report.source} ({report.kind}): {report.rows} rows"))

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{v or '(empty)'}={n}" for v, n in values.items()) or "none"

    if report.stage_values:
        out.print(escape(f"  stage values: {counts(report.stage_values)}"))
    if report.in_flow_values:
        out.print(escape(f"  in-flow values: {counts(report.in_flow_values)}"))
    if report.consent:
        out.print(escape(f"  consent: {counts(report.consent)}"))
    if report.duplicate_ids or report.unparseable_changed_at:
        out.print(
            f"  duplicate ids: {report.duplicate_ids}, unparseable changed_at: {report.unparseable_changed_at}"
        )
    for name, n in report.audience_members.items():
        out.print(escape(f"  audience {name}: {n} profiles"))
    for line in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(line)}", markup=True)
    err = _stderr()
    for line in report.errors:
        err.print(f"[red]error:[/red] {escape(line)}", markup=True, soft_wrap=True)


@cli.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Plan and report; send nothing and write nothing to state.")
@click.option(
    "--only", metavar="NAME", help="Only this audience, destination, or audience@destination target."
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan or result as JSON (--format json).")
@format_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or progress lines.")
@click.option("--plan-out", type=FILE, help="Save the plan to FILE.")
@click.option(
    "--apply-plan",
    type=FILE,
    help="Push exactly the plan saved in FILE (refused if state moved on since).",
)
@click.option(
    "--allow-mass-remove", is_flag=True, help="Let a plan through that the circuit breaker refuses."
)
@click.option(
    "--after-dbt",
    type=FILE,
    help="Sync only audiences whose dbt models succeeded in this run_results.json.",
)
@input_errors
def sync(
    config_path: Path | None,
    dry_run: bool,
    only: str | None,
    as_json: bool,
    plan_out: Path | None,
    apply_plan: Path | None,
    allow_mass_remove: bool,
    output_format: str | None,
    quiet: bool,
    after_dbt: Path | None = None,
) -> None:
    """Plan each audience against its last-synced state and push the adds and removes."""
    from audiencesync import sync_once

    if apply_plan and (dry_run or plan_out or only):
        raise InputError(
            "--apply-plan pushes a saved plan as it is: it takes no --dry-run, --plan-out or --only"
        )
    from audiencesync.sync.stop_signals import stop_on_signals

    config = load(config_path)
    if after_dbt is not None:
        from audiencesync.sync.cli.dbt import restrict_after_dbt

        config = restrict_after_dbt(config, after_dbt)
    progress = _progress_sink(quiet or as_json or output_format == "json")
    try:
        with stop_on_signals() as stop:
            report = sync_once(
                config,
                dry_run=dry_run,
                only=only,
                allow_mass_remove=allow_mass_remove,
                plan_out=plan_out,
                apply_plan=apply_plan,
                progress=progress,
                should_stop=stop.requested,
                trigger="cli",
            )
    finally:
        getattr(progress, "close", lambda: None)()
    _print_results(report, output_format, as_json)
    sys.exit(stop.exit_code if stop.exit_code is not None else report.exit_code)


def _progress_sink(quiet: bool) -> Any:
    """A progress bar on a terminal, periodic progress log lines elsewhere, nothing when quiet."""
    from audiencesync.sync.progress import ProgressLog, no_progress

    if quiet:
        return no_progress
    console = _stderr()
    if console.is_terminal:
        from audiencesync.sync.cli.progress_bar import ProgressBar

        return ProgressBar(console)
    return ProgressLog()


def _print_results(report: SyncReport, output_format: str | None, as_json: bool) -> None:
    console = Console(highlight=False)
    fmt = choose_format(console, output_format, as_json)
    if fmt == "json":
        click.echo(report.to_json())
        return
    from audiencesync.sync.cli.report import render_results

    render_results(console, report.targets, report.dry_run, fmt)


def _country_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (problem := check_country(value)) is not None:
        raise click.BadParameter(problem)
    return value


@cli.command("hash")
@click.option("--platform", type=click.Choice(HASHING_PLATFORMS), required=True)
@click.option(
    "--field",
    "field_name",
    required=True,
    type=click.Choice(list(IDENTIFIER_KINDS)),
)
@click.option(
    "--country",
    default=None,
    callback=_country_option,
    help="Default country (ISO 3166-1 alpha-2) for phones without a country code.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per value.")
@click.argument("values", nargs=-1, required=True)
def hash_command(
    platform: str, field_name: str, country: str | None, as_json: bool, values: tuple[str, ...]
) -> None:
    """Show how VALUES normalize and hash for a platform: reach for this when a match rate is low."""
    from audiencesync.sync.identity import InvalidIdentifier, is_hashed_on, normalize, sha256_hex

    failed = False
    for value in values:
        out: dict[str, str | None] = {"input": value, "normalized": None, "sha256": None, "error": None}
        try:
            normalized = normalize(platform, field_name, value, country)
            out["normalized"] = normalized
            out["sha256"] = sha256_hex(normalized) if is_hashed_on(platform, field_name) else None
        except InvalidIdentifier as exc:
            out["error"] = exc.reason
            failed = True
        if as_json:
            click.echo(json.dumps(out, ensure_ascii=False))
        elif out["error"]:
            click.echo(f"{value!r}: invalid ({out['error']})")
        else:
            sent = out["sha256"] or "(sent unhashed, as the platform requires)"
            click.echo(f"{value!r} -> {out['normalized']!r} -> {sent}")
    sys.exit(ExitCode.INVALID_VALUE if failed else ExitCode.OK)


@cli.group(invoke_without_command=True)
@config_file_option(
    "Config to run the demo on; written from the package when missing.", Path("config.example.toml")
)
@click.option("--profiles", type=int, default=None, help="Synthetic profiles to generate (default 10,000).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--no-push", is_flag=True, help="Stop after the dry-run plan; start no emulators.")
@click.pass_context
@input_errors
def demo(ctx: click.Context, config_path: Path, profiles: int | None, seed: int, no_push: bool) -> None:
    """Build a synthetic profile database, plan, and sync it to local platform emulators."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    from audiencesync.sync.cli.walkthrough import run_demo

    _ensure_demo_config(config_path)
    sys.exit(
        run_demo(
            config_path, profiles=profiles, seed=seed, push=not no_push, console=Console(highlight=False)
        )
    )


@demo.command("advance")
@config_file_option("Config whose source to change (default: the one given to demo, ./config.example.toml).")
@click.option(
    "--share", type=float, default=0.03, show_default=True, help="Share of profiles that change stage."
)
@click.option("--seed", type=int, default=None, help="Make the moves repeatable.")
@click.pass_context
@input_errors
def demo_advance(ctx: click.Context, config_path: Path | None, share: float, seed: int | None) -> None:
    """Move a share of the demo profiles between stages and flows, so the next sync has changes."""
    from audiencesync.sync.demo.profiles import advance

    config = load_config(config_path or ctx.obj["config_path"])
    if not config.source.path.exists():
        raise InputError(f"{config.source.path}: no demo database yet; run `audience-sync demo` first")
    moved = advance(config.source.path, share=share, seed=seed)
    click.echo(
        f"advanced {config.source.path}: {moved.stage_moves} stage moves, {moved.flow_exits} flow exits, "
        f"{moved.flow_entries} flow entries, {moved.email_changes} email changes"
    )


def _ensure_demo_config(path: Path) -> None:
    if path.exists():
        return
    packaged = resources.files("audiencesync.sync").joinpath("config.example.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(packaged) as source:
        shutil.copyfile(source, path)
    _stderr().print(f"wrote {path} from the package")


@cli.command()
@click.argument("platform", type=click.Choice(["all", *emulated_platforms()]))
@click.option(
    "--port", type=int, default=None, help=f"Port on 127.0.0.1 (default: {_default_ports('port')})."
)
@click.option(
    "--admin-port",
    type=int,
    default=None,
    help=f"A gRPC emulator's HTTP admin port (default: {_default_ports('admin_port')}).",
)
@config_file_option(
    "all: start one emulator per loopback endpoint this config names.", Path("config.example.toml")
)
@input_errors
def emulator(platform: str, port: int | None, admin_port: int | None, config_path: Path) -> None:
    """Run a local emulator of PLATFORM's audience API on 127.0.0.1, until interrupted. ``all`` runs
    every emulator the config's loopback endpoints name (what the demo and its walkthrough use)."""
    from audiencesync.sync.demo.emulation import PortBusy, emulator_defaults, emulator_module, listening

    if platform == "all":
        _serve_all(config_path)
        return
    defaults = emulator_defaults(platform)
    chosen = port or defaults.port
    if listening(chosen):
        raise PortBusy(f"port {chosen} is in use: stop what runs there or pass --port N")
    module = emulator_module(platform)
    # An emulator without an admin port of its own serves its admin surface on the API port.
    admin = (admin_port or defaults.admin_port) if defaults.admin_port else None
    with contextlib.suppress(KeyboardInterrupt):
        module.serve(chosen, admin)


def _serve_all(config_path: Path) -> None:
    import signal
    import threading

    from audiencesync.sync.demo.emulation import emulators_for

    config = load(config_path)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    with emulators_for(config) as emulators:
        if not emulators:
            raise InputError(f"{config.path}: no destination has a loopback emulator endpoint")
        for name, em in emulators.items():
            click.echo(f"{name}: {type(em).__name__} on 127.0.0.1:{em.port}")
        click.echo("emulators running; Ctrl-C or SIGTERM stops them", err=True)
        while not stop.wait(0.5):
            pass


def main() -> None:
    cli()


# Operations commands (daemon, lag, runs) and the dbt commands live in their own modules.
from audiencesync.sync.cli import dbt as cli_dbt  # noqa: E402
from audiencesync.sync.cli import ops as cli_ops  # noqa: E402

for _command in (cli_ops.daemon, cli_ops.lag, cli_ops.runs, cli_ops.state, cli_dbt.dbt):
    cli.add_command(_command)
