"""The Meta emulator's store: custom audiences with their members, upload sessions and size history,
behind one lock. A member is a row: the tuple of values in schema order."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Session:
    last_seq: int = 0
    finished: bool = False


@dataclass
class _Audience:
    id: str
    account: str
    name: str
    description: str
    customer_file_source: str
    schema: list[str] | None = None
    members: set[tuple[str, ...]] = field(default_factory=set)
    sessions: dict[int, _Session] = field(default_factory=dict)
    # (time of change, size after it): the visible size lags behind by processing_seconds.
    history: list[tuple[float, int]] = field(default_factory=list)


class MetaStore:
    """Every audience by id. Callers hold ``lock`` while they read or change one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.audiences: dict[str, _Audience] = {}
        self._ids = itertools.count(23840000000000001)

    def new_audience(self, account: str, name: str, description: str, customer_file_source: str) -> str:
        audience_id = str(next(self._ids))
        self.audiences[audience_id] = _Audience(audience_id, account, name, description, customer_file_source)
        return audience_id

    def reset(self) -> None:
        with self.lock:
            self.audiences.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "audiences": [
                    {
                        "id": a.id,
                        "name": a.name,
                        "schema": a.schema,
                        "members": sorted(list(m) for m in a.members),
                    }
                    for a in self.audiences.values()
                ]
            }

    def members(self, audience_id: str) -> set[tuple[str, ...]]:
        with self.lock:
            return set(self.audiences[audience_id].members)
