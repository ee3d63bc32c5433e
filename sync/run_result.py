"""What a run reports: one target's result and the counts behind it, the one definition that logs,
``runs``, ``/metrics`` and the report show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from audiencesync.sync.plan import TargetPlan
from audiencesync.sync.run_status import RunStatus


@dataclass
class PushOutcome:
    """One run's counts, the one definition that logs, ``runs``, ``/metrics`` and the report show.

    ``confirmed`` is every change the platform confirmed in this run, whether at once (Meta, TikTok)
    or by a followed job or request that succeeded (Google); an identity change (old identifiers
    out, new ones in) counts once, when its add is confirmed."""

    confirmed: int = 0
    pending: int = 0
    """Sent in this run and still awaiting the platform at its end (a Google job or request not yet
    settled): confirmed + pending + rejected is what this run had accepted or refused."""
    rejected: int = 0
    retry: int = 0
    requests: int = 0
    settled: int = 0
    """Of ``confirmed`` and rejected: in-flight changes (this run's or earlier ones') that a followed
    job settled during this run."""
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    unverified: int = 0
    """Members sent in batches the platform reported failures for only as counts: at risk, not synced."""

    @property
    def sent(self) -> int:
        """Changes this run had the platform accept or refuse, for progress."""
        return self.confirmed + self.pending + self.rejected

    def as_dict(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "pending": self.pending,
            "rejected": self.rejected,
            "retry": self.retry,
            "requests": self.requests,
            "settled": self.settled,
            "rejection_reasons": self.rejection_reasons,
            "unverified": self.unverified,
        }


@dataclass
class TargetResult:
    """What happened to one target in one run: the plan's figures and the push's outcome."""

    plan: TargetPlan
    status: RunStatus = RunStatus.PLANNED
    push: PushOutcome = field(default_factory=PushOutcome)
    error: str | None = None
    audience_id: str | None = None
    platform_size: tuple[int | None, int | None] | None = None
    at_risk: dict[str, int] = field(default_factory=dict)
    """After the push: members not settled as synced, by state (``unverified``: the platform reported
    failures in their batch only as a count; ``maybe``: sent, answer never recorded)."""
    notice: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.plan.as_dict()
        out.update(
            breaker_check=breaker_check(self.plan),
            status=self.status,
            error=self.error,
            at_risk=self.at_risk,
            notice=self.notice,
            audience_id=self.audience_id,
            push=self.push.as_dict(),
        )
        return out

    def run_counts(self) -> dict[str, Any]:
        """The counts ``runs`` records for this result."""
        counts = plan_counts(self.plan)
        counts.update(
            confirmed=self.push.confirmed,
            pending=self.push.pending,
            rejected=self.push.rejected,
            requests=self.push.requests,
        )
        return counts


def breaker_check(plan: TargetPlan) -> dict[str, Any]:
    """The circuit breaker's figures for a plan: what it compared and against which thresholds."""
    breaker = plan.target.sync.breaker
    return {
        "tripped": plan.breaker is not None,
        "reason": plan.breaker,
        "removes": plan.removes,
        "synced": plan.synced,
        "source_members": plan.source_members,
        "remove_share": round(plan.removes / plan.synced, 4) if plan.synced else None,
        "max_remove_share": breaker.max_remove_share,
        "max_remove_count": breaker.max_remove_count,
    }


def plan_counts(plan: TargetPlan) -> dict[str, Any]:
    """The plan's figures as ``runs`` records them."""
    return {
        "source_members": plan.source_members,
        "adds": plan.adds,
        "removes": plan.removes,
        "identity_changes": plan.identity_changes,
        "invalid": dict(plan.invalid),
    }
