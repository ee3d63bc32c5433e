"""Fixtures of the Google emulator tests: the shared emulator (tests/conftest.py) and Google's clients
pointed at it over plaintext gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from audiencesync.connectors.google.emulator import (
    GoogleEmulator,
)
from google.ads import datamanager_v1 as dm
from google.ads.datamanager_v1.services.ingestion_service.transports.grpc import IngestionServiceGrpcTransport
from google.ads.datamanager_v1.services.user_list_service.transports.grpc import UserListServiceGrpcTransport
from google.ads.googleads.client import GoogleAdsClient
from google.api_core import grpc_helpers
from google.auth.credentials import AnonymousCredentials


@pytest.fixture
def emu(google_emulator: GoogleEmulator) -> GoogleEmulator:
    """The shared fixture (tests/conftest.py), under the short name these tests use."""
    return google_emulator


@pytest.fixture
def channel(emu: GoogleEmulator) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(emu.endpoint)
    yield ch
    ch.close()


@pytest.fixture
def ads(emu: GoogleEmulator, monkeypatch: pytest.MonkeyPatch) -> GoogleAdsClient:
    """A GoogleAdsClient whose channels are plaintext: its interceptors (metadata, exceptions) stay."""

    def insecure(target: str, **kwargs: Any) -> grpc.Channel:
        return grpc.insecure_channel(target, options=kwargs.get("options"))

    monkeypatch.setattr(grpc_helpers, "create_channel", insecure)
    return GoogleAdsClient(
        credentials=AnonymousCredentials(),
        developer_token="dev-token",
        endpoint=emu.endpoint,
        login_customer_id="9876543210",
        use_proto_plus=True,
        version="v24",
    )


@pytest.fixture
def ingestion(channel: grpc.Channel) -> dm.IngestionServiceClient:
    return dm.IngestionServiceClient(transport=IngestionServiceGrpcTransport(channel=channel))


@pytest.fixture
def dm_lists(channel: grpc.Channel) -> dm.UserListServiceClient:
    return dm.UserListServiceClient(transport=UserListServiceGrpcTransport(channel=channel))
