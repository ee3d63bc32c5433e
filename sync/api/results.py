"""What the library's calls return: plain dataclasses that serialize to JSON.

``as_dict()`` gives the exact shape ``audience-sync sync --json`` and ``audience-sync lag --json``
print, so a script reading the CLI's JSON and one calling the library see the same fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audiencesync.sync.run_status import FAILED, ExitCode, RunStatus

if TYPE_CHECKING:
    # The engine's records are imported only for their types, so importing the API stays light.
    from audiencesync.sync.lag import TargetLag
    from audiencesync.sync.runner import TargetResult


@dataclass(frozen=True)
class SyncReport:
    """One run over the config's targets: a plan (``dry_run``) or a push.

    ``targets`` holds one ``TargetResult`` per audience on one destination, in config order: its plan's
    figures (adds, removes, identity changes, invalid identifiers, the breaker's verdict) and, after a
    push, what the platform confirmed, rejected or left pending.
    """

    dry_run: bool
    targets: Sequence[TargetResult]

    @property
    def ok(self) -> bool:
        """True when no target failed and the circuit breaker refused none."""
        return self.exit_code == ExitCode.OK

    @property
    def exit_code(self) -> ExitCode:
        """The exit code ``audience-sync sync`` ends with for this run: ``FAILED`` when a destination
        failed, else ``BREAKER`` when the circuit breaker refused a plan, else ``OK``."""
        if any(t.status in FAILED for t in self.targets):
            return ExitCode.FAILED
        if any(t.status == RunStatus.BREAKER for t in self.targets):
            return ExitCode.BREAKER
        return ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"dry_run": ..., "targets": [...]}``, the shape ``sync --json`` prints."""
        return {"dry_run": self.dry_run, "targets": [t.as_dict() for t in self.targets]}

    def to_json(self, indent: int | None = 2) -> str:
        """``as_dict()`` as JSON text."""
        return json.dumps(self.as_dict(), indent=indent)


@dataclass(frozen=True)
class LagReport:
    """Sync lag, pending work and coverage per target over a window, with each target's SLO verdict.

    ``generated_at`` and ``since`` are Unix timestamps: the report covers lag records from ``since``
    to ``generated_at``.
    """

    generated_at: float
    since: float
    targets: Sequence[TargetLag]

    @property
    def breached(self) -> bool:
        """True when any target breaches its ``max_lag`` (``audience-sync lag`` then exits 4)."""
        from audiencesync.sync.lag import SLO_BREACH

        return any(t.slo == SLO_BREACH for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, the shape ``lag --json`` prints."""
        return {
            "generated_at": self.generated_at,
            "since": self.since,
            "breached": self.breached,
            "targets": [t.as_dict() for t in self.targets],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """``as_dict()`` as JSON text."""
        return json.dumps(self.as_dict(), indent=indent)
