"""The lag report as one self-contained HTML page: the report's table, and a lag-over-time chart per
destination drawn as inline SVG. No scripts, fonts or stylesheets are fetched."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime

from audiencesync.sync.lag import LagPoint, TargetLag, format_seconds

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 720, 240, 64, 16, 16, 36

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.breach { color: #b00020; font-weight: bold; } .ok { color: #1b7f3b; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.reasons { color: #b00020; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _table(entries: Sequence[TargetLag]) -> str:
    head = (
        "audience → destination",
        "members",
        "pending adds",
        "pending removes",
        "oldest pending",
        "to confirmed p50",
        "p95",
        "max",
        "to ready p50",
        "p95",
        "max",
        "last success",
        "last error",
        "platform size",
        "coverage",
        "SLO",
    )
    rows = []
    for e in entries:
        c, r = e.to_confirmed, e.to_ready
        size = "-"
        if e.platform_size is not None:
            low, high = e.platform_size
            size = f"{low if low == high else f'{low}–{high}'} ({e.platform_state or '?'})"
        cov = ""
        if e.coverage is not None:
            share = "-" if e.coverage.share is None else f"{e.coverage.share:.1%}"
            cov = f"{share} of {e.coverage.in_flow:,} ({e.coverage.at_risk:,} at risk)"
        slo = {"ok": '<span class="ok">ok</span>', "breach": '<span class="breach">BREACH</span>'}.get(
            e.slo, "-"
        )
        if e.max_lag is not None:
            slo += f" ≤ {_e(format_seconds(e.max_lag))}"
        cells = [
            _e(f"{e.audience} → {e.destination} ({e.platform})"),
            f"{e.members:,}",
            f"{e.pending_adds:,}",
            f"{e.pending_removes:,}",
            _e(format_seconds(e.oldest_pending_age)),
            *(_e(format_seconds(v)) for v in (c.p50, c.p95, c.max, r.p50, r.p95, r.max)),
            _e(_when(e.last_success_at)),
            _e(e.last_error or ""),
            _e(size),
            _e(cov),
            slo,
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    reasons = "".join(
        f'<li class="reasons">{_e(e.target)}: {_e(reason)}</li>' for e in entries for reason in e.slo_reasons
    )
    return f'<table id="lag-table"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>' + (
        f"<ul>{reasons}</ul>" if reasons else ""
    )


def chart_svg(
    title: str,
    lines: Sequence[tuple[str, Sequence[LagPoint], float | None]],
    since: float,
    now: float,
) -> str:
    """One chart: p95 lag to confirmation over time, a line per audience, its max_lag dashed."""
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    top = max(
        [p.p95 for _, points, _ in lines for p in points] + [limit for _, _, limit in lines if limit] + [1.0]
    )
    top *= 1.1
    span = max(now - since, 1e-6)

    def x(ts: float) -> float:
        return PAD_LEFT + (ts - since) / span * plot_w

    def y(value: float) -> float:
        return PAD_TOP + plot_h - value / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lag-chart" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}">',
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        value = top * frac
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_e(format_seconds(value))}</text>'
        )
        ts = since + span * frac
        anchor = {0.0: "start", 0.5: "middle", 1.0: "end"}[frac]
        parts.append(f'<text x="{x(ts):.1f}" y="{HEIGHT - 14}" text-anchor="{anchor}">{_e(_when(ts))}</text>')
    for i, (name, points, limit) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        if limit:
            parts.append(
                f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                f'stroke="{colour}" stroke-dasharray="4 3" opacity="0.6"/>'
            )
        if points:
            coords = " ".join(f"{x(p.start):.1f},{y(p.p95):.1f}" for p in points)
            parts.append(
                f'<polyline class="series" data-audience="{_e(name)}" fill="none" stroke="{colour}" '
                f'stroke-width="2" points="{coords}"/>'
            )
            parts += [
                f'<circle cx="{x(p.start):.1f}" cy="{y(p.p95):.1f}" r="2.5" fill="{colour}">'
                f"<title>{_e(name)}: p95 {_e(format_seconds(p.p95))}, max {_e(format_seconds(p.max))}, "
                f"{p.count} changes</title></circle>"
                for p in points
            ]
        parts.append(
            f'<text x="{PAD_LEFT + 8 + 150 * i}" y="{PAD_TOP + 14}" fill="{colour}" style="fill:{colour}">'
            f"■ {_e(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(
    entries: Sequence[TargetLag],
    series: Mapping[str, Sequence[LagPoint]],
    *,
    since: float,
    now: float,
) -> str:
    """The page: the table, then one chart per destination. ``series`` maps target keys to points."""
    by_destination: dict[str, list[tuple[str, Sequence[LagPoint], float | None]]] = {}
    for e in entries:
        by_destination.setdefault(e.destination, []).append((e.audience, series.get(e.target, []), e.max_lag))
    charts = "".join(
        f'<section class="destination"><h2>{_e(dest)}</h2>'
        f"<p>p95 lag from change to confirmation, per audience; dashed: its max_lag.</p>"
        f"{chart_svg(f'lag on {dest}', lines, since, now)}</section>"
        for dest, lines in by_destination.items()
    )
    breached = sum(e.slo == "breach" for e in entries)
    verdict = (
        f'<p class="breach">{breached} target(s) breach their SLO.</p>'
        if breached
        else '<p class="ok">Every target with an SLO is within it.</p>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>audience-sync lag report</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>audience-sync lag report</h1><p>Lag records from {_e(_when(since))} to {_e(_when(now))}.</p>"
        f"{verdict}{_table(entries)}{charts}</body></html>\n"
    )
