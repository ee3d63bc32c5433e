"""The contract every platform connector implements.

A connector is a plain class with the methods of ``Connector`` below, every method the engine calls.
The runner owns everything else: planning, the outbox, retries across runs, state. A connector only
turns a batch of changes into platform requests and tells the runner, member by member, what became
of them.

Life of a change, as the runner drives it::

    plan -> outbox (queued) -> add()/remove() -> PushResult
        confirmed  -> membership updated, change leaves the outbox
        pending    -> change stays in the outbox as in flight, with a handle; follow(handle) later
                      says confirmed (leaves the outbox) or failed (queued again)
        rejected   -> leaves the outbox into the rejection log with its reason; retried on later runs
                      with backoff, up to a maximum age
        retry      -> stays queued for the next run (the platform asked us to resend)
        unverified -> the platform reported failures only as a count: kept as possibly on the
                      platform, at risk, and resent by the next run until a resend settles it
    A batch is recorded as on the wire before it is sent; one with no recorded answer (a crash, a
    lost answer) is maybe applied: possibly on the platform, resent or removed as the source says.

Re-sending is always safe: every platform's add and remove are idempotent, so a crash between a
platform's answer and the state commit costs one duplicate request, never a lost or doubled member.

Connectors raise the errors in ``audiencesync.connectors.errors``: ``TransientError`` when retries
inside the connector were exhausted (the batch stays in the outbox), ``FatalError`` and its
subclasses when a person has to fix something (the run stops for that destination).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from audiencesync.connectors.platform_spec import IdentityProfile, SettingsSchema

# Canonical identifier kinds, as configured under [source.identifiers]. ``audiencesync.sync.identity``
# turns raw values into platform-ready values under these keys (Meta's ``dob`` becomes
# ``doby``/``dobm``/``dobd``, the three keys Meta's schema has for it).
IDENTIFIER_KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "zip",
    "city",
    "state",
    "country",
    "dob",
    "gender",
    "maid",
    "external_id",
)


@dataclass(frozen=True)
class Capabilities:
    """What a platform accepts, declared as data so the planner can count requests up front."""

    max_batch: int
    """Most members one add or remove request may carry."""
    identifier_kinds: frozenset[str]
    """Identifier keys (after normalization) the platform can take."""
    asynchronous: bool = False
    """True when an accepted batch may be confirmed later, through ``follow`` (its ``PushResult``
    has ``pending`` handles). The engine follows right after a push only for such a platform; handles
    left in flight by an earlier run are followed whatever the platform declares."""
    uses_sessions: bool = False
    """True when multi-batch pushes should be tied together with a ``SessionInfo``."""


class PushOp(StrEnum):
    """Which way a change goes. The value is what the outbox's ``op`` column holds."""

    ADD = "add"
    REMOVE = "remove"


PUSH_ORDER: tuple[PushOp, ...] = (PushOp.REMOVE, PushOp.ADD)
"""The order a push sends its changes in, and a follow counts them in."""


@dataclass(frozen=True)
class AudienceSpec:
    """The platform audience one sync target needs."""

    target: str
    """Sync target key, ``"<audience>@<destination>"``; stable across runs."""
    name: str
    """Platform audience name, derived from the audience with the destination's prefix."""
    description: str
    identifier_kinds: tuple[str, ...]
    """Identifier keys members will carry, in a fixed order (Meta's schema is built from it)."""
    known_id: str | None = None
    """Platform audience id pinned in config or recorded in state by an earlier run."""


@dataclass(frozen=True)
class Change:
    """One member to add or remove. ``identifiers`` hold hashed values only (or the few raw values a
    platform's rules require, such as Google's country code); never plaintext PII."""

    member_key: bytes
    identifiers: Mapping[str, str]
    consent: bool | None = None
    """Ads consent from the source: True granted, False denied, None unknown."""


@dataclass(frozen=True)
class SessionInfo:
    """Ties the batches of one push together (Meta's upload session). The runner persists it before
    each batch is sent, so a resumed push never reuses a sequence number."""

    session_id: int
    batch_seq: int
    last_batch: bool
    estimated_total: int


