"""The account, members and destinations the Google connector tests share."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import Change, DestinationConfig
from audiencesync.connectors.google.connector import GoogleConnector
from google.ads import datamanager_v1 as dm
from google.protobuf.json_format import MessageToDict

CUSTOMER = "1234567890"
LOGIN = "9876543210"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def change(i: int, consent: bool | None = True, *, address: bool = True, phone: bool = True) -> Change:
    ids = {"email": h(f"user{i}@example.com")}
    if phone:
        ids["phone"] = h(f"+1555{i:07d}")
    if address:
        ids.update(first_name=h(f"first{i}"), last_name=h(f"last{i}"), country="US", zip=f"{10000 + i}")
    return Change(member_key=f"m{i}".encode(), identifiers=ids, consent=consent)


def as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(type(message).pb(message), preserving_proto_field_name=True)


def destination(backend: str, **extra: object) -> DestinationConfig:
    settings = {
        "platform": "google",
        "backend": backend,
        "customer_id": CUSTOMER,
        "login_customer_id": LOGIN,
        "endpoint": "127.0.0.1:9",  # loopback: a plaintext channel that is never dialled here
        "max_wait_seconds": 1,
        "membership_life_span_days": 540,
        "refresh_margin_days": 30,
        "accept_customer_match_terms": True,
        **extra,
    }
    return DestinationConfig("google_main", "google", settings, {}, "audience-sync: ", Path("."))


def connector(backend: str, **extra: object) -> GoogleConnector:
    return GoogleConnector(destination(backend, **extra), backoff_initial=0.001, backoff_max=0.002)


JOB = "customers/1234567890/offlineUserDataJobs/77"
"""A Google Ads job handle."""


def dm_status(*states: str, errors: int = 0) -> dm.RetrieveRequestStatusResponse:
    rs = dm.RequestStatusPerDestination
    return dm.RetrieveRequestStatusResponse(
        request_status_per_destination=[
            rs(
                request_status=getattr(rs.RequestStatus, s),
                error_info=dm.ErrorInfo(
                    error_counts=[dm.ErrorCount(record_count=errors, reason=dm.ProcessingErrorReason(1))]
                )
                if errors
                else None,
            )
            for s in states
        ]
    )
