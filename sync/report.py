"""Rendering run results for people (rich tables) and machines (JSON)."""

from __future__ import annotations

from collections.abc import Sequence

from audiencesync.sync.runner import TargetResult, breaker_check
from rich.console import Console
from rich.table import Table


def _invalid_summary(invalid: dict[str, int]) -> str:
    if not invalid:
        return "-"
    top = sorted(invalid.items(), key=lambda kv: -kv[1])[:3]
    more = f" +{len(invalid) - 3}" if len(invalid) > 3 else ""
    return ", ".join(f"{k} {v}" for k, v in top) + more


def render_results(console: Console, results: Sequence[TargetResult], dry_run: bool) -> None:
    title = "Plan (dry run: nothing sent, state untouched)" if dry_run else "Sync"
    table = Table(title=title, title_justify="left", show_lines=False)
    for column, justify in [
        ("audience → destination", "left"),
        ("in source", "right"),
        ("synced", "right"),
        ("adds", "right"),
        ("removes", "right"),
        ("id changes", "right"),
        ("requests", "right"),
        ("invalid ids", "left"),
        ("breaker", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if not dry_run:
        table.add_column("result", justify="left")
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
        table.add_row(*row)
    console.print(table)
    denied = {r.plan.target.audience.name: r.plan.consent_denied for r in results if r.plan.consent_denied}
    if denied:
        counts = ", ".join(f"{audience} {count:,}" for audience, count in denied.items())
        console.print(f"Left out for denied ads consent: {counts}")
    for r in results:
        if r.plan.breaker:
            # Why, with the figures and thresholds it compared, in a dry run too.
            console.print(
                f"[bold]{r.plan.key}[/bold]: circuit breaker tripped: {r.plan.breaker}; nothing sent "
                "(--allow-mass-remove lets it through if the removes are intended)",
                style="red",
            )
        elif r.error:
            console.print(
                f"[bold]{r.plan.key}[/bold]: {r.error}", style="red" if r.status == "error" else "yellow"
            )


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
    colour = {"ok": "green", "partial": "yellow", "error": "red", "breaker": "red"}.get(r.status, "white")
    return f"[{colour}]{r.status}[/{colour}] {text}"
