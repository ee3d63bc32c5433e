"""Operations commands: ``daemon``, ``lag``, ``runs`` and ``state``. Registered on the ``cli`` group in
``sync/cli/commands.py``.

Exit codes beyond the ones in ``sync/cli/commands.py``: ``lag`` exits 4 when any target breaches its SLO,
so a cron monitor can page on it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import click
from audiencesync.sync.cli.options import FILE, F, config_option, input_errors, load
from audiencesync.sync.cli.report import STATUS_COLOURS
from audiencesync.sync.cli.table_output import Column, TableData, choose_format, emit, format_option
from audiencesync.sync.config import Config, parse_duration
from audiencesync.sync.errors import InputError
from audiencesync.sync.lag import SLO_BREACH, TargetLag, format_seconds
from rich.console import Console

EXIT_SLO_BREACH = 4


def _require_state(config: Config) -> None:
    if not config.state_path.exists():
        raise InputError(f"{config.state_path}: no state file yet; run `audience-sync sync` first")


def _timing_option(
    name: str, kind: click.IntRange | click.FloatRange, default: float, help: str
) -> Callable[[F], F]:
    """One of the daemon's timings, in seconds, its default shown in ``--help``."""
    return click.option(name, type=kind, default=default, show_default=True, help=help)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@config_option
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics (Prometheus text) and /healthz on 127.0.0.1:PORT.",
)
@_timing_option(
    "--follow-interval",
    click.FloatRange(min=0.1),
    60.0,
    "Seconds between polls of pending jobs and read-backs of platform status.",
)
@_timing_option(
    "--jitter",
    click.IntRange(0, 3600),
    30,
    "Up to this many seconds of random delay per run, so targets on one schedule do not fire at once.",
)
@_timing_option(
    "--misfire-grace",
    click.IntRange(1, 86_400),
    600,
    "A run missed by less than this many seconds still runs (once: missed runs are coalesced).",
)
@input_errors
def daemon(
    config_path: Path | None,
    metrics_port: int | None,
    follow_interval: float,
    jitter: int,
    misfire_grace: int,
) -> None:
    """Run every sync target on its cron schedule until SIGTERM or SIGINT.

    The batch in flight at a stop is finished and saved. Each target is pushed by one process at a
    time (a lease in the state file), so a cron `sync` next to the daemon is safe.
    $AUDIENCE_SYNC_TICK_SECONDS=N runs every target every N seconds instead (tests, catching up).
    """
    from audiencesync.sync.daemon import DaemonOptions, run_daemon
    from audiencesync.sync.schedule import tick_from_env

    config = load(config_path)
    options = DaemonOptions(
        jitter_seconds=jitter,
        misfire_grace_seconds=misfire_grace,
        follow_interval_seconds=follow_interval,
        metrics_port=metrics_port,
        tick_seconds=tick_from_env(),
    )
    sys.exit(run_daemon(config, options))


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (--format json).")
@format_option
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Window of lag records to measure: 90m, 24h, 7d, ...",
)
@click.option(
    "--html",
    "html_path",
    type=FILE,
    default=None,
    help="Also write a self-contained HTML page (table and lag-over-time charts) to FILE.",
)
@click.option(
    "--only", metavar="NAME", help="Only this audience, destination, or audience@destination target."
)
@click.option("--send-alerts", is_flag=True, help="Evaluate alerts and send the changes (for cron setups).")
@input_errors
def lag(
    config_path: Path | None,
    as_json: bool,
    since: str,
    html_path: Path | None,
    only: str | None,
    send_alerts: bool,
    output_format: str | None,
) -> None:
    """Sync lag, pending work and coverage per audience and destination, with the SLO verdict.

    Exits 4 when any target breaches its max_lag.
    """
    from audiencesync import lag_report

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise InputError(f"--since: {exc}") from None
    config = load(config_path)
    report = lag_report(config, since=timedelta(seconds=window), only=only, send_alerts=send_alerts)
    entries = report.targets
    if html_path is not None:
        from audiencesync.state.store import StateStore
        from audiencesync.sync.cli.lag_html import render_page
        from audiencesync.sync.status import build_status

        store = StateStore.open(config.state_path)
        try:
            # The report's coverage is reused: the page shows the same entries as the table.
            page = build_status(
                config,
                store,
                since=report.since,
                now=report.generated_at,
                targets=config.targets(only),
                with_coverage=False,
            )
        finally:
            store.close()
        page.entries = list(entries)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_page(page), encoding="utf-8")
    console = Console(highlight=False)
    if choose_format(console, output_format, as_json) == "json":
        click.echo(report.to_json())
    else:
        render_lag(console, entries, since, choose_format(console, output_format))
        if html_path is not None:
            click.echo(f"wrote {html_path}")
    sys.exit(EXIT_SLO_BREACH if report.breached else 0)


