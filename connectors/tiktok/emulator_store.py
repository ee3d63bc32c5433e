"""The TikTok emulator's store: audiences, uploaded files and the request-id counter, behind one lock.
A member is the tuple of ids of one person in ``id_schema`` order (``None`` for a missing one)."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from audiencesync.connectors.emulation.http import FaultSwitches

Member = tuple[str | None, ...]


class ApiError(Exception):
    """An answer with a non-zero code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Audience:
    audience_id: str
    advertiser_id: str
    name: str
    kind: str
    """``segment`` (streamed ids) or ``file``."""
    calculate_type: str
    created: float
    members: dict[Member, bool] = field(default_factory=dict)
    """Member -> whether it matches a TikTok user."""
    id_schema: list[str] = field(default_factory=list)
    cover_num: int = 0
    changed_at: float | None = None
    """When the last change that cover_num does not reflect yet happened."""


@dataclass
class UploadedFile:
    calculate_type: str
    schema: list[str]
    rows: list[Member]


def is_unmatched(member: Member, rate: float) -> bool:
    """Whether ``member`` matches no TikTok user at ``rate``: a pure function of its ids."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(json.dumps(member).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


class TikTokState:
    """Audiences, uploaded files and the request-id counter, behind one lock."""

    def __init__(self, faults: FaultSwitches, advertisers: Iterable[str]) -> None:
        self.faults = faults
        self.advertisers = frozenset(advertisers)
        self.lock = threading.Lock()
        self.audiences: dict[str, Audience] = {}
        self.files: dict[str, UploadedFile] = {}
        self._ids = itertools.count(7_100_000_000_000_000_001)
        self._files = itertools.count(1)
        self._requests = itertools.count(1)

    def reset(self) -> None:
        with self.lock:
            self.audiences.clear()
            self.files.clear()

    def new_file_path(self, advertiser_id: str) -> str:
        return f"{advertiser_id}/emulator/{next(self._files)}.csv"

    def request_id(self) -> str:
        return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}EMU{next(self._requests):08d}"

    # --- helpers -------------------------------------------------------------------------------
    def check_advertiser(self, advertiser_id: Any) -> str:
        # tiktok_code.py: 40007 NOT_EXIST for an advertiser the token cannot reach (the code for this
        # case is the connector's reading; TikTok's table also lists 40300 ADVERTISER_NOT_EXIST).
        if str(advertiser_id) not in self.advertisers:
            raise ApiError(40007, "Advertiser does not exist or you have no access to it")
        return str(advertiser_id)

    def audience(self, advertiser_id: str, audience_id: Any) -> Audience:
        # tiktok_code.py: 40007 NOT_EXIST for a deleted or unknown audience.
        found = self.audiences.get(str(audience_id))
        if found is None or found.advertiser_id != advertiser_id:
            raise ApiError(40007, "Custom audience does not exist or was deleted")
        return found

    def new_audience(self, advertiser_id: str, name: str, kind: str, calculate_type: str) -> Audience:
        audience = Audience(str(next(self._ids)), advertiser_id, name, kind, calculate_type, time.time())
        self.audiences[audience.audience_id] = audience
        return audience

    def changed(self, audience: Audience) -> None:
        audience.changed_at = time.monotonic()

    def settle(self, audience: Audience) -> None:
        """Recalculate cover_num once the recalculation delay has passed since the last change."""
        if audience.changed_at is None:
            return
        if time.monotonic() - audience.changed_at >= float(self.faults["recalc_delay_seconds"]):
            audience.cover_num = sum(1 for matched in audience.members.values() if matched)
            audience.changed_at = None

    def describe(self, audience: Audience) -> dict[str, Any]:
        self.settle(audience)
        return {
            "audience_id": audience.audience_id,
            "name": audience.name,
            "cover_num": audience.cover_num,
            "is_valid": audience.changed_at is None,
            "is_expiring": False,
            "expired_time": None,
            "calculate_type": audience.calculate_type,
            "audience_type": "Customer File" if audience.kind == "file" else "Segment",
            "create_time": int(audience.created),
            "is_creator": True,
        }

    def add_members(self, audience: Audience, members: Iterable[Member]) -> None:
        rate = float(self.faults["reject_id_rate"] or 0.0)
        for member in members:
            audience.members[member] = not is_unmatched(member, rate)
        self.changed(audience)

    def remove_members(self, audience: Audience, members: Iterable[Member]) -> None:
        for member in members:
            audience.members.pop(member, None)
        self.changed(audience)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "audiences": [
                    {
                        "id": a.audience_id,
                        "name": a.name,
                        "advertiser_id": a.advertiser_id,
                        "kind": a.kind,
                        "id_schema": a.id_schema,
                        "members": [list(m) for m in a.members],
                        "unmatched": sum(1 for matched in a.members.values() if not matched),
                        "cover_num": self.describe(a)["cover_num"],
                    }
                    for a in self.audiences.values()
                ],
                "files": len(self.files),
            }