@dataclass
class PushResult:
    """Per-member outcome of one add or remove batch. Every member of the batch appears in exactly
    one of ``confirmed``, ``pending``, ``rejected``, ``retry`` or ``unverified``."""

    confirmed: list[bytes] = field(default_factory=list)
    pending: dict[str, list[bytes]] = field(default_factory=dict)
    """Handle (job or request id) to the members it carries, for ``follow``."""
    rejected: dict[bytes, str] = field(default_factory=dict)
    """Member to the platform's reason (no PII in it)."""
    retry: list[bytes] = field(default_factory=list)
    unverified: list[bytes] = field(default_factory=list)
    """Members of a batch the platform took while reporting ``reported_failures`` failures only as a
    count (Meta's ``num_invalid_entries`` beyond its <= 100 samples): which of them failed is unknown,
    so none of them may be called synced."""
    reported_failures: int = 0
    requests: int = 0
    """HTTP or RPC requests this batch took, retries included; for the benchmarks and the report."""
    detail: dict[str, object] = field(default_factory=dict)
    """Platform counters worth keeping (num_received, num_invalid_entries, ...)."""

    @classmethod
    def all_confirmed(cls, batch: Sequence[Change], requests: int = 1) -> PushResult:
        return cls(confirmed=[c.member_key for c in batch], requests=requests)


class HandleState(StrEnum):
    """Where a pending handle stands."""

    PENDING = "pending"
    """The platform is still working on it: followed again later."""
    CONFIRMED = "confirmed"
    """Done: its changes are on the platform (or, with ``rejected_count``, at risk)."""
    FAILED = "failed"
    """Not applied: its changes are queued again."""


@dataclass(frozen=True)
class HandleStatus:
    """What became of a pending handle."""

    state: str
    """A ``HandleState`` value."""
    rejected_count: int = 0
    detail: str = ""


@dataclass(frozen=True)
class PlatformStatus:
    """The platform's own view of an audience, for the lag report and the drift check."""

    size_lower: int | None = None
    size_upper: int | None = None
    state: str = ""
    """The platform's processing or validity state, in its own words."""
    ready: bool = False
    """True when the platform says its processing of our changes is done."""
    updated_at: float | None = None
    """Epoch seconds the platform last reports the audience's content changed, if it says."""
    detail: Mapping[str, object] = field(default_factory=dict)


class Connector(Protocol):
    """One ad platform's audience API. Construct one per destination."""

    def capabilities(self) -> Capabilities:
        """Limits and identifier kinds, as data."""
        ...

    def ensure_audience(self, spec: AudienceSpec) -> str:
        """Return the platform audience id for ``spec``: the known id, checked, or one found or
        created by name. Raise ``FatalError`` if it exists in a shape we cannot use (schema)."""
        ...

    def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        """Add ``batch`` (at most ``max_batch`` members) to the audience."""
        ...

    def remove(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        """Remove ``batch`` (exactly the identifiers that were added) from the audience."""
        ...

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, HandleStatus]:
        """Advance pending work (jobs, request ids) and say where each handle stands."""
        ...

    def read_back(self, audience_id: str) -> PlatformStatus:
        """The platform's size and processing state for the audience."""
        ...

    def refresh_due_seconds(self) -> float | None:
        """Seconds after which a synced member must be sent again to stay in the audience (a
        membership lifespan), or None when membership does not expire. The planner re-adds members
        last sent longer ago than this."""
        ...

    def close(self) -> None:
        """Release what the connector holds open (HTTP sessions, gRPC channels). The engine calls it
        once it is done with the connector, however its run ended; with nothing to release, it does
        nothing."""
        ...


def is_loopback(endpoint: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost, with or without a scheme and port."""
    host = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DestinationConfig:
    """One ad account (or folder, for ``file``). ``settings`` holds the validated platform keys with
    their defaults filled in; ``secrets`` the values read from the environment variables they name."""

    name: str
    platform: str
    settings: Mapping[str, Any]
    secrets: Mapping[str, str]
    name_prefix: str
    base_dir: Path

    @property
    def endpoint(self) -> str | None:
        value = self.settings.get("endpoint")
        return str(value) if value else None

    @property
    def is_emulated(self) -> bool:
        """True when the endpoint is on this machine's loopback: an emulator, never a real platform."""
        return self.endpoint is not None and is_loopback(self.endpoint)


@dataclass(frozen=True)
class PlatformSpec:
    """What the engine knows of a platform before it builds a connector: where its connector and
    emulator live (imported only when a destination uses them) and its identity profile. Each
    platform folder declares one as ``SPEC``; ``connectors.registry`` lists them."""

    name: str
    connector: str
    """``"module:Class"`` of the connector, built with the destination's ``DestinationConfig``."""
    emulator: str | None = None
    """Module of the platform's local emulator, for tests and the demo."""
    settings: SettingsSchema = field(default_factory=SettingsSchema)
    """The keys a destination of this platform takes, their defaults and checks."""
    identity: IdentityProfile | None = None
    """The normalization rule of each identifier kind it takes; None for ``file``, whose rows follow
    the platform its ``format`` names (``SettingsSchema.identity_from``)."""
    needs_account: bool = True
    """False for a destination that writes on this machine (``file``): it needs no platform account
    and no emulator, so the demo pushes to it as it is."""
