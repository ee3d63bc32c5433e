"""The configuration's records: what ``load_config`` (audiencesync.sync.config) returns once a file
has passed every check. Plain frozen dataclasses; the engine reads them and never the TOML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import DestinationConfig
from audiencesync.sync.sql_config import SqlSettings

STAGES = (
    "new_subscriber",
    "engaged_subscriber",
    "unengaged_subscriber",
    "new_customer",
    "active_customer",
    "vip",
    "lapsed_customer",
)
IN_FLOW_TAGS = ("welcome", "added_to_cart", "abandoned_checkout", "post_purchase")
MODES = ("mirror", "add_only")


@dataclass(frozen=True)
class SourceConfig:
    kind: str
    path: Path
    table: str
    id_column: str
    stage_column: str | None
    in_flow_column: str | None
    changed_at_column: str | None
    consent_column: str | None
    default_country: str | None
    identifiers: Mapping[str, str]
    """Identifier kind -> source column."""
    prehashed: frozenset[str]
    consent_granted_values: frozenset[str] = frozenset()
    """Extra consent values (lower case) that mean granted, beyond 1/true/yes/granted..."""
    consent_denied_values: frozenset[str] = frozenset()
    """Extra consent values (lower case) that mean denied, beyond 0/false/no/denied..."""
    sql: SqlSettings | None = None
    """For ``kind = "sql"``: where the database is and how to read it (audiencesync.sync.sql_source)."""
    incremental: IncrementalSettings | None = None
    """Plan from the rows changed since the last run (needs ``changed_at_column``); None: full plans."""


@dataclass(frozen=True)
class IncrementalSettings:
    """``[source] incremental = true``: read only rows whose ``changed_at_column`` is at or after the
    last committed plan's latest change time less ``margin_seconds`` (late commits, clock skew), and
    run a full reconciliation (which finds deleted rows) every ``full_every_seconds``."""

    margin_seconds: float = 300.0
    full_every_seconds: float = 86_400.0


@dataclass(frozen=True)
class AudienceConfig:
    """Who is in an audience: a SQL ``query``, or any of ``stage``, ``in_flow``, ``flag`` (a boolean
    column) and ``where`` (a SQL expression over the source's columns), all of which must hold."""

    name: str
    stage: str | None = None
    in_flow: str | None = None
    query: str | None = None
    description: str = ""
    flag: str | None = None
    where: str | None = None
    model: str | None = None
    """A dbt model whose relation (from the manifest) replaces ``[source] table`` for this audience."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Bound parameters of ``query`` (``:name`` in the SQL), for a ``sql`` source."""

    @property
    def is_in_flow(self) -> bool:
        return self.in_flow is not None


@dataclass(frozen=True)
class BreakerConfig:
    max_remove_share: float = 0.20
    max_remove_count: int | None = None


@dataclass(frozen=True)
class SyncConfig:
    audience: str
    destinations: tuple[str, ...]
    mode: str
    schedule: str
    max_lag_seconds: float | None
    breaker: BreakerConfig
    audience_ids: Mapping[str, str]


@dataclass(frozen=True)
class Target:
    """One audience on one destination: the unit that is planned, pushed and reported."""

    audience: AudienceConfig
    destination: DestinationConfig
    sync: SyncConfig

    @property
    def key(self) -> str:
        return f"{self.audience.name}@{self.destination.name}"

    @property
    def platform_audience_name(self) -> str:
        return f"{self.destination.name_prefix}{self.audience.name}"

    @property
    def pinned_audience_id(self) -> str | None:
        return self.sync.audience_ids.get(self.destination.name)


@dataclass(frozen=True)
class Config:
    path: Path
    state_path: Path
    source: SourceConfig
    audiences: Mapping[str, AudienceConfig]
    destinations: Mapping[str, DestinationConfig]
    syncs: tuple[SyncConfig, ...]
    lag_retention_days: int = 30
    alerts: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """``key.path: message`` lines that do not stop a run (an API version near its end date)."""

    def targets(self, only: str | None = None) -> list[Target]:
        """Every audience x destination pair, in config order. ``only`` keeps those whose audience,
        destination or target key equals it."""
        out: list[Target] = []
        for sync in self.syncs:
            for dest in sync.destinations:
                target = Target(self.audiences[sync.audience], self.destinations[dest], sync)
                if only in (None, target.key, sync.audience, dest):
                    out.append(target)
        return out
