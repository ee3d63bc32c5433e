"""Rendering run results for people (rich tables) and machines (JSON)."""

from __future__ import annotations

from collections.abc import Sequence

from audiencesync.sync.cli.table_output import Column, TableData, emit
from audiencesync.sync.redact import redact
from audiencesync.sync.run_status import RunStatus
from audiencesync.sync.runner import TargetResult, breaker_check
from rich.console import Console
from rich.markup import escape

STATUS_COLOURS: dict[str, str] = {
    RunStatus.OK: "green",
    RunStatus.PARTIAL: "yellow",
    RunStatus.STOPPED: "yellow",
    RunStatus.ERROR: "red",
    RunStatus.BREAKER: "red",
}
"""The colour a run status is shown in, in the run report and the run history."""


def _invalid_summary(invalid: dict[str, int]) -> str:
    if not invalid:
        return "-"
    top = sorted(invalid.items(), key=lambda kv: -kv[1])[:3]
    more = f" +{len(invalid) - 3}" if len(invalid) > 3 else ""
    return ", ".join(f"{k} {v}" for k, v in top) + more


def results_table(results: Sequence[TargetResult], dry_run: bool) -> TableData:
    """The plan (dry run) or sync outcome of each target, for ``table_output.emit``."""
    title = "Plan (dry run: nothing sent, state untouched)" if dry_run else "Sync"
    columns = [
        Column("audience → destination"),
        Column("in source", True),
        Column("synced", True),
        Column("adds", True),
        Column("removes", True),
        Column("id changes", True),
        Column("requests", True),
        Column("invalid ids"),
        Column("breaker"),
    ]
    if not dry_run:
        columns.append(Column("result"))
    rows = []
    for r in results:
        p = r.plan
        row = [
            f"{p.target.audience.name} → {p.target.destination.name} ({p.target.destination.platform})",
            f"{p.source_members:,}",
            f"{p.synced:,}",
            f"{p.adds:,}",
            f"{p.removes:,}",
            f"{p.identity_changes:,}",
            f"{p.requests:,}",
            _invalid_summary(dict(p.invalid)),
            _breaker_cell(r),
        ]
        if not dry_run:
            row.append(_outcome(r))
        rows.append(row)
    notes: list[tuple[str, str]] = []
    denied = {r.plan.target.audience.name: r.plan.consent_denied for r in results if r.plan.consent_denied}
    if denied:
        counts = ", ".join(f"{audience} {count:,}" for audience, count in denied.items())
        notes.append((f"Left out for denied ads consent: {counts}", ""))
    for r in results:
        if r.notice:
            notes.append((f"[bold]{r.plan.key}[/bold]: {escape(r.notice)}", "yellow"))
        if r.plan.breaker:
            # Why, with the figures and thresholds it compared, in a dry run too.
            notes.append(
                (
                    f"[bold]{r.plan.key}[/bold]: circuit breaker tripped: {escape(r.plan.breaker)}; nothing "
                    "sent (--allow-mass-remove lets it through if the removes are intended)",
                    "red",
                )
            )
        elif r.error:
            notes.append(
                (
                    f"[bold]{r.plan.key}[/bold]: {escape(redact(r.error))}",
                    "red" if r.status == "error" else "yellow",
                )
            )
    records = {"dry_run": dry_run, "targets": [r.as_dict() for r in results]}
    return TableData(title, columns, rows, records, notes)


def render_results(
    console: Console, results: Sequence[TargetResult], dry_run: bool, fmt: str = "table"
) -> None:
    emit(console, results_table(results, dry_run), fmt)


def _breaker_cell(r: TargetResult) -> str:
    check = breaker_check(r.plan)
    if not check["tripped"]:
        return "ok"
    if check["source_members"] == 0:
        return "[red]TRIPPED[/red] source empty"
    share, limit = check["remove_share"], check["max_remove_share"]
    if share is not None and share > limit:
        return f"[red]TRIPPED[/red] {check['removes']:,} removes = {share:.0%} > {limit:.0%}"
    return f"[red]TRIPPED[/red] {check['removes']:,} removes > {check['max_remove_count']:,}"


def _outcome(r: TargetResult) -> str:
    push = r.push
    parts = []
    if push.confirmed:
        # Settled changes are part of confirmed (or rejected), not more of them.
        via = f" ({push.settled:,} settled by followed jobs)" if push.settled else ""
        parts.append(f"{push.confirmed:,} confirmed{via}")
    elif push.settled:
        parts.append(f"{push.settled:,} settled")
    if push.pending:
        parts.append(f"{push.pending:,} pending")
    if push.rejected:
        parts.append(f"{push.rejected:,} rejected")
    text = ", ".join(parts) or "nothing to send"
    colour = STATUS_COLOURS.get(str(r.status), "white")
    return f"[{colour}]{r.status}[/{colour}] {text}"