def _pending(e: TargetLag) -> str:
    text = f"+{e.pending_adds:,} / -{e.pending_removes:,}"
    return text + (f" ({e.in_flight:,} in flight)" if e.in_flight else "")


def _size(e: TargetLag) -> str:
    if e.platform_size is None:
        return "-"
    low, high = e.platform_size
    size = (
        "?"
        if low is None and high is None
        else (f"{low:,}" if low == high else f"{low or 0:,}-{high or 0:,}")
    )
    return f"{size} ({e.platform_state or '?'})"


def _coverage(e: TargetLag) -> str:
    from audiencesync.sync.cli.lag_html import coverage_text

    return coverage_text(e)


def lag_table(entries: Sequence[TargetLag], since: str) -> TableData:
    columns = [
        Column("audience → destination"),
        Column("SLO"),
        Column("members", True),
        Column("pending", True),
        Column("oldest", True),
        Column("to confirmed p50/p95/max", True),
        Column("to ready p50/p95/max", True),
        Column("last success"),
        Column("platform size"),
        Column("coverage"),
    ]
    labels = {"ok": "[green]ok[/green]", "at_risk": "[yellow]at risk[/yellow]", "breach": "[red]BREACH[/red]"}
    rows = []
    notes: list[tuple[str, str]] = []
    for e in entries:
        c, r = e.to_confirmed, e.to_ready
        slo = labels.get(e.slo, "-")
        if e.max_lag is not None:
            slo += f" ≤{format_seconds(e.max_lag)}"
        rows.append(
            [
                f"{e.audience} → {e.destination} ({e.platform})",
                slo,
                f"{e.members:,}",
                _pending(e),
                format_seconds(e.oldest_pending_age),
                "/".join(format_seconds(v) for v in (c.p50, c.p95, c.max)),
                "/".join(format_seconds(v) for v in (r.p50, r.p95, r.max)),
                _when(e.last_success_at),
                _size(e),
                _coverage(e),
            ]
        )
        what = "SLO breach" if e.slo == SLO_BREACH else "SLO at risk"
        for reason in e.slo_reasons:
            notes.append(
                (f"[bold]{e.target}[/bold]: {what}: {reason}", "red" if e.slo == SLO_BREACH else "yellow")
            )
        if e.last_error:
            notes.append((f"[bold]{e.target}[/bold]: last error: {e.last_error}", "yellow"))
    return TableData(f"Sync lag (records of the last {since})", columns, rows, None, notes)


def render_lag(console: Console, entries: Sequence[TargetLag], since: str, fmt: str = "table") -> None:
    emit(console, lag_table(entries, since), fmt)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (--format json).")
