"""Google Customer Match, on either of Google's two upload paths, behind one destination.

``backend = "data_manager"`` (the default) uses the Data Manager API (``google-ads-datamanager``);
``backend = "google_ads"`` uses the Google Ads API's OfflineUserDataJob (``google-ads``), which since
April 2026 only serves developer tokens that were already uploading. Both speak gRPC to the
destination's ``endpoint`` when one is set: a loopback endpoint (the emulator) gets a plaintext
channel and no credentials; anything else gets TLS and the configured credentials. Apart from the
channel, the code paths are the same.

This module is the connector itself; the backends live in
``datamanager`` and ``ads``, what they share in ``transport``, the pure request building in
``payload``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from audiencesync.connectors import contract
from audiencesync.connectors.audience_lookup import find_or_create
from audiencesync.connectors.errors import SchemaMismatch
from audiencesync.connectors.google.settings import SETTINGS
from audiencesync.connectors.google.transport import (
    Backend,
    Tuning,
    capabilities,
    refresh_seconds,
)
from audiencesync.connectors.retry import max_wait_seconds


class GoogleConnector:
    """One Google Ads account (``customer_id``), through the backend ``settings["backend"]`` names.

    The keyword arguments exist so tests can shrink waits: ``backoff_initial``/``backoff_max`` (retry
    backoff), ``timeout_seconds`` (each RPC's deadline), ``poll_interval`` and ``follow_wait_seconds``
    (how ``follow`` polls), ``sleep``.
    """

    def __init__(
        self,
        dest: contract.DestinationConfig,
        *,
        backoff_initial: float = 2.0,
        backoff_max: float = 120.0,
        timeout_seconds: float = 60.0,
        poll_interval: float = 5.0,
        follow_wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        tuning = Tuning(
            max_wait_seconds=max_wait_seconds(dest.settings),
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            timeout_seconds=timeout_seconds,
            poll_interval=poll_interval,
            follow_wait_seconds=follow_wait_seconds,
            sleep=sleep,
        )
        self.backend_name = str(SETTINGS.value(dest.settings, "backend"))
        self._settings = dest.settings
        self._backend: Backend
        if self.backend_name == "google_ads":
            from audiencesync.connectors.google.ads import GoogleAdsBackend

            self._backend = GoogleAdsBackend(dest, tuning)
        elif self.backend_name == "data_manager":
            from audiencesync.connectors.google.datamanager import DataManagerBackend

            self._backend = DataManagerBackend(dest, tuning)
        else:
            raise ValueError(f"unknown Google backend {self.backend_name!r}")

    def capabilities(self) -> contract.Capabilities:
        return capabilities()

    def ensure_audience(self, spec: contract.AudienceSpec) -> str:
        """The known list id (checked), else the list found by name, else a new Customer Match list."""
        backend = self._backend
        return find_or_create(
            spec,
            lookup=backend.list_by_id,
            find=backend.list_by_name,
            id_of=lambda user_list: str(user_list.id),
            create=lambda: backend.create_list(spec),
            check=self._check_kind,
        )

    def _check_kind(self, user_list: Any) -> None:
        problem = self._backend.unusable_kind(user_list)
        if problem:
            raise SchemaMismatch(
                f"user list {user_list.id} {problem}: use a new audience name or remove its id from "
                "audience_ids",
                code="upload_key_type",
            )

    def add(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        """Upload ``batch``; accepted members come back ``pending`` under a request id or job name."""
        return self._backend.push(audience_id, batch, remove=False) if batch else contract.PushResult()

    def remove(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        """Remove ``batch``; like ``add``, confirmed later through ``follow``."""
        return self._backend.push(audience_id, batch, remove=True) if batch else contract.PushResult()

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]:
        """Where each request id (Data Manager) or job (Google Ads) stands."""
        return self._backend.follow(audience_id, handles)

    def read_back(self, audience_id: str) -> contract.PlatformStatus:
        """List size, match rate and the last request's or job's state."""
        return self._backend.read_back(audience_id)

    def refresh_due_seconds(self) -> float:
        """Both backends' lists have a membership lifespan (Ads ``membership_life_span``, Data Manager
        ``membership_duration``), so members are re-added before it runs out."""
        return refresh_seconds(self._settings)

    def close(self) -> None:
        """Close the gRPC channel."""
        self._backend.close()
