"""Run and error counters in the Prometheus text format, with ``/healthz``, served on loopback.

A tiny registry instead of ``prometheus_client``: the daemon exposes a handful of counters and
gauges, and this keeps the dependency list short.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Labels = tuple[tuple[str, str], ...]

HELP = {
    "audience_sync_runs_total": ("counter", "Runs per sync target, by final status."),
    "audience_sync_run_errors_total": ("counter", "Runs that ended in error, partial or breaker."),
    "audience_sync_changes_confirmed_total": ("counter", "Changes the platform confirmed."),
    "audience_sync_changes_rejected_total": ("counter", "Changes the platform rejected."),
    "audience_sync_busy_total": ("counter", "Runs skipped because another process held the lease."),
    "audience_sync_follow_errors_total": ("counter", "Follow and read-back ticks that failed."),
    "audience_sync_alerts_total": ("counter", "Alerts delivered, by kind and state."),
    "audience_sync_last_run_timestamp_seconds": ("gauge", "When each target's last run finished."),
    "audience_sync_last_success_timestamp_seconds": ("gauge", "When each target last synced cleanly."),
    "audience_sync_run_duration_seconds": ("gauge", "How long each target's last run took."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and gauges keyed by name and labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, Labels], float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        """The exposition text: HELP and TYPE once per metric, then one line per label set."""
        with self._lock:
            items = sorted(self._values.items())
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                kind, text = HELP.get(name, ("untyped", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                seen.add(name)
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` on 127.0.0.1. ``healthy`` decides the health answer."""

    def __init__(self, metrics: Metrics, port: int, healthy: Callable[[], Mapping[str, Any]]) -> None:
        self.metrics = metrics
        self.healthy = healthy
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
                if self.path == "/metrics":
                    self._send(200, server.metrics.render(), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    status = dict(server.healthy())
                    ok = bool(status.get("ok"))
                    body = "\n".join(f"{k}: {v}" for k, v in status.items()) + "\n"
                    self._send(200 if ok else 503, body, "text/plain")
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