@format_option
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Most recent N runs."
)
@click.option(
    "--only", metavar="NAME", help="Only this audience, destination, or audience@destination target."
)
@input_errors
def runs(
    config_path: Path | None, as_json: bool, output_format: str | None, limit: int, only: str | None
) -> None:
    """Run history, newest first: trigger, status, duration, counts and errors."""
    from audiencesync.state.store import StateStore

    config = load(config_path)
    _require_state(config)
    keys = [t.key for t in config.targets(only)] if only else None
    if only and not keys:
        raise InputError(f"--only {only}: no sync target matches (check audience or destination names)")
    store = StateStore.open(config.state_path)
    try:
        rows = store.runs.history(limit, keys)
    finally:
        store.close()
    console = Console(highlight=False)
    fmt = choose_format(console, output_format, as_json)
    if fmt == "json":
        click.echo(json.dumps({"runs": rows}, indent=2))
        return
    columns = [
        Column("target"),
        Column("run", True),
        Column("status"),
        Column("trigger"),
        Column("started"),
        Column("took", True),
        Column("adds", True),
        Column("removes", True),
        Column("confirmed", True),
        Column("rejected", True),
        Column("requests", True),
    ]
    table_rows = []
    for r in rows:
        colour = STATUS_COLOURS.get(str(r["status"]), "white")
        table_rows.append(
            [
                str(r["target"]),
                str(r["id"]),
                f"[{colour}]{r['status']}[/{colour}]",
                str(r["trigger"]),
                _when(r["started_at"]),
                format_seconds(r["duration"]),
                f"{r['adds']:,}",
                f"{r['removes']:,}",
                f"{r['confirmed']:,}",
                f"{r['rejected']:,}",
                f"{r['requests']:,}",
            ]
        )
    notes = [(f"run {r['id']} ({r['target']}): {r['error']}", "red") for r in rows if r["error"]]
    emit(console, TableData("Runs (newest first)", columns, table_rows, None, notes), fmt)


@click.group("state")
def state() -> None:
    """What the state file knows per target, and clearing a target so its next sync starts afresh."""


@state.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the targets as JSON.")
@format_option
@input_errors
def state_list(config_path: Path | None, as_json: bool, output_format: str | None) -> None:
    """Every target in the state file: platform audience, members, pending changes, last run."""
    from audiencesync.state.store import StateStore

    config = load(config_path)
    _require_state(config)
    configured = {t.key for t in config.targets()}
    store = StateStore.open(config.state_path)
    try:
        rows = store.target_summaries()
    finally:
        store.close()
    for row in rows:
        row["in_config"] = row["key"] in configured
    columns = [
        Column("target"),
        Column("platform audience"),
        Column("members", True),
        Column("queued", True),
        Column("in flight", True),
        Column("last run"),
        Column("last success"),
    ]
    table_rows = [
        [
            str(row["key"]) + ("" if row["in_config"] else " (not in config)"),
            str(row["audience_id"] or "-"),
            f"{row['members']:,}",
            f"{row['queued']:,}",
            f"{row['in_flight']:,}",
            str(row["last_status"] or "-"),
            _when(row["last_success_at"]),
        ]
        for row in rows
    ]
    console = Console(highlight=False)
    fmt = choose_format(console, output_format, as_json)
    emit(console, TableData(f"Targets in {config.state_path}", columns, table_rows, {"targets": rows}), fmt)


@state.command("forget")
@config_option
@click.argument("target")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@input_errors
def state_forget(config_path: Path | None, target: str, yes: bool) -> None:
    """Clear everything state knows about TARGET (audience@destination): its platform audience id,
    members, outbox, lag, sessions, runs and alerts. The next sync finds or creates the audience and
    uploads every member again. For an audience deleted on the platform, or an emulator restarted."""
    from audiencesync.state.lease import LeaseBusy
    from audiencesync.state.store import StateStore

    config = load(config_path)
    _require_state(config)
    store = StateStore.open(config.state_path)
    try:
        row = store.find_target(target)
        if row is None:
            known = ", ".join(r["key"] for r in store.target_summaries()) or "none"
            raise InputError(f"{target}: no such target in {config.state_path} (targets there: {known})")
        if not yes:
            click.confirm(
                f"Forget {target} (platform audience {row.platform_audience_id or '-'}) and everything state "
                "holds for it?",
                abort=True,
            )
        try:
            with store.lease(row.id, wait=0.0):
                store.forget_target(target)
        except LeaseBusy as exc:
            raise InputError(f"{target}: {exc}; try again once it is done") from None
    finally:
        store.close()
    click.echo(f"forgot {target}: the next sync finds or creates its audience and uploads every member")
