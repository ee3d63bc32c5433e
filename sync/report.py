"""Rendering run results for people (rich tables) and machines (JSON)."""

from __future__ import annotations

from collections.abc import Sequence

from audiencesync.sync.runner import TargetResult
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
            "[red]TRIPPED[/red]" if p.breaker else "ok",
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
        if r.notice:
            console.print(f"[bold]{r.plan.key}[/bold]: {r.notice}", style="yellow")
        if r.error:
            console.print(
                f"[bold]{r.plan.key}[/bold]: {r.error}", style="red" if r.status == "error" else "yellow"
            )


def _outcome(r: TargetResult) -> str:
    push = r.push
    parts = []
    if push.confirmed:
        parts.append(f"{push.confirmed:,} confirmed")
    if push.pending:
        parts.append(f"{push.pending:,} pending")
    if push.settled:
        parts.append(f"{push.settled:,} settled")
    if push.rejected:
        parts.append(f"{push.rejected:,} rejected")
    text = ", ".join(parts) or "nothing to send"
    colour = {"ok": "green", "partial": "yellow", "error": "red", "breaker": "red"}.get(r.status, "white")
    return f"[{colour}]{r.status}[/{colour}] {text}"
