"""The follow step: settle what a platform finished of the work left in flight (Google's jobs and
requests), and read the platform's view of the audience back.

The runner follows before and after each push, the daemon between runs; both take this one step, with
one error handling:

- a ``follow`` that fails (any ``ConnectorError``) is raised with nothing settled: every handle stays
  in flight and is followed again next time. What that means for a run is the caller's to say (the
  runner's push ends partial or in error, as for a failed batch).
- a read-back the platform did not answer (``TransientError``) is logged and reported as ``None``:
  the work it follows stands, and the next read-back records the platform's view. Anything else it
  raises (``AudienceGone``: a person has to act) is raised.

Take it under the target's lease, so it never settles a handle a push is about to follow too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field

from audiencesync.connectors.contract import PUSH_ORDER, Connector, HandleState, PlatformStatus, PushOp
from audiencesync.connectors.errors import TransientError
from audiencesync.state.outbox import OutboxStore, handle_members
from audiencesync.state.store import StateStore
from audiencesync.sync.lag import record_read_back

log = logging.getLogger("audiencesync.follow")


def confirmed_count(op: PushOp, keys: Iterable[bytes], identity_keys: Set[bytes]) -> int:
    """How many of ``keys`` a run counts as confirmed changes: an identity change (its member has
    both a remove and an add) counts once, when its add is confirmed."""
    if op is PushOp.ADD:
        return sum(1 for _ in keys)
    return sum(1 for k in keys if k not in identity_keys)


@dataclass
class FollowReport:
    """What one follow settled."""

    applied: int = 0
    """Changes whose handle the platform finished (confirmed, or failed and queued again)."""
    settled: int = 0
    """Changes a handle confirmed with no failures reported."""
    confirmed: int = 0
    """Of ``settled``, counted as a run counts confirmed changes (``confirmed_count``)."""
    unverified: int = 0
    """Changes a handle confirmed while reporting failures only as a count: at risk, not synced."""
    finished: list[str] = field(default_factory=list)
    """Handles no longer pending."""


class FollowStep:
    """Follow and read back one target's platform audience."""

    def __init__(
        self, store: StateStore, connector: Connector, target_key: str, target_id: int, audience_id: str
    ) -> None:
        self.store = store
        self.outbox = OutboxStore(store.db)
        self.connector = connector
        self.target_key = target_key
        self.target_id = target_id
        self.audience_id = audience_id

    def follow(self, run_for: Callable[[], int], identity_keys: Set[bytes] = frozenset()) -> FollowReport:
        """Ask the platform about every handle in flight and apply its answers. ``run_for`` gives the
        run they are recorded under; it is called once the platform answered, and only when something
        was in flight. ``identity_keys``, the members whose change is an identity change as the push
        that sent them saw them, are counted once in ``FollowReport.confirmed``."""
        report = FollowReport()
        handles = self.outbox.in_flight_handles(self.target_id)
        if not handles:
            return report
        statuses = self.connector.follow(self.audience_id, handles)
        run_id = run_for()
        log.debug(
            "followed",
            extra={
                "target": self.target_key,
                "handles": len(handles),
                "states": [s.state for s in statuses.values()],
            },
        )
        for handle, status in statuses.items():
            confirmed = status.state == HandleState.CONFIRMED
            # Read before applying: a confirmed handle's changes leave the outbox as it is applied.
            members = handle_members(self.store.db, self.target_id, handle) if confirmed else []
            applied = self.outbox.apply_handle(self.target_id, handle, status, run_id)
            if status.state == HandleState.PENDING:
                continue
            report.finished.append(handle)
            report.applied += applied
            if confirmed and status.rejected_count:
                report.unverified += applied
            elif confirmed:
                report.settled += applied
                for op in PUSH_ORDER:
                    report.confirmed += confirmed_count(op, (k for o, k in members if o == op), identity_keys)
        return report

    def read_back(self) -> PlatformStatus | None:
        """Read the platform's view of the audience and record it (which stamps ``ready_at`` on lag
        records once the platform says its processing is done); None when the platform did not
        answer."""
        try:
            status = self.connector.read_back(self.audience_id)
        except TransientError as exc:
            log.warning("read-back failed", extra={"target": self.target_key, "error": str(exc)})
            return None
        record_read_back(self.store, self.target_id, status)
        return status
