"""The daemon's Prometheus metrics on ``prometheus_client``, and the small HTTP server that serves them
with ``/healthz`` (JSON) and the status page at ``/``, on loopback.

Two kinds of series, all labelled ``audience``, ``destination`` and ``platform``:
- events the daemon counts as they happen (runs by status, busy skips, follow errors, alerts, the
  last run's time and duration), registered for every target at start-up so each series exists
  before the first run;
- figures read from the state file (``sync.status.StatusPage``, refreshed after every run and follow
  tick): members, pending changes, the oldest pending change, platform size, in-flow coverage, lag
  histograms, and the confirmed and rejected totals, which are the sums of ``audience-sync runs``.
Values are written at full precision by the library, so a timestamp is exact to the second.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from audiencesync.sync.config import Target
from audiencesync.sync.lag import AT_RISK_REASONS, LAG_BUCKETS
from audiencesync.sync.status import StatusPage
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LABELS = ("audience", "destination", "platform")
Labels = tuple[str, str, str]
NO_TARGET: Labels = ("", "", "")
"""Labels of events that belong to no one target (a follow tick that failed as a whole)."""


def _package_version() -> str:
    try:
        return version("audience-sync")
    except PackageNotFoundError:
        return "unknown"


class StateCollector(Collector):
    """Yields the state-file figures of the latest ``StatusPage`` at each scrape."""

    def __init__(self, page: Callable[[], StatusPage | None], targets: Mapping[str, Labels]) -> None:
        self._page = page
        self._targets = targets

    def collect(self) -> Iterator[Metric]:
        page = self._page()
        names = list(LABELS)

        def gauge(name: str, text: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=[*names, *extra])

        members = gauge("audience_sync_members", "Members confirmed on the platform, as in the state file.")
        adds = gauge("audience_sync_pending_adds", "Adds in the outbox, not yet confirmed.")
        removes = gauge("audience_sync_pending_removes", "Removes in the outbox, not yet confirmed.")
        oldest = gauge(
            "audience_sync_oldest_pending_age_seconds", "Age of the oldest change in the outbox (0: none)."
        )
        size = gauge(
            "audience_sync_platform_size",
            "Audience size the platform last reported (lower bound; -1: not reported).",
        )
        success = gauge(
            "audience_sync_last_success_timestamp_seconds", "When the target last synced cleanly (0: never)."
        )
        ratio = gauge(
            "audience_sync_inflow_coverage_ratio",
            "In-flow audiences: share of the profiles in the flow confirmed on the platform.",
        )
        at_risk = gauge(
            "audience_sync_inflow_at_risk",
            "In-flow audiences: profiles in the flow not yet excluded on the platform, by reason.",
            ["reason"],
        )
        confirmed = CounterMetricFamily(
            "audience_sync_changes_confirmed",
            "Changes the platform confirmed (the runs' total).",
            labels=names,
        )
        rejected = CounterMetricFamily(
            "audience_sync_changes_rejected", "Changes the platform rejected (the runs' total).", labels=names
        )
        rejected_reason = CounterMetricFamily(
            "audience_sync_changes_rejected_by_reason",
            "Changes the platform rejected, by its reason (adds up to changes_rejected).",
            labels=[*names, "reason"],
        )
        rejected_now = gauge(
            "audience_sync_rejected_members", "Members the platform currently rejects, by reason.", ["reason"]
        )
        hists = {
            m: HistogramMetricFamily(
                f"audience_sync_lag_{m}_seconds",
                f"Lag from a change to the platform {'confirming' if m == 'to_confirmed' else 'reporting ready'} "
                "it, over the retained lag records.",
                labels=names,
            )
            for m in ("to_confirmed", "to_ready")
        }
        for key, labels in self._targets.items():
            entry = page.entry(key) if page is not None else None
            values = list(labels)
            if entry is not None:
                members.add_metric(values, entry.members)
                adds.add_metric(values, entry.pending_adds)
                removes.add_metric(values, entry.pending_removes)
                oldest.add_metric(values, entry.oldest_pending_age or 0.0)
                low = entry.platform_size[0] if entry.platform_size else None
                size.add_metric(values, -1 if low is None else low)
                success.add_metric(values, entry.last_success_at or 0.0)
                if entry.coverage is not None:
                    c = entry.coverage
                    ratio.add_metric(values, c.share if c.share is not None else 1.0)
                    for reason in AT_RISK_REASONS:
                        at_risk.add_metric([*values, reason], c.at_risk_reasons.get(reason, 0))
            if page is None:
                continue
            totals = page.totals.get(key)
            if totals is not None:
                confirmed.add_metric(values, totals.confirmed)
                rejected.add_metric(values, totals.rejected)
                for reason, count in totals.rejected_by_reason.items():
                    rejected_now.add_metric([*values, reason], count)
                for reason, count in totals.rejected_changes_by_reason.items():
                    rejected_reason.add_metric([*values, reason], count)
            for measure, family in hists.items():
                h = page.histograms.get(key, {}).get(measure)
                if h is None:
                    continue
                buckets = [(f"{b:g}", float(n)) for b, n in zip(LAG_BUCKETS, h.cumulative, strict=True)]
                family.add_metric(values, [*buckets, ("+Inf", float(h.count))], h.total)
        yield from (members, adds, removes, oldest, size, success, ratio, at_risk, confirmed, rejected)
        yield from (rejected_reason, rejected_now, *hists.values())


class Metrics:
    """The daemon's registry. ``inc`` and ``set`` take ``target=<key>`` and label it by audience,
    destination and platform; ``page`` supplies the state-file figures at scrape time."""

    def __init__(
        self, targets: Sequence[Target] = (), page: Callable[[], StatusPage | None] = lambda: None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._targets: dict[str, Labels] = {
            t.key: (t.audience.name, t.destination.name, t.destination.platform) for t in targets
        }
        names = list(LABELS)
        r = self.registry
        self._counters = {
            "audience_sync_runs_total": Counter(
                "audience_sync_runs", "Runs per sync target, by final status.", [*names, "status"], registry=r
            ),
            "audience_sync_run_errors_total": Counter(
                "audience_sync_run_errors", "Runs that ended in error, partial or breaker.", names, registry=r
            ),
            "audience_sync_busy_total": Counter(
                "audience_sync_busy",
                "Runs skipped because another process held the lease.",
                names,
                registry=r,
            ),
            "audience_sync_follow_errors_total": Counter(
                "audience_sync_follow_errors", "Follow and read-back ticks that failed.", names, registry=r
            ),
            "audience_sync_alerts_total": Counter(
                "audience_sync_alerts", "Alerts delivered, by kind and state.", ["kind", "state"], registry=r
            ),
        }
        self._gauges = {
            "audience_sync_last_run_timestamp_seconds": Gauge(
                "audience_sync_last_run_timestamp_seconds",
                "When each target's last run finished (0: not since start-up).",
                names,
                registry=r,
            ),
            "audience_sync_run_duration_seconds": Gauge(
                "audience_sync_run_duration_seconds",
                "How long each target's last run took.",
                names,
                registry=r,
            ),
        }
        Info("audience_sync_build", "The running audience-sync.", registry=r).info(
            {"version": _package_version()}
        )
        r.register(StateCollector(page, self._targets))
        for labels in self._targets.values():
            # Every series from start-up, so rate() and absent() work before the first run.
            self._counters["audience_sync_runs_total"].labels(*labels, "ok")
            for name in ("audience_sync_run_errors_total", "audience_sync_busy_total"):
                self._counters[name].labels(*labels)
            self._counters["audience_sync_follow_errors_total"].labels(*labels)
            for gauge in self._gauges.values():
                gauge.labels(*labels)

    def _labels(self, labels: Mapping[str, str]) -> list[str]:
        extra = dict(labels)
        if "target" not in extra:
            return list(extra.values())
        return [*self._targets.get(extra.pop("target"), NO_TARGET), *extra.values()]

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Count an event; names without a counter here (figures the state file holds) are ignored."""
        counter = self._counters.get(name)
        if counter is not None:
            counter.labels(*self._labels(labels)).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        gauge = self._gauges.get(name)
        if gauge is not None:
            gauge.labels(*self._labels(labels)).set(value)

    def render(self) -> str:
        """The exposition text (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry).decode()


class MetricsServer:
    """``GET /`` (the status page), ``/metrics`` and ``/healthz`` (JSON) on 127.0.0.1. ``health``
    answers with at least ``ok``; a false ``ok`` answers 503."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        health: Callable[[], Mapping[str, Any]],
        page: Callable[[], str] | None = None,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.page = page
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, server.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    status = dict(server.health())
                    body = json.dumps(status, indent=2, default=str) + "\n"
                    self._send(200 if status.get("ok") else 503, body, "application/json")
                elif path == "/" and server.page is not None:
                    self._send(200, server.page(), "text/html; charset=utf-8")
                else:
                    self._send(404, "not found\n", "text/plain")

            def _send(self, code: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the daemon's own log

        return Handler
