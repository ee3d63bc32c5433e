"""The push loop: one target's queued changes through its connector, batch by batch, each outcome
saved in state as it comes back, with the follow step and read-back around it.

A batch is recorded as on the wire, and committed, before it is sent, and leaves the outbox only when
the platform confirmed or rejected it: stopping at any point loses nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from audiencesync.connectors.contract import (
    PUSH_ORDER,
    Capabilities,
    Connector,
    PushOp,
    PushResult,
    SessionInfo,
)
from audiencesync.connectors.errors import FatalError, TransientError
from audiencesync.state.outbox import OutboxStore, QueuedBatch, paired_member_keys
from audiencesync.state.store import StateStore
from audiencesync.sync.follow import FollowStep, confirmed_count
from audiencesync.sync.progress import ProgressEvent, ProgressSink, ProgressStage
from audiencesync.sync.run_result import TargetResult

log = logging.getLogger("audiencesync.runner")

T = TypeVar("T")


@dataclass(frozen=True)
class _SentBatch:
    batch: QueuedBatch
    session: SessionInfo | None
    last: bool
    sent_at: float
    future: Future[PushResult]


def _with_lookahead(items: Iterator[T]) -> Iterator[tuple[T, bool]]:
    """Yield (item, is_last)."""
    try:
        current = next(items)
    except StopIteration:
        return
    for following in items:
        yield current, False
        current = following
    yield current, True


class TargetPush:
    """One target's push in one run, counted into ``result.push``. Take it under the target's lease,
    with the plan committed to the outbox and the run started as ``run_id``."""

    def __init__(
        self,
        store: StateStore,
        connector: Connector,
        caps: Capabilities,
        result: TargetResult,
        audience_id: str,
        run_id: int,
        should_stop: Callable[[], bool],
        progress: ProgressSink,
    ) -> None:
        plan = result.plan
        assert plan.target_id is not None
        self.store = store
        self.outbox = OutboxStore(store.db)
        self.connector = connector
        self.caps = caps
        self.result = result
        self.target_id = plan.target_id
        self.audience_id = audience_id
        self.run_id = run_id
        self.should_stop = should_stop
        self.progress = progress
        self.follow_step = FollowStep(store, connector, plan.key, plan.target_id, audience_id)
        self._identity_keys = paired_member_keys(store.db, plan.target_id)
        """Members whose change is an identity change, counted once (see ``PushOutcome``)."""
        self._run_pending: dict[str, int] = {}
        """Handles this push left pending, with how many changes each carries."""

    def run(self) -> None:
        """Follow what an earlier run left in flight, push removes then adds, follow what this push
        left pending (on a platform that confirms later) and read the audience back."""
        self.follow()
        for op in PUSH_ORDER:
            if self.should_stop():
                break
            # A session Meta refused is abandoned; its batches go again in a new one, once.
            if self.push(op) and self.push(op):
                raise FatalError(
                    "Meta refused a batch even at the start of a new upload session: check the "
                    "destination settings"
                )
        if self.caps.asynchronous:
            self.follow()
        self.read_back()

    def follow(self) -> None:
        """The follow step, counted as this run's: a handle this push sent that settles is no longer
        pending, and its confirmed changes are this run's."""
        report = self.follow_step.follow(lambda: self.run_id, self._identity_keys)
        push = self.result.push
        for handle in report.finished:
            push.pending -= self._run_pending.pop(handle, 0)
        push.unverified += report.unverified
        push.settled += report.settled
        push.confirmed += report.confirmed

    def read_back(self) -> None:
        status = self.follow_step.read_back()
        if status is not None:
            self.result.platform_size = (status.size_lower, status.size_upper)

    def push(self, op: PushOp) -> bool:
        """Push the queued changes of ``op``; True when the platform refused an upload session (those
        batches stay queued for a push in a new session)."""
        tid = self.target_id
        total = self.outbox.queued_count(tid, op)
        if total == 0:
            return False
        send = self.connector.add if op is PushOp.ADD else self.connector.remove
        # Every push starts a new session: one left by an earlier run (killed, or stopped when
        # throttling outlasted max_wait_seconds) may hold a batch_seq Meta never saw, or be closed.
        fresh = True
        refused = False
        # One batch is on the wire at a time, sent from a worker thread, so that this thread reads the
        # next batch and commits the previous one's outcome meanwhile (the state connection is only
        # ever used here). A batch is sent only once the one before it succeeded.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiencesync-push") as sender:
            sent: _SentBatch | None = None
            for batch, last in _with_lookahead(self.outbox.batches(tid, op, self.caps.max_batch)):
                previous = self._outcome(sent) if sent is not None else None
                if sent is not None and previous is not None and self.should_stop():
                    # Stop requested while the last batch was on the wire: save it, send nothing new.
                    self._settle(op, sent, previous)
                    sent = None
                    break
                if previous is not None and previous.detail.get("session_refused"):
                    refused = fresh = True
                session = self._session(op, last, total, fresh) if self.caps.uses_sessions else None
                fresh = False
                # Write-ahead: the batch is recorded as on the wire, and committed, before it is sent.
                self.outbox.mark_on_wire(
                    tid,
                    op,
                    [c.member_key for c in batch.changes],
                    session.session_id if session else None,
                    session.batch_seq if session else None,
                )
                sent_at = time.time()
                future = sender.submit(send, self.audience_id, batch.changes, session)
                if sent is not None and previous is not None:
                    self._settle(op, sent, previous)
                sent = _SentBatch(batch, session, last, sent_at, future)
            if sent is not None:
                outcome = self._outcome(sent)
                refused = refused or bool(outcome.detail.get("session_refused"))
                self._settle(op, sent, outcome)
        if self.should_stop():
            log.info("stopping: the batch in flight was saved", extra={"target": self.result.plan.key})
        return refused and not self.should_stop()

    def _outcome(self, sent: _SentBatch) -> PushResult:
        try:
            return sent.future.result()
        except TransientError:
            self.result.push.requests += max(1, math.ceil(len(sent.batch.changes) / self.caps.max_batch))
            raise

    def _settle(self, op: PushOp, sent: _SentBatch, outcome: PushResult) -> None:
        self.outbox.apply_result(self.target_id, op, outcome, self.run_id, sent.sent_at)
        plan = self.result.plan
        log.debug(
            "batch saved",
            extra={
                "target": plan.key,
                "op": op,
                "size": len(sent.batch.changes),
                "confirmed": len(outcome.confirmed),
                "pending": sum(len(v) for v in outcome.pending.values()),
                "rejected": len(outcome.rejected),
                "seconds": round(time.time() - sent.sent_at, 3),
            },
        )
        self._count(op, outcome)
        self.progress(
            ProgressEvent(
                ProgressStage.PUSH,
                plan.key,
                members_sent=self.result.push.sent,
                to_send=plan.total_adds + plan.total_removes,
                requests=self.result.push.requests,
            )
        )
        if sent.last and sent.session is not None:
            self.store.end_session(self.target_id, op)

    def _session(self, op: PushOp, last: bool, total: int, fresh: bool) -> SessionInfo:
        session_id, seq = self.store.reserve_batch_seq(self.target_id, op, fresh=fresh)
        return SessionInfo(session_id=session_id, batch_seq=seq, last_batch=last, estimated_total=total)

    def _count(self, op: PushOp, outcome: PushResult) -> None:
        push = self.result.push
        push.confirmed += confirmed_count(op, outcome.confirmed, self._identity_keys)
        for handle, keys in outcome.pending.items():
            self._run_pending[handle] = self._run_pending.get(handle, 0) + len(keys)
        push.pending += sum(len(v) for v in outcome.pending.values())
        push.rejected += len(outcome.rejected)
        push.retry += len(outcome.retry)
        push.unverified += len(outcome.unverified)
        push.requests += outcome.requests
        for reason in outcome.rejected.values():
            push.rejection_reasons[reason] = push.rejection_reasons.get(reason, 0) + 1
