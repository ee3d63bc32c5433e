"""The crash suite's child process: one ``sync`` of the given targets that SIGKILLs itself at a chosen
moment, as a power cut or the OOM killer would. Not a test module; ``scenarios.py`` runs it.

Usage: crash_driver.py CONFIG POINT AT MAX_BATCH TARGET...

POINT is where the kill lands, on its AT-th occurrence:
    plan          while planning (the capabilities look-up of each target)
    before_send   a batch is recorded as on the wire, its request not yet sent (between batches)
    after_accept  the platform accepted a batch, its answer not yet written to state
    poll          while following pending work (Google's request and job polling)
    none          never: a clean run
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from audiencesync.connectors.contract import (
    AudienceSpec,
    Capabilities,
    Change,
    Connector,
    DestinationConfig,
    HandleStatus,
    PlatformStatus,
    PushResult,
    SessionInfo,
)
from audiencesync.sync.config import Target, load_config

POINTS = ("plan", "before_send", "after_accept", "poll")


def fast_connector(dest: DestinationConfig) -> Connector:
    """The destination's real connector with millisecond backoff, so faults cost no wall time."""
    if dest.platform == "meta":
        from audiencesync.connectors.meta.connector import MetaConnector

        return MetaConnector(dest, backoff_initial=0.005, backoff_max=0.05, timeout_seconds=5.0)
    if dest.platform == "google":
        from audiencesync.connectors.google.connector import GoogleConnector

        return GoogleConnector(
            dest, backoff_initial=0.005, backoff_max=0.05, timeout_seconds=10.0, poll_interval=0.02
        )
    from audiencesync.connectors.tiktok.connector import RetryPolicy, TikTokConnector

    return TikTokConnector(dest, RetryPolicy(0.005, 0.05, 5.0, 5.0))


class KillingConnector:
    """Wraps a real connector; SIGKILLs this process at the AT-th occurrence of POINT."""

    def __init__(self, inner: Connector, point: str, at: int, max_batch: int) -> None:
        self.inner = inner
        self.point = point
        self.at = at
        self.max_batch = max_batch
        self.seen = 0

    def _tick(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def capabilities(self) -> Capabilities:
        self._tick("plan")
        return replace(self.inner.capabilities(), max_batch=self.max_batch)

    def ensure_audience(self, spec: AudienceSpec) -> str:
        return self.inner.ensure_audience(spec)

    def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        self._tick("before_send")
        result = self.inner.add(audience_id, batch, session)
        self._tick("after_accept")
        return result

    def remove(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        self._tick("before_send")
        result = self.inner.remove(audience_id, batch, session)
        self._tick("after_accept")
        return result

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, HandleStatus]:
        self._tick("poll")
        return self.inner.follow(audience_id, handles)

    def read_back(self, audience_id: str) -> PlatformStatus:
        return self.inner.read_back(audience_id)

    def refresh_due_seconds(self) -> float | None:
        return self.inner.refresh_due_seconds()

    def close(self) -> None:
        self.inner.close()


def main(argv: list[str]) -> int:
    from audiencesync.state.store import StateStore
    from audiencesync.sync.runner import RunOptions, SyncRunner

    config_path, point, at, max_batch, *targets = argv
    config = load_config(Path(config_path), dict(os.environ))
    store = StateStore.open(config.state_path)

    def build(target: Target) -> Connector:
        return KillingConnector(fast_connector(target.destination), point, int(at), int(max_batch))

    try:
        results = SyncRunner(
            config, store, RunOptions(targets=tuple(targets), connector_factory=build, lease_wait=30.0)
        ).run()
    finally:
        store.close()
    for r in results:
        print(r.plan.key, r.status, r.error or "", flush=True)
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
