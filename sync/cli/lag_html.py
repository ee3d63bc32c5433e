"""The status page as one self-contained HTML document: the daemon serves it at ``/`` and ``lag --html``
writes it to a file. One row per audience and destination with its SLO state first, then a section
per target with its lag-over-time chart (inline SVG, scaled to the data) and its recent runs. No
scripts, fonts or stylesheets are fetched. The data comes from ``sync.status.StatusPage``."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from audiencesync.sync.lag import (
    AT_RISK_REASONS,
    SLO_AT_RISK,
    SLO_BREACH,
    SLO_OK,
    LagPoint,
    TargetLag,
    format_seconds,
)
from audiencesync.sync.status import StatusPage

WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 720, 220, 64, 16, 12, 30
LEGEND_H = 22
DASH = "–"
SLO_LABELS = {SLO_OK: "ok", SLO_AT_RISK: "at risk", SLO_BREACH: "breached"}

_STYLE = """
:root { --ok: #1b7f3b; --risk: #9a6700; --breach: #b00020; --muted: #666; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 12px; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; margin: 0 0 4px; } h2 { font-size: 1.1em; margin: 24px 0 6px; }
.meta { color: var(--muted); margin: 0 0 12px; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 4px; text-align: right; vertical-align: top; }
th { font-weight: 600; background: #f6f6f6; }
tr.groups th { text-align: center; border-bottom: 1px solid #bbb; }
.left, th.left, td.left { text-align: left; }
td.target { font-weight: 600; overflow-wrap: break-word; min-width: 9em; }
.slo { display: inline-block; min-width: 5.5em; padding: 1px 6px; border-radius: 3px; color: #fff;
       font-weight: 700; text-align: center; white-space: nowrap; }
.slo-ok { background: var(--ok); } .slo-at_risk { background: var(--risk); }
.slo-breach { background: var(--breach); } .slo-no_slo { background: #888; }
.reasons { color: var(--breach); margin: 4px 0; padding-left: 1.2em; }
.ago, .sub { color: var(--muted); font-size: 0.9em; }
svg.lag-chart { width: 100%; max-width: 720px; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.error { color: var(--breach); }
@media (max-width: 700px) {
  body { padding: 8px; }
  #lag-table thead { display: none; }
  #lag-table, #lag-table tbody, #lag-table tr, #lag-table td { display: block; width: 100%; }
  #lag-table tr { border: 1px solid #ccc; border-radius: 4px; margin-bottom: 10px; padding: 4px; }
  #lag-table td { text-align: left; border: none; padding: 2px 4px; }
  #lag-table td.blank { display: none; }
  #lag-table td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); }
  table.runs th:nth-child(n+4), table.runs td:nth-child(n+4) { display: none; }
}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _when(ts: float | None) -> str:
    """Local time with its zone, e.g. ``2026-12-02 14:05:09 CET``."""
    if ts is None:
        return DASH
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _day_time(ts: float | None) -> str:
    """Local day and time with its zone, short enough for a table cell: ``12-02 14:05 CET``."""
    if ts is None:
        return DASH
    return datetime.fromtimestamp(ts).astimezone().strftime("%m-%d %H:%M %Z")


def _short_when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%m-%d %H:%M")


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    delta = now - ts
    return f"in {format_seconds(-delta)}" if delta < 0 else f"{format_seconds(delta)} ago"


def _secs(value: float | None) -> str:
    return DASH if value is None else format_seconds(value)


def slo_badge(state: str) -> str:
    label = SLO_LABELS.get(state, "no SLO")
    return f'<span class="slo slo-{_e(state)}" data-slo="{_e(state)}">{_e(label)}</span>'


def _size(e: TargetLag) -> str:
    if e.platform_size is None:
        return DASH
    low, high = e.platform_size
    if low is None and high is None:
        return "unknown"
    if low == high or high is None or low is None:
        return f"{(low if low is not None else high):,}"
    return f"{low:,}–{high:,}"


def coverage_text(e: TargetLag) -> str:
    """``97.0% of 1,234; 37 at risk: consent denied 30, no valid identifier 7``; empty for audiences
    that are not in-flow."""
    c = e.coverage
    if c is None:
        return ""
    share = DASH if c.share is None else f"{c.share:.1%}"
    text = f"{share} of {c.in_flow:,}"
    if c.at_risk:
        parts = [f"{r} {c.at_risk_reasons[r]:,}" for r in AT_RISK_REASONS if c.at_risk_reasons.get(r)]
        text += f"; {c.at_risk:,} at risk" + (f": {', '.join(parts)}" if parts else "")
    return text


def _table(page: StatusPage) -> str:
    groups = (
        '<tr class="groups"><th colspan="3"></th><th colspan="3">pending</th>'
        '<th colspan="3">lag to confirmed</th><th colspan="3">lag to ready</th>'
        '<th></th><th colspan="2">platform</th><th></th></tr>'
    )
    heads = [
        ("SLO", "left"),
        ("audience → destination", "left"),
        ("members", ""),
        ("adds", ""),
        ("removes", ""),
        ("oldest", ""),
        ("p50", ""),
        ("p95", ""),
        ("max", ""),
        ("p50", ""),
        ("p95", ""),
        ("max", ""),
        ("last success", "left"),
        ("size", ""),
        ("state", "left"),
        ("in-flow coverage", "left"),
    ]
    header = "<tr>" + "".join(f'<th class="{cls}">{_e(h)}</th>' for h, cls in heads) + "</tr>"
    labels = [
        "SLO",
        "target",
        "members",
        "pending adds",
        "pending removes",
        "oldest pending",
        "to confirmed p50",
        "to confirmed p95",
        "to confirmed max",
        "to ready p50",
        "to ready p95",
        "to ready max",
        "last success",
        "platform size",
        "platform state",
        "in-flow coverage",
    ]
    rows = []
    for e in page.entries:
        c, r = e.to_confirmed, e.to_ready
        limit = "" if e.max_lag is None else f' <span class="sub">≤ {_e(format_seconds(e.max_lag))}</span>'
        cells = [
            (slo_badge(e.slo) + limit, "left"),
            (_e(f"{e.audience} → {e.destination} ({e.platform})"), "left target"),
            (f"{e.members:,}", ""),
            (f"{e.pending_adds:,}", ""),
            (f"{e.pending_removes:,}", ""),
            (_e(_secs(e.oldest_pending_age)), ""),
            *((_e(_secs(v)), "") for v in (c.p50, c.p95, c.max, r.p50, r.p95, r.max)),
            (
                f'{_e(_day_time(e.last_success_at))}<br><span class="ago">'
                f"{_e(_ago(e.last_success_at, page.generated_at))}</span>",
                "left",
            ),
            (_e(_size(e)), ""),
            (_e(e.platform_state or DASH), "left"),
            (_e(coverage_text(e)), "left"),
        ]
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="{cls}{" blank" if not cell else ""}" data-label="{_e(label)}">{cell}</td>'
                for (cell, cls), label in zip(cells, labels, strict=True)
            )
            + "</tr>"
        )
    return (
        f'<div class="wrap"><table id="lag-table"><thead>{groups}{header}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _nice_top(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (at least 10 ms), so
    a lag of seconds fills the chart instead of sitting on its x axis."""
    value = max(value, 0.01)
    scale = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * scale >= value * (1 - 1e-9):
            return step * scale
    return 10 * scale


def chart_svg(title: str, points: Sequence[LagPoint], limit: float | None, since: float, now: float) -> str:
    """Lag to confirmation over time for one target: p95 as a line, max as dots. The y axis is scaled
    to the data; ``limit`` (max_lag) is drawn as a dashed line only when it falls within that scale.
    The legend sits under the plot, so it never covers a line."""
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM - LEGEND_H
    peak = max([p.max for p in points] + [p.p95 for p in points] + [0.0])
    top = _nice_top(peak * 1.1)
    span = max(now - since, 1e-6)

    def x(ts: float) -> float:
        return PAD_LEFT + (ts - since) / span * plot_w

    def y(value: float) -> float:
        return PAD_TOP + plot_h - min(value, top) / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lag-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{_e(title)}" data-top="{top:g}">',
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{y(top * frac) + 4:.1f}" text-anchor="end">'
            f"{_e(format_seconds(top * frac))}</text>"
        )
        anchor = {0.0: "start", 0.5: "middle", 1.0: "end"}[frac]
        parts.append(
            f'<text x="{x(since + span * frac):.1f}" y="{PAD_TOP + plot_h + 16}" text-anchor="{anchor}">'
            f"{_e(_short_when(since + span * frac))}</text>"
        )
    legend_y = HEIGHT - 6
    legend = [("#1f77b4", "p95 lag to confirmed", ""), ("#ff7f0e", "max", "")]
    if limit is not None and limit <= top:
        parts.append(
            f'<line class="max-lag" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y(limit):.1f}" '
            f'y2="{y(limit):.1f}" stroke="#b00020" stroke-dasharray="5 3"/>'
        )
        legend.append(("#b00020", f"max_lag {format_seconds(limit)}", ""))
    elif limit is not None:
        legend.append(("#888", f"max_lag {format_seconds(limit)} is above this scale", ""))
    if points:
        coords = " ".join(f"{x(p.start):.1f},{y(p.p95):.1f}" for p in points)
        parts.append(
            f'<polyline class="series" data-target="{_e(title)}" fill="none" stroke="#1f77b4" stroke-width="2" points="{coords}"/>'
        )
        parts += [
            f'<circle cx="{x(p.start):.1f}" cy="{y(p.p95):.1f}" r="3" fill="#1f77b4"/>'
            f'<circle cx="{x(p.start):.1f}" cy="{y(p.max):.1f}" r="2.5" fill="#ff7f0e">'
            f"<title>{_e(_short_when(p.start))}: p95 {_e(format_seconds(p.p95))}, "
            f"max {_e(format_seconds(p.max))}, {p.count:,} changes</title></circle>"
            for p in points
        ]
    else:
        parts.append(
            f'<text x="{PAD_LEFT + plot_w / 2:.1f}" y="{PAD_TOP + plot_h / 2:.1f}" text-anchor="middle">'
            "no confirmed changes in this window</text>"
        )
    offset = PAD_LEFT
    for colour, label, _ in legend:
        parts.append(
            f'<rect x="{offset}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{offset + 14}" y="{legend_y}">{_e(label)}</text>'
        )
        offset += 36 + 6 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def _runs_table(runs: Sequence[dict[str, Any]], now: float) -> str:
    if not runs:
        return '<p class="sub">No runs yet.</p>'
    head = ("run", "started", "status", "took", "confirmed", "rejected", "requests", "error")
    rows = []
    for r in runs:
        err = r.get("error") or ""
        cells = [
            _e(r["id"]),
            f'{_e(_when(r["started_at"]))} <span class="ago">{_e(_ago(r["started_at"], now))}</span>',
            _e(r["status"] or DASH),
            _e(_secs(r["duration"])),
            f"{int(r.get('confirmed') or 0):,}",
            f"{int(r.get('rejected') or 0):,}",
            f"{int(r.get('requests') or 0):,}",
            f'<span class="error">{_e(err)}</span>' if err else "",
        ]
        rows.append("<tr>" + "".join(f'<td class="left">{c}</td>' for c in cells) + "</tr>")
    header = "<tr>" + "".join(f'<th class="left">{h}</th>' for h in head) + "</tr>"
    return f'<div class="wrap"><table class="runs"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table></div>'


def _section(page: StatusPage, e: TargetLag) -> str:
    reasons = "".join(f"<li>{_e(reason)}</li>" for reason in e.slo_reasons)
    error = f'<p class="error">last error: {_e(e.last_error)}</p>' if e.last_error else ""
    totals = page.totals.get(e.target)
    by_reason = ""
    if totals is not None and totals.rejected_by_reason:
        by_reason = (
            '<p class="sub">rejected members on file: '
            + _e(", ".join(f"{k} {v:,}" for k, v in totals.rejected_by_reason.items()))
            + "</p>"
        )
    runs = [r for r in page.runs if r["target"] == e.target][:8]
    return (
        f'<section class="target" id="t-{_e(e.target)}"><h2>{slo_badge(e.slo)} '
        f"{_e(e.audience)} → {_e(e.destination)} ({_e(e.platform)})</h2>"
        + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + error
        + chart_svg(e.target, page.series.get(e.target, []), e.max_lag, page.since, page.generated_at)
        + by_reason
        + _runs_table(runs, page.generated_at)
        + "</section>"
    )


def _daemon_line(page: StatusPage) -> str:
    d = page.daemon
    if d is None:
        return ""
    state = str(d.get("state") or DASH)
    problems = [str(p) for p in d.get("problems") or []]
    text = f"daemon: {state}"
    if problems:
        text += "; problems: " + "; ".join(problems)
    return f'<p class="meta" id="daemon">{_e(text)}</p>'


def render_page(page: StatusPage, *, refresh_seconds: int | None = None) -> str:
    """The whole page. ``refresh_seconds`` adds a meta refresh (the daemon's live page)."""
    counts = {s: sum(e.slo == s for e in page.entries) for s in SLO_LABELS}
    if counts[SLO_BREACH]:
        verdict = f"{counts[SLO_BREACH]} of {len(page.entries)} targets breach their SLO"
    elif counts[SLO_AT_RISK]:
        verdict = f"{counts[SLO_AT_RISK]} of {len(page.entries)} targets are at risk of breaching their SLO"
    else:
        verdict = "Every target with an SLO is within it"
    state = SLO_BREACH if counts[SLO_BREACH] else SLO_AT_RISK if counts[SLO_AT_RISK] else SLO_OK
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>audience-sync status</title><style>{_STYLE}</style></head><body>"
        "<h1>audience-sync status</h1>"
        f'<p class="meta">Generated {_e(_when(page.generated_at))}; lag records since '
        f"{_e(_when(page.since))} ({_e(format_seconds(page.generated_at - page.since))}).</p>"
        f"{_daemon_line(page)}"
        f'<p id="verdict">{slo_badge(state)} {_e(verdict)}.</p>'
        f"{_table(page)}{''.join(_section(page, e) for e in page.entries)}</body></html>\n"
    )
