"""The Google emulator's store: user lists, Ads jobs and Data Manager requests, behind one lock."""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Requests and jobs kept for the state view; the oldest settled ones go first.
MAX_KEPT = 10_000
MAX_LIFE_SPAN_DAYS = 540
"""Longest membership of a CRM-based list, in both APIs (google-ads user_list.py,
membership_life_span; Data Manager membership_duration)."""
CUSTOMER_ID = re.compile(r"\d{10}")
"""A Google Ads customer id: 10 digits, no dashes."""
HEX64 = re.compile(r"[0-9a-f]{64}")
"""A hex SHA-256 as Google takes it, lowercase (Data Manager formatting guide, encoding HEX)."""


# --- the store ------------------------------------------------------------------------------------


@dataclass
class _UserList:
    id: int
    customer_id: str
    name: str
    description: str
    life_span_days: int
    members: set[frozenset[str]] = field(default_factory=set)

    @property
    def ads_name(self) -> str:
        return f"customers/{self.customer_id}/userLists/{self.id}"

    @property
    def dm_name(self) -> str:
        return f"accountTypes/GOOGLE_ADS/accounts/{self.customer_id}/userLists/{self.id}"


@dataclass
class _Job:
    id: int
    customer_id: str
    user_list_id: int
    consent: dict[str, str]
    # ("create" | "remove", person) or ("remove_all", frozenset()), in the order received.
    operations: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    kind: str | None = None
    """``create`` or ``remove`` once the job holds one: the other kind is then a conflict."""
    ran_at: float | None = None
    processing_seconds: float = 0.0
    fail: bool = False
    status: str = "PENDING"
    counts: Counter[str] = field(default_factory=Counter)
    busy: bool = False
    """True while an AddOfflineUserDataJobOperations request on this job is being validated."""

    @property
    def resource_name(self) -> str:
        return f"customers/{self.customer_id}/offlineUserDataJobs/{self.id}"

    @property
    def settled(self) -> bool:
        return self.status in ("SUCCESS", "FAILED")


@dataclass
class _Delivery:
    """What one Data Manager request does to one destination list."""

    destination: Any
    """The request's ``Destination`` message, echoed in the request status."""
    user_list_id: int
    persons: list[frozenset[str]] = field(default_factory=list)
    records: int = 0
    identifiers: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class _DmRequest:
    request_id: str
    kind: str
    """``ingest`` or ``remove``."""
    deliveries: list[_Delivery]
    at: float
    processing_seconds: float
    members: int
    settled: bool = False


class _Store:
    """Lists, jobs and requests of both APIs. Every method expects the caller to hold ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        self.lists: dict[int, _UserList] = {}
        self.jobs: dict[int, _Job] = {}
        self.requests: dict[str, _DmRequest] = {}
        self.list_ids = itertools.count(9_000_000_001)
        self.job_ids = itertools.count(7_000_000_001)
        self.request_ids = itertools.count(1)
        self.quota_window: deque[float] = deque()

    def settle(self, now: float) -> None:
        """Advance every job and request whose time has come; apply their membership changes."""
        for job in self.jobs.values():
            if job.ran_at is None or job.settled:
                continue
            elapsed = now - job.ran_at
            if elapsed >= job.processing_seconds:
                job.status = "FAILED" if job.fail else "SUCCESS"
                if not job.fail and (target := self.lists.get(job.user_list_id)) is not None:
                    _apply_job(target, job.operations)
                job.operations = []  # applied or dropped: keep only the counts
            elif elapsed >= job.processing_seconds / 2:
                job.status = "RUNNING"
            else:
                job.status = "PENDING"
        for req in self.requests.values():
            if req.settled or now - req.at < req.processing_seconds:
                continue
            req.settled = True
            for delivery in req.deliveries:
                target = self.lists.get(delivery.user_list_id)
                if target is None:
                    continue
                if req.kind == "ingest":
                    target.members.update(delivery.persons)
                else:
                    target.members.difference_update(delivery.persons)
                delivery.persons = []
        self._trim()

    def _trim(self) -> None:
        # Bounded memory for long demo runs: drop the oldest settled jobs and requests.
        if len(self.requests) > MAX_KEPT:
            for rid in [r.request_id for r in self.requests.values() if r.settled][
                : len(self.requests) - MAX_KEPT
            ]:
                del self.requests[rid]
        if len(self.jobs) > MAX_KEPT:
            for jid in [j.id for j in self.jobs.values() if j.settled][: len(self.jobs) - MAX_KEPT]:
                del self.jobs[jid]

    def list_named(self, customer_id: str, name: str) -> _UserList | None:
        return next((x for x in self.lists.values() if x.customer_id == customer_id and x.name == name), None)


def _apply_job(target: _UserList, operations: list[tuple[str, frozenset[str]]]) -> None:
    for kind, person in operations:
        if kind == "remove_all":
            target.members.clear()
        elif kind == "create":
            target.members.add(person)
        else:
            target.members.discard(person)


def rejected_values(values: Iterable[str] | None) -> frozenset[str]:
    """The ``reject_identifiers`` switch as a set of hashes or ``"kind:value"`` entries."""
    return frozenset(str(v) for v in values or ())


def is_rejected(entry: str, rejected: frozenset[str]) -> bool:
    """Whether the ``"kind:value"`` ``entry`` is one the ``reject_identifiers`` switch names."""
    return bool(rejected) and (entry in rejected or entry.split(":", 1)[1] in rejected)
