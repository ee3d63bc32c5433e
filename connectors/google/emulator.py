"""A local stand-in for Google's Customer Match APIs: one plaintext gRPC server serving both the Google
Ads API (every version in ADS_VERSIONS, v23..v26, each under its own service names) and the Data
Manager API v1, over one shared store of user lists, plus the HTTP admin
surface every emulator has (on a second port, through ``emulators.http``).

gRPC methods served on 127.0.0.1:``port`` (the real services' wire names and messages):
    /google.ads.googleads.vNN.services.UserListService/MutateUserLists
        create (CRM-based, CONTACT_INFO, membership_life_span <= 540 days, default 540) and remove
    /google.ads.googleads.vNN.services.OfflineUserDataJobService/CreateOfflineUserDataJob
    /google.ads.googleads.vNN.services.OfflineUserDataJobService/AddOfflineUserDataJobOperations
    /google.ads.googleads.vNN.services.OfflineUserDataJobService/RunOfflineUserDataJob
    /google.ads.googleads.vNN.services.GoogleAdsService/Search
    /google.ads.googleads.vNN.services.GoogleAdsService/SearchStream
        a small GAQL subset: SELECT fields FROM user_list | offline_user_data_job
        [WHERE f = v AND f != v AND f IN (...) AND f LIKE '%x%'] [ORDER BY f [ASC|DESC]] [LIMIT n]
    /google.longrunning.Operations/GetOperation   the operation RunOfflineUserDataJob returns
    /google.ads.datamanager.v1.IngestionService/IngestAudienceMembers
    /google.ads.datamanager.v1.IngestionService/RemoveAudienceMembers
    /google.ads.datamanager.v1.IngestionService/RetrieveRequestStatus
    /google.ads.datamanager.v1.UserListService/CreateUserList
    /google.ads.datamanager.v1.UserListService/GetUserList
    /google.ads.datamanager.v1.UserListService/ListUserLists   (filter: display_name = "...")
    /google.ads.datamanager.v1.UserListService/UpdateUserList  (display_name, description,
                                                                 membership_duration)

One store behind both APIs: a list created through either is visible through both, as
``customers/{cid}/userLists/{id}`` (Ads) and ``accountTypes/GOOGLE_ADS/accounts/{cid}/userLists/{id}``
(Data Manager). Membership is a set of persons; a person is the frozenset of its identifiers as
``"kind:value"`` strings with the project's kinds: ``email``, ``phone``, ``first_name``, ``last_name``
(SHA-256, 64 lowercase hex), ``zip`` and ``country`` (raw). A remove takes out the person whose
identifier set equals the one sent.

Sizes and match rate: ``size_for_search``/``size_for_display`` (Ads) and ``size_info`` (Data Manager)
are the exact number of persons in the list, so tests can compare them with the source; the match
rate is a fixed share, the ``match_rate_percentage`` switch (default 70), and 0 for an empty list.
The same switch gives the bucket of a settled Data Manager ingest (``upload_match_rate_range``) and
of a successful Ads job (``offline_user_data_job.operation_metadata.match_rate_range``: UNKNOWN
before SUCCESS and for a job of removes only, LESS_THAN_20 for a job that applied no operation).

Google Ads API errors come back as Google sends them: a gRPC status with trailing metadata
``google.ads.googleads.<the called version>.errors.googleadsfailure-bin`` (a serialized ``GoogleAdsFailure``) and
``request-id``, so the google-ads client raises ``GoogleAdsException``. Status codes: INVALID_ARGUMENT
for request errors, UNAUTHENTICATED for the developer token, PERMISSION_DENIED for not-allowlisted,
ABORTED for CONCURRENT_MODIFICATION, RESOURCE_EXHAUSTED for quota errors (the client leaves
RESOURCE_EXHAUSTED and INTERNAL unwrapped: those arrive as ``google.api_core.exceptions.
ResourceExhausted``, with the failure still in the trailing metadata). Developer token: any non-empty
``developer-token`` metadata (missing: RequestError.DEVELOPER_TOKEN_PARAMETER_MISSING); a
``login-customer-id`` must be 10 digits. Validation follows Google: 64-lowercase-hex hashes, country
code two letters and postal code raw (address_info needs all four parts), at most 20 identifiers per
UserData and 100,000 operations per request, creates and removes not mixed in one job
(CONFLICTING_OPERATION), ``remove_all`` only first (INVALID_OPERATION_ORDER), consent on the job only
(OPERATION_LEVEL_CONSENT_PROVIDED), DENIED job consent refused (FieldError.INVALID_VALUE), operations
after Run refused (JOB_ALREADY_STARTED), two AddOperations on one job at once refused
(CONCURRENT_MODIFICATION). Without ``enable_partial_failure`` one bad operation fails the request; with
it, ``partial_failure_error`` holds a GoogleAdsFailure per bad operation, located at
``operations[i]``, and the rest are kept.

Data Manager errors are gRPC statuses whose message starts with the field path (never the values),
e.g. ``audience_members[3].user_data.user_identifiers[0].email_address: ...``; their details hold an
``ErrorInfo`` (reason: a Data Manager ``ErrorReason`` such as INVALID_SHA256_FORMAT or
TOO_MANY_USER_IDENTIFIERS) and a ``BadRequest`` field violation with that path. Requests fail whole:
at most 10 destinations, 10,000 members, 10 identifiers per member. Consent is per request and per
member (the member's wins); a member whose effective consent denies either purpose is not applied and
is counted as PROCESSING_ERROR_REASON_DENIED_CONSENT in the request status.

Job lifecycle (Ads): created PENDING; after Run it reads PENDING for the first half of
``processing_seconds``, RUNNING for the second half, then SUCCESS (membership applied then) or FAILED
(``job_fail_rate``; nothing applied). Data Manager requests read PROCESSING until ``processing_seconds``
after the request, then SUCCESS, PARTIAL_SUCCESS or FAILED (membership applied then). State advances
lazily, whenever anything observes it (an RPC, ``members``, ``snapshot``).

Fault switches (``POST /_emulator/faults`` with a JSON object, or keyword arguments to
``start_emulator``; rates are per RPC, drawn from a seeded generator, ``"seed"`` resets it):
    not_allowlisted                      Ads OfflineUserDataJobService and MutateUserLists answer
                                         NotAllowlistedError.CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE
    concurrent_modification_rate         Ads AddOfflineUserDataJobOperations / RunOfflineUserDataJob
                                         answer DatabaseError.CONCURRENT_MODIFICATION (ABORTED)
    resource_temporarily_exhausted_rate  any Ads RPC answers QuotaError.RESOURCE_TEMPORARILY_EXHAUSTED
    resource_exhausted_rate              any RPC of either API: plain RESOURCE_EXHAUSTED
    internal_rate                        any RPC of either API: plain INTERNAL
    unavailable_rate                     any RPC of either API: plain UNAVAILABLE
    slow_rate, slow_seconds              sleep slow_seconds (default 2.0) before answering; a reset
                                         or stop cuts the sleep short and the RPC ends CANCELLED
    reject_identifiers                   identifier values (a hash, or "kind:value") treated as invalid:
                                         an Ads per-operation error (partial failure when enabled), a
                                         Data Manager whole-request INVALID_ARGUMENT
    processing_seconds                   job and request processing delay (default 0)
    job_fail_rate                        a job that is run ends FAILED
    partial_success_rate                 a Data Manager request ends PARTIAL_SUCCESS: its last
                                         max(1, n // 10) members per destination are not applied and
                                         are counted as PROCESSING_ERROR_REASON_INVALID_FORMAT
    lost_answer_rate                     a member upload is applied, then answered UNAVAILABLE
    quota_per_minute                     Data Manager RPCs (all of them) over a sliding minute before
                                         RESOURCE_EXHAUSTED (default 300)
    expected_developer_token             the only developer token accepted (None: any non-empty one)
    match_rate_percentage                the match rate reported for non-empty lists (default 70)

Sources of the rules enforced (rules with none are listed under "Assumptions" in docs/setup-google.md):
- Data Manager limits (10 destinations, 10,000 members, 10 identifiers) and the ErrorReason names:
  developers.google.com/data-manager/api/devguides/limits and .../reference/rest/v1/ErrorReason (the
  same enum in google-ads-datamanager, google/ads/datamanager_v1/types/error.py).
- Data Manager terms of service ACCEPTED on ingest: datamanager_v1/types/terms_of_service.py.
- Data Manager error shape (fast-fail, ErrorInfo, RequestInfo, BadRequest paths):
  developers.google.com/data-manager/api/devguides/concepts/understand-errors; consent, member wins:
  .../reference/rest/v1/audienceMembers/ingest; quotas (300 a minute): .../devguides/limits.
- Ads error codes, enum names and failure transport: google-ads google/ads/googleads/vNN/errors/types/
  (e.g. offline_user_data_job_error.py: CONFLICTING_OPERATION, INVALID_OPERATION_ORDER,
  JOB_ALREADY_STARTED) and google/ads/googleads/interceptors/exception_interceptor.py (the
  googleadsfailure-bin key); NOT_ALLOWLISTED: the Ads blog post of March 2026 on Customer Match.
- Ads limits (540-day life span, 20 identifiers, 100,000 operations): user_list.py (membership_life_span)
  and Google's Customer Match guide (an assumption where no page is pinned).
- Hash format (64 lowercase hex) and raw country/postal code: Data Manager formatting guide
  (.../devguides/concepts/formatting).

``serve`` runs until Ctrl-C or SIGTERM.

Admin surface (HTTP, ``admin_port``): ``GET /_emulator/state``, ``POST /_emulator/faults``,
``POST /_emulator/reset``; every other path is a 404. The state is::

    {"audiences": [{"id", "name", "description", "customer_id", "resource_name", "data_manager_name",
                    "membership_life_span", "size", "members": [sorted ["kind:value", ...]]}],
     "jobs": [{"resource_name", "id", "customer_id", "user_list", "status", "failure_reason",
               "consent": {"ad_user_data", "ad_personalization"}, "operations", "creates", "removes",
               "remove_all"}],
     "requests": [{"request_id", "kind", "user_lists", "members", "status", "errors"}],
     "calls": {method: count}, "faults": {...}}
"""

from __future__ import annotations

import itertools
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from audiencesync.connectors.emulation.http import EmulatorServer, FaultSwitches, Request, Response
from audiencesync.connectors.google.emulator_errors import (
    _Abort,
    _AdsFailure,
    _concurrent_modification,
    _fail,
    _partial_failure_status,
    _Path,
)

# Re-exported: the public names this module has always offered.
from audiencesync.connectors.google.emulator_errors import ads_error as ads_error
from audiencesync.connectors.google.emulator_gaql import (
    _ads_job_fields,
    _ads_list_fields,
    _literal,
    _match_bucket,
    _nest,
    _parse_gaql,
)
from audiencesync.connectors.google.emulator_store import MAX_KEPT as MAX_KEPT
from audiencesync.connectors.google.emulator_store import (
    _Delivery,
    _DmRequest,
    _Job,
    _Store,
    _UserList,
)
from audiencesync.connectors.versions import VERSIONS
from google.ads.datamanager_v1.types import consent as dm_consent
from google.ads.datamanager_v1.types import ingestion_service as dm_ingestion
from google.ads.datamanager_v1.types import match_rate as dm_match_rate
from google.ads.datamanager_v1.types import processing_errors as dm_errors
from google.ads.datamanager_v1.types import request_status_per_destination as dm_status
from google.ads.datamanager_v1.types import user_list as dm_user_list
from google.ads.datamanager_v1.types import user_list_service as dm_user_list_service
from google.ads.googleads.v24.errors.types import errors as ads_errors
from google.ads.googleads.v24.services.types import google_ads_service as ads_search
from google.ads.googleads.v24.services.types import offline_user_data_job_service as ads_job_service
from google.ads.googleads.v24.services.types import user_list_service as ads_user_list_service
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

ADS_VERSION = "v24"
"""The version whose generated types the emulator reads and writes with."""
ADS_VERSIONS = tuple(VERSIONS["google_ads"])
"""Every Google Ads API version served, on its own service names: those google-ads 34.x ships (v23..v26).
Their messages used here keep the same field numbers (google/ads/googleads/vNN protos), so one
version's types read and write them all."""
FAILURE_METADATA_KEY = f"google.ads.googleads.{ADS_VERSION}.errors.googleadsfailure-bin"
"""Trailing metadata key the google-ads client of ADS_VERSION reads the ``GoogleAdsFailure`` from."""


def failure_metadata_key(version: str) -> str:
    """Where the google-ads client of ``version`` reads a failure (google/ads/googleads/interceptors/
    exception_interceptor.py builds the key from its version)."""
    return f"google.ads.googleads.{version}.errors.googleadsfailure-bin"


REQUEST_ID_METADATA_KEY = "request-id"

MAX_LIFE_SPAN_DAYS = 540
MAX_ADS_IDENTIFIERS = 20
MAX_ADS_OPERATIONS = 100_000
MAX_DM_MEMBERS = 10_000
MAX_DM_IDENTIFIERS = 10
MAX_DM_DESTINATIONS = 10

DEFAULT_FAULTS: dict[str, Any] = {
    "not_allowlisted": False,
    "concurrent_modification_rate": 0.0,
    "resource_temporarily_exhausted_rate": 0.0,
    "resource_exhausted_rate": 0.0,
    "internal_rate": 0.0,
    "unavailable_rate": 0.0,
    "slow_rate": 0.0,
    "slow_seconds": 2.0,
    "reject_identifiers": [],
    "processing_seconds": 0.0,
    "job_fail_rate": 0.0,
    "partial_success_rate": 0.0,
    # Share of member uploads (ingest, remove, AddOfflineUserDataJobOperations) applied and then
    # answered UNAVAILABLE, as when the answer is lost on the way back.
    "lost_answer_rate": 0.0,
    "quota_per_minute": 300,
    "expected_developer_token": None,
    "match_rate_percentage": 70,
}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CUSTOMER_ID = re.compile(r"\d{10}")
_ADS_LIST_NAME = re.compile(r"customers/(\d+)/userLists/(\d+)")
_ADS_JOB_NAME = re.compile(r"customers/(\d+)/offlineUserDataJobs/(\d+)")
_ADS_OPERATION_NAME = re.compile(r"customers/(\d+)/operations/(\d+)")
_DM_ACCOUNT = re.compile(r"accountTypes/([A-Z_]+)/accounts/(\d+)")
_DM_LIST_NAME = re.compile(r"accountTypes/([A-Z_]+)/accounts/(\d+)/userLists/(\d+)")

_DM_SERVICES = "google.ads.datamanager.v1"

# Ads RPCs the not_allowlisted switch refuses: Customer Match uploads and list mutates.
_ALLOWLISTED_METHODS = frozenset(
    {
        "MutateUserLists",
        "CreateOfflineUserDataJob",
        "AddOfflineUserDataJobOperations",
        "RunOfflineUserDataJob",
    }
)
_CONCURRENT_METHODS = frozenset({"AddOfflineUserDataJobOperations", "RunOfflineUserDataJob"})
_LOST_ANSWER_METHODS = frozenset(
    {"IngestAudienceMembers", "RemoveAudienceMembers", "AddOfflineUserDataJobOperations"}
)


# --- the emulator -------------------------------------------------------------------------------------


@dataclass
class _Call:
    """One RPC as the handlers see it."""

    method: str
    request_id: str
    metadata: dict[str, str]


class GoogleEmulator:
    """Both Google APIs on one gRPC port, the admin surface on another. Build with ``start_emulator``."""

    def __init__(self, port: int = 0, admin_port: int = 0, **faults: Any) -> None:
        self.faults = FaultSwitches(DEFAULT_FAULTS)
        if faults:
            self.faults.set(faults)
        self.calls: Counter[str] = Counter()
        """RPCs received per method name (``MutateUserLists``, ``IngestAudienceMembers``...), failed
        ones included; for request-efficiency tests and benchmarks."""
        self._store = _Store()
        self._wake = threading.Event()
        """Set to wake RPCs sleeping on ``slow_seconds``: by ``stop``, and by a reset (which then
        installs a fresh one)."""
        self._ads_request_ids = itertools.count(1)
        self._executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="google-emulator")
        self._grpc = grpc.server(
            self._executor,
            options=[
                # 100,000 Ads operations or 10,000 Data Manager members exceed gRPC's 4 MB default.
                ("grpc.max_receive_message_length", 128 * 1024 * 1024),
                ("grpc.max_send_message_length", 128 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._grpc.add_generic_rpc_handlers(self._handlers())
        self.port: int = self._grpc.add_insecure_port(f"127.0.0.1:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on 127.0.0.1:{port}")
        self.admin = EmulatorServer(_not_found, self.snapshot, self._clear, self.faults, admin_port)
        self._started = False

    # --- public surface ---

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``: the ``endpoint`` a destination points at."""
        return f"127.0.0.1:{self.port}"

    @property
    def admin_port(self) -> int:
        return self.admin.port

    @property
    def admin_url(self) -> str:
        return self.admin.url

    def start(self) -> GoogleEmulator:
        self._grpc.start()
        # EmulatorServer.start serves with socketserver's default 0.5 s poll interval, which stop() then
        # waits out; a short one keeps the teardown of every test fast. Same thread, same shutdown path.
        admin = self.admin
        admin._thread = threading.Thread(
            target=admin._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="google-emulator-admin",
            daemon=True,
        )
        admin._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop both servers; RPCs sleeping on ``slow_seconds`` are woken and cancelled."""
        self._wake.set()
        self._grpc.stop(grace=0).wait(5)
        if self._started:
            self.admin.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> GoogleEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until the gRPC server stops."""
        self._grpc.wait_for_termination()

    def reset(self) -> None:
        """Empty every list, job and request, clear the call counts, and reset the fault switches."""
        self._clear()
        self.faults.reset()

    def members(self, list_id: str) -> set[frozenset[str]]:
        """The persons in list ``list_id`` (its numeric id), each a frozenset of ``"kind:value"``."""
        with self._store.lock:
            self._store.settle(time.monotonic())
            return set(self._store.lists[int(list_id)].members)

    def snapshot(self) -> dict[str, Any]:
        """The state JSON of ``GET /_emulator/state`` (shape in the module docstring)."""
        with self._store.lock:
            store = self._store
            store.settle(time.monotonic())
            return {
                "audiences": [
                    {
                        "id": str(x.id),
                        "name": x.name,
                        "description": x.description,
                        "customer_id": x.customer_id,
                        "resource_name": x.ads_name,
                        "data_manager_name": x.dm_name,
                        "membership_life_span": x.life_span_days,
                        "size": len(x.members),
                        "members": sorted(sorted(person) for person in x.members),
                    }
                    for x in store.lists.values()
                ],
                "jobs": [
                    {
                        "resource_name": j.resource_name,
                        "id": str(j.id),
                        "customer_id": j.customer_id,
                        "user_list": f"customers/{j.customer_id}/userLists/{j.user_list_id}",
                        "status": j.status,
                        "failure_reason": "UNKNOWN" if j.status == "FAILED" else "UNSPECIFIED",
                        "consent": dict(j.consent),
                        "operations": sum(j.counts.values()),
                        "creates": j.counts["create"],
                        "removes": j.counts["remove"],
                        "remove_all": j.counts["remove_all"] > 0,
                    }
                    for j in store.jobs.values()
                ],
                "requests": [
                    {
                        "request_id": r.request_id,
                        "kind": r.kind,
                        "user_lists": [str(d.user_list_id) for d in r.deliveries],
                        "members": r.members,
                        "status": _dm_request_status(r, r.deliveries[0]) if r.deliveries else "SUCCESS",
                        "errors": sum(sum(d.errors.values()) for d in r.deliveries),
                    }
                    for r in store.requests.values()
                ],
                "calls": dict(self.calls),
                "faults": self.faults.as_dict(),
            }

    def _clear(self) -> None:
        with self._store.lock:
            self._store.clear()
            self.calls.clear()
            # An RPC still sleeping on slow_seconds belongs to whoever used the emulator before the
            # reset (a client that gave up on it): woken now, it ends CANCELLED instead of acting on
            # the emptied store later.
            woken, self._wake = self._wake, threading.Event()
            woken.set()

    # --- dispatch ---

    def _handlers(self) -> list[Any]:
        # (api, service, method, implementation, request type, response serializer, server-streaming)
        table: list[tuple[str, str, str, Callable[[Any, _Call], Any], Any, Callable[[Any], bytes], bool]] = [
            ("ads", "UserListService", "MutateUserLists", self._mutate_user_lists,
             ads_user_list_service.MutateUserListsRequest.deserialize,
             ads_user_list_service.MutateUserListsResponse.serialize, False),
            ("ads", "OfflineUserDataJobService", "CreateOfflineUserDataJob", self._create_job,
             ads_job_service.CreateOfflineUserDataJobRequest.deserialize,
             ads_job_service.CreateOfflineUserDataJobResponse.serialize, False),
            ("ads", "OfflineUserDataJobService", "AddOfflineUserDataJobOperations", self._add_operations,
             ads_job_service.AddOfflineUserDataJobOperationsRequest.deserialize,
             ads_job_service.AddOfflineUserDataJobOperationsResponse.serialize, False),
            ("ads", "OfflineUserDataJobService", "RunOfflineUserDataJob", self._run_job,
             ads_job_service.RunOfflineUserDataJobRequest.deserialize,
             operations_pb2.Operation.SerializeToString, False),
            ("ads", "GoogleAdsService", "Search", self._search,
             ads_search.SearchGoogleAdsRequest.deserialize,
             ads_search.SearchGoogleAdsResponse.serialize, False),
            ("ads", "GoogleAdsService", "SearchStream", self._search_stream,
             ads_search.SearchGoogleAdsStreamRequest.deserialize,
             ads_search.SearchGoogleAdsStreamResponse.serialize, True),
            ("lro", "google.longrunning.Operations", "GetOperation", self._get_operation,
             operations_pb2.GetOperationRequest.FromString,
             operations_pb2.Operation.SerializeToString, False),
            ("dm", "IngestionService", "IngestAudienceMembers", self._ingest,
             dm_ingestion.IngestAudienceMembersRequest.deserialize,
             dm_ingestion.IngestAudienceMembersResponse.serialize, False),
            ("dm", "IngestionService", "RemoveAudienceMembers", self._remove,
             dm_ingestion.RemoveAudienceMembersRequest.deserialize,
             dm_ingestion.RemoveAudienceMembersResponse.serialize, False),
            ("dm", "IngestionService", "RetrieveRequestStatus", self._request_status,
             dm_ingestion.RetrieveRequestStatusRequest.deserialize,
             dm_ingestion.RetrieveRequestStatusResponse.serialize, False),
            ("dm", "UserListService", "CreateUserList", self._dm_create_list,
             dm_user_list_service.CreateUserListRequest.deserialize, dm_user_list.UserList.serialize, False),
            ("dm", "UserListService", "GetUserList", self._dm_get_list,
             dm_user_list_service.GetUserListRequest.deserialize, dm_user_list.UserList.serialize, False),
            ("dm", "UserListService", "ListUserLists", self._dm_list_lists,
             dm_user_list_service.ListUserListsRequest.deserialize,
             dm_user_list_service.ListUserListsResponse.serialize, False),
            ("dm", "UserListService", "UpdateUserList", self._dm_update_list,
             dm_user_list_service.UpdateUserListRequest.deserialize, dm_user_list.UserList.serialize, False),
        ]  # fmt: skip
        services: dict[str, dict[str, Any]] = {}
        for api, service, method, fn, deserialize, serialize, streaming in table:
            versions = ADS_VERSIONS if api == "ads" else (ADS_VERSION,)
            for version in versions:
                full = {
                    "ads": f"google.ads.googleads.{version}.services.{service}",
                    "dm": f"{_DM_SERVICES}.{service}",
                }.get(api, service)
                services.setdefault(full, {})[method] = self._method_handler(
                    "ads" if api == "lro" else api, method, fn, deserialize, serialize, streaming, version
                )
        return [grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()]

    def _method_handler(
        self,
        api: str,
        method: str,
        fn: Callable[[Any, _Call], Any],
        deserialize: Callable[[bytes], Any],
        serialize: Callable[[Any], bytes],
        streaming: bool,
        version: str,
    ) -> Any:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            return self._dispatch(api, method, fn, request, context, version)

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # One batch, as the real service sends for a small result set.
            yield self._dispatch(api, method, fn, request, context, version)

        if streaming:
            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=deserialize, response_serializer=serialize
            )
        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserialize, response_serializer=serialize
        )

    def _dispatch(
        self,
        api: str,
        method: str,
        fn: Callable[[Any, _Call], Any],
        request: Any,
        context: grpc.ServicerContext,
        version: str = ADS_VERSION,
    ) -> Any:
        with self._store.lock:
            self.calls[method] += 1
        metadata = {str(k): v for k, v in context.invocation_metadata()}
        request_id = f"emu{next(self._ads_request_ids):019d}" if api == "ads" else ""
        call = _Call(method, request_id, metadata)
        try:
            self._transport_faults()
            if api == "ads":
                self._ads_checks(call)
            else:
                self._quota()
            response = fn(request, call)
            if method in _LOST_ANSWER_METHODS and self.faults.roll("lost_answer_rate"):
                raise _Abort(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")
        except _AdsFailure as failure:
            payload = ads_errors.GoogleAdsFailure.serialize(
                ads_errors.GoogleAdsFailure(errors=failure.errors, request_id=request_id)
            )
            context.set_trailing_metadata(
                ((failure_metadata_key(version), payload), (REQUEST_ID_METADATA_KEY, request_id))
            )
            message = (
                "Request contains an invalid argument."
                if failure.code == grpc.StatusCode.INVALID_ARGUMENT
                else str(failure)
            )
            context.abort(failure.code, message)
        except _Abort as abort:
            if request_id:
                context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
            if abort.reason:
                dm_request_id = request_id or f"emu-dm-{uuid.uuid4().hex[:16]}"
                context.abort_with_status(rpc_status.to_status(abort.status(dm_request_id)))
            context.abort(abort.code, abort.message)
        if request_id:
            context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        return response

    def _transport_faults(self) -> None:
        if self.faults.roll("slow_rate"):
            wake = self._wake
            if wake.wait(float(self.faults["slow_seconds"])):
                raise _Abort(grpc.StatusCode.CANCELLED, "The emulator was reset or stopped.")
        if self.faults.roll("unavailable_rate"):
            raise _Abort(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")
        if self.faults.roll("internal_rate"):
            raise _Abort(grpc.StatusCode.INTERNAL, "Internal error encountered.")
        if self.faults.roll("resource_exhausted_rate"):
            raise _Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "Resource has been exhausted (e.g. check quota)."
            )

    def _ads_checks(self, call: _Call) -> None:
        token = call.metadata.get("developer-token", "")
        expected = self.faults["expected_developer_token"]
        if not token:
            raise _fail("request_error", "DEVELOPER_TOKEN_PARAMETER_MISSING", "Developer token is missing.")
        if expected is not None and token != expected:
            raise _fail(
                "authentication_error", "DEVELOPER_TOKEN_INVALID", "The developer token is not valid."
            )
        login = call.metadata.get("login-customer-id")
        if login is not None and not _CUSTOMER_ID.fullmatch(login):
            raise _fail(
                "authentication_error",
                "CLIENT_CUSTOMER_ID_INVALID",
                "The login-customer-id header is not a valid customer ID (10 digits, no dashes).",
            )
        if call.method in _ALLOWLISTED_METHODS and self.faults["not_allowlisted"]:
            raise _fail(
                "not_allowlisted_error",
                "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
                "Customer is not allowlisted for accessing this feature.",
            )
        if call.method in _CONCURRENT_METHODS and self.faults.roll("concurrent_modification_rate"):
            raise _concurrent_modification()
        if self.faults.roll("resource_temporarily_exhausted_rate"):
            raise _fail(
                "quota_error",
                "RESOURCE_TEMPORARILY_EXHAUSTED",
                "Too many requests. Retry in 30 seconds.",
            )

    def _quota(self) -> None:
        limit = int(self.faults["quota_per_minute"])
        now = time.monotonic()
        with self._store.lock:
            window = self._store.quota_window
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= limit:
                raise _Abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Quota exceeded: at most {limit} requests per minute per project.",
                    reason="RESOURCE_EXHAUSTED",
                )
            window.append(now)

    # --- Google Ads API: user lists ---

    def _mutate_user_lists(self, request: Any, call: _Call) -> Any:
        customer_id = _ads_customer(request.customer_id)
        if not request.operations:
            raise _fail("request_error", "OPERATION_REQUIRED", "At least one operation is required.")
        results: list[Any] = []
        errors: list[Any] = []
        with self._store.lock:
            staged: list[_UserList] = []
            removed: list[int] = []
            for i, op in enumerate(request.operations):
                try:
                    if "create" in op:
                        new = self._ads_list_from(customer_id, op.create, i, staged)
                        # An id drawn for a request that then fails is never reused: ids may have gaps.
                        new.id = next(self._store.list_ids)
                        staged.append(new)
                        results.append(ads_user_list_service.MutateUserListResult(resource_name=new.ads_name))
                    elif "remove" in op:
                        path: _Path = [("operations", i), ("remove", None)]
                        removed.append(self._ads_list_by_name(customer_id, str(op.remove), path).id)
                        results.append(ads_user_list_service.MutateUserListResult(resource_name=op.remove))
                    else:
                        raise _fail(
                            "mutate_error",
                            "MUTATE_NOT_ALLOWED",
                            "The emulator supports create and remove operations on user lists.",
                            [("operations", i)],
                        )
                except _AdsFailure as failure:
                    errors.extend(failure.errors)
                    results.append(ads_user_list_service.MutateUserListResult())
            if errors and not request.partial_failure:
                raise _AdsFailure(errors)
            if not request.validate_only:
                self._store.lists.update((new.id, new) for new in staged)
                for list_id in removed:
                    self._store.lists.pop(list_id, None)
        response = ads_user_list_service.MutateUserListsResponse(results=results)
        if errors:
            response.partial_failure_error = _partial_failure_status(errors, call.request_id)
        return response

    def _ads_list_from(self, customer_id: str, spec: Any, i: int, staged: list[_UserList]) -> _UserList:
        def at(field_name: str) -> _Path:
            return [("operations", i), ("create", None), (field_name, None)]

        name = str(spec.name).strip()
        if not name:
            raise _fail("user_list_error", "INVALID_NAME", "The user list name is required.", at("name"))
        if self._store.list_named(customer_id, name) or any(s.name == name for s in staged):
            raise _fail(
                "user_list_error",
                "NAME_ALREADY_USED",
                "Name is already being used for another user list.",
                at("name"),
            )
        if "crm_based_user_list" not in spec:
            raise _fail(
                "user_list_error",
                "CONCRETE_TYPE_REQUIRED",
                "The emulator creates CRM-based (Customer Match) user lists only.",
                at("crm_based_user_list"),
            )
        key_type = spec.crm_based_user_list.upload_key_type
        if getattr(key_type, "name", str(key_type)) != "CONTACT_INFO":
            raise _fail(
                "field_error",
                "INVALID_VALUE",
                "The emulator supports crm_based_user_list.upload_key_type CONTACT_INFO only.",
                [
                    ("operations", i),
                    ("create", None),
                    ("crm_based_user_list", None),
                    ("upload_key_type", None),
                ],
            )
        life_span = int(spec.membership_life_span) if "membership_life_span" in spec else MAX_LIFE_SPAN_DAYS
        if life_span > MAX_LIFE_SPAN_DAYS:
            raise _fail(
                "range_error",
                "TOO_HIGH",
                f"membership_life_span of a CRM-based list is at most {MAX_LIFE_SPAN_DAYS} days.",
                at("membership_life_span"),
            )
        if life_span < 1:
            raise _fail(
                "range_error",
                "TOO_LOW",
                "membership_life_span must be at least 1 day.",
                at("membership_life_span"),
            )
        return _UserList(0, customer_id, name, str(spec.description), life_span)

    def _ads_list_by_name(self, customer_id: str, name: str, path: _Path) -> _UserList:
        if _ADS_LIST_NAME.fullmatch(name) is None:
            raise _fail(
                "request_error", "RESOURCE_NAME_MALFORMED", "Malformed user list resource name.", path
            )
        found = self._ads_list(customer_id, name)
        if found is None:
            raise _fail("mutate_error", "RESOURCE_NOT_FOUND", "The user list was not found.", path)
        return found

    def _ads_list(self, customer_id: str, name: str) -> _UserList | None:
        """The list resource ``name`` names, if it exists and belongs to ``customer_id``."""
        match = _ADS_LIST_NAME.fullmatch(name)
        if match is None or match.group(1) != customer_id:
            return None
        found = self._store.lists.get(int(match.group(2)))
        return found if found is not None and found.customer_id == customer_id else None

    # --- Google Ads API: offline user data jobs ---

    def _create_job(self, request: Any, call: _Call) -> Any:
        customer_id = _ads_customer(request.customer_id)
        job = request.job
        if getattr(job.type_, "name", "") != "CUSTOMER_MATCH_USER_LIST":
            raise _fail(
                "field_error",
                "INVALID_VALUE",
                "The emulator supports CUSTOMER_MATCH_USER_LIST jobs only.",
                [("job", None), ("type", None)],
            )
        if "customer_match_user_list_metadata" not in job:
            raise _fail(
                "field_error",
                "REQUIRED",
                "customer_match_user_list_metadata is required.",
                [("job", None), ("customer_match_user_list_metadata", None)],
            )
        meta = job.customer_match_user_list_metadata
        consent: dict[str, str] = {"ad_user_data": "UNSPECIFIED", "ad_personalization": "UNSPECIFIED"}
        if "consent" in meta:
            for key in consent:
                consent[key] = getattr(getattr(meta.consent, key), "name", "UNSPECIFIED")
                if consent[key] == "DENIED":
                    raise _fail(
                        "field_error",
                        "INVALID_VALUE",
                        f"Customer Match data must not be uploaded with {key} DENIED.",
                        [
                            ("job", None),
                            ("customer_match_user_list_metadata", None),
                            ("consent", None),
                            (key, None),
                        ],
                    )
        list_path: _Path = [("job", None), ("customer_match_user_list_metadata", None), ("user_list", None)]
        with self._store.lock:
            target = self._ads_list(customer_id, str(meta.user_list))
            if target is None:
                raise _fail(
                    "offline_user_data_job_error",
                    "INVALID_USER_LIST_ID",
                    "The user list ID provided for the job is invalid.",
                    list_path,
                )
            if request.validate_only:
                return ads_job_service.CreateOfflineUserDataJobResponse()
            new = _Job(next(self._store.job_ids), customer_id, target.id, consent)
            self._store.jobs[new.id] = new
        return ads_job_service.CreateOfflineUserDataJobResponse(resource_name=new.resource_name)

    def _job_named(self, name: str) -> _Job:
        match = _ADS_JOB_NAME.fullmatch(name)
        if match is None:
            raise _fail(
                "request_error",
                "RESOURCE_NAME_MALFORMED",
                "Malformed offline user data job resource name.",
                [("resource_name", None)],
            )
        job = self._store.jobs.get(int(match.group(2)))
        if job is None or job.customer_id != match.group(1):
            raise _fail(
                "mutate_error",
                "RESOURCE_NOT_FOUND",
                "The offline user data job was not found.",
                [("resource_name", None)],
            )
        return job

    def _idle_unrun_job(self, request: Any, started: str) -> _Job:
        """The job ``request.resource_name`` names, when it has not been run (else JOB_ALREADY_STARTED,
        with the message ``started``) and no AddOperations on it is being validated (else
        CONCURRENT_MODIFICATION)."""
        job = self._job_named(str(request.resource_name))
        if job.ran_at is not None:
            raise _fail(
                "offline_user_data_job_error", "JOB_ALREADY_STARTED", started, [("resource_name", None)]
            )
        if job.busy:
            raise _concurrent_modification()
        return job

    def _add_operations(self, request: Any, call: _Call) -> Any:
        operations = request.operations
        if not operations:
            raise _fail(
                "request_error",
                "OPERATION_REQUIRED",
                "At least one operation is required.",
                [("operations", None)],
            )
        if len(operations) > MAX_ADS_OPERATIONS:
            raise _fail(
                "request_error",
                "TOO_MANY_MUTATE_OPERATIONS",
                f"At most {MAX_ADS_OPERATIONS} operations per request.",
                [("operations", None)],
            )
        rejected = _rejected_values(self.faults["reject_identifiers"])
        with self._store.lock:
            job = self._idle_unrun_job(
                request, "Operations cannot be added to a job that has already been run."
            )
            # Google refuses parallel AddOperations on one job; so does the emulator, by marking the
            # job busy while a request's operations are validated (outside the store lock).
            job.busy = True
            kind = job.kind
            had_operations = bool(job.counts)
        try:
            accepted: list[tuple[str, frozenset[str]]] = []
            errors: list[Any] = []
            # Raw protobuf (see _accept_members); each operation is checked on its own, and its error
            # recorded.
            raw_operations = type(request).pb(request).operations
            for i, op in enumerate(raw_operations):
                try:
                    entry = _ads_operation(
                        i, op, kind, first=i == 0 and not had_operations, rejected=rejected
                    )
                except _AdsFailure as failure:
                    errors.extend(failure.errors)
                    continue
                if entry[0] != "remove_all":
                    kind = entry[0]
                accepted.append(entry)
            if errors and not request.enable_partial_failure:
                raise _AdsFailure(errors)
            with self._store.lock:
                if not request.validate_only:
                    job.kind = kind
                    job.operations.extend(accepted)
                    job.counts.update(k for k, _ in accepted)
        finally:
            with self._store.lock:
                job.busy = False
        response = ads_job_service.AddOfflineUserDataJobOperationsResponse()
        if errors:
            response.partial_failure_error = _partial_failure_status(errors, call.request_id)
        return response

    def _run_job(self, request: Any, call: _Call) -> Any:
        with self._store.lock:
            job = self._idle_unrun_job(request, "The job has already been run.")
            if not request.validate_only:
                job.ran_at = time.monotonic()
                job.processing_seconds = float(self.faults["processing_seconds"])
                job.fail = self.faults.roll("job_fail_rate")
                job.status = "PENDING"
        return operations_pb2.Operation(name=f"customers/{job.customer_id}/operations/{job.id}", done=False)

    def _get_operation(self, request: Any, call: _Call) -> Any:
        match = _ADS_OPERATION_NAME.fullmatch(str(request.name))
        with self._store.lock:
            self._store.settle(time.monotonic())
            job = self._store.jobs.get(int(match.group(2))) if match else None
            if job is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, "Operation not found.")
            operation = operations_pb2.Operation(name=request.name, done=job.settled)
            if job.status == "SUCCESS":
                operation.response.Pack(empty_pb2.Empty())
            elif job.status == "FAILED":
                operation.error.CopyFrom(
                    status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message="The job failed.")
                )
        return operation

    # --- Google Ads API: GAQL ---

    def _search(self, request: Any, call: _Call) -> Any:
        rows, paths = self._query(request.customer_id, str(request.query))
        response = ads_search.SearchGoogleAdsResponse(results=rows)
        ads_search.SearchGoogleAdsResponse.pb(response).field_mask.paths.extend(paths)
        if request.search_settings.return_total_results_count:
            response.total_results_count = len(rows)
        return response

    def _search_stream(self, request: Any, call: _Call) -> Any:
        rows, paths = self._query(request.customer_id, str(request.query))
        response = ads_search.SearchGoogleAdsStreamResponse(results=rows, request_id=call.request_id)
        ads_search.SearchGoogleAdsStreamResponse.pb(response).field_mask.paths.extend(paths)
        return response

    def _query(self, customer_id_raw: str, query: str) -> tuple[list[Any], list[str]]:
        customer_id = _ads_customer(customer_id_raw)
        parsed = _parse_gaql(query)
        with self._store.lock:
            self._store.settle(time.monotonic())
            rate = int(self.faults["match_rate_percentage"])
            if parsed.resource == "user_list":
                flat = [
                    _ads_list_fields(x, rate)
                    for x in self._store.lists.values()
                    if x.customer_id == customer_id
                ]
            else:
                flat = [
                    _ads_job_fields(j, rate)
                    for j in self._store.jobs.values()
                    if j.customer_id == customer_id
                ]
        rows = parsed.run(flat)
        return [ads_search.GoogleAdsRow(_nest(row, parsed.fields)) for row in rows], parsed.fields

    # --- Data Manager API: ingestion ---

    def _ingest(self, request: Any, call: _Call) -> Any:
        # The Customer Match terms "must be accepted when ingesting UserData" (proto
        # google/ads/datamanager_v1/types/terms_of_service.py): missing or REJECTED fails the request
        # with ErrorReason TERMS_AND_CONDITIONS_NOT_SIGNED (reference/rest/v1/ErrorReason). The gRPC code
        # for it is an assumption (docs/setup-google.md, "Assumptions").
        terms = request.terms_of_service.customer_match_terms_of_service_status
        if getattr(terms, "name", "") != "ACCEPTED":
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "terms_of_service.customer_match_terms_of_service_status: the Customer Match terms must be "
                "ACCEPTED to ingest user data.",
                reason="TERMS_AND_CONDITIONS_NOT_SIGNED",
            )
        request_id = self._accept_members("ingest", request)
        return dm_ingestion.IngestAudienceMembersResponse(request_id=request_id)

    def _remove(self, request: Any, call: _Call) -> Any:
        request_id = self._accept_members("remove", request)
        return dm_ingestion.RemoveAudienceMembersResponse(request_id=request_id)

    def _accept_members(self, kind: str, request: Any) -> str:
        destinations = list(request.destinations)
        # The members are read from the raw protobuf: proto-plus wrapping costs about 50 µs a member,
        # which at 10,000 members a request would make the emulator the bottleneck of benchmarks.
        raw = type(request).pb(request)
        # One list of the members, held while they are read in several sweeps: upb makes a Python
        # object for a message on each access unless one is alive already.
        members = list(raw.audience_members)
        _dm_check_request_size(len(destinations), len(members))
        base64 = raw.encoding == dm_ingestion.Encoding.BASE64
        rejected = _rejected_values(self.faults["reject_identifiers"])
        # Validate every member before touching the store: Data Manager requests fail whole, on the
        # first error (fast-fail, devguides/concepts/understand-errors).
        persons = [_dm_person(i, m, base64, rejected) for i, m in enumerate(members)]
        request_consent = raw.consent if kind == "ingest" and raw.HasField("consent") else None
        denied = _denied_members(request_consent, members) if kind == "ingest" else [False] * len(members)
        with self._store.lock:
            deliveries = [self._delivery(i, d) for i, d in enumerate(destinations)]
            _distribute(members, persons, denied, deliveries)
            if request.validate_only:
                return ""
            if self.faults.roll("partial_success_rate"):
                for delivery in deliveries:
                    _drop_tenth(delivery)
            request_id = str(uuid.UUID(int=next(self._store.request_ids)))
            self._store.requests[request_id] = _DmRequest(
                request_id,
                kind,
                deliveries,
                time.monotonic(),
                float(self.faults["processing_seconds"]),
                len(members),
            )
            self._store.settle(time.monotonic())
        return request_id

    def _delivery(self, i: int, destination: Any) -> _Delivery:
        at = f"destinations[{i}]"
        account = destination.operating_account
        account_type = getattr(account.account_type, "name", "ACCOUNT_TYPE_UNSPECIFIED")
        if account_type not in ("GOOGLE_ADS", "ACCOUNT_TYPE_UNSPECIFIED"):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{at}.operating_account.account_type: the emulator serves GOOGLE_ADS accounts only.",
                reason="INVALID_DESTINATION",
            )
        if not _CUSTOMER_ID.fullmatch(str(account.account_id)):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{at}.operating_account.account_id: must be 10 digits, no dashes.",
                reason="INVALID_DESTINATION",
            )
        list_id = str(destination.product_destination_id)
        target = self._store.lists.get(int(list_id)) if list_id.isdigit() else None
        if target is None or target.customer_id != account.account_id:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{at}.product_destination_id: no such user list in the operating account.",
                reason="INVALID_USER_LIST_ID",
            )
        return _Delivery(destination, target.id)

    def _request_status(self, request: Any, call: _Call) -> Any:
        with self._store.lock:
            self._store.settle(time.monotonic())
            found = self._store.requests.get(str(request.request_id))
            if found is None:
                raise _Abort(
                    grpc.StatusCode.NOT_FOUND, "request_id: no such request.", reason="INVALID_REQUEST_ID"
                )
            rate = int(self.faults["match_rate_percentage"])
            statuses = [_dm_status_for(found, d, rate) for d in found.deliveries]
        return dm_ingestion.RetrieveRequestStatusResponse(request_status_per_destination=statuses)

    # --- Data Manager API: user lists ---

    def _dm_create_list(self, request: Any, call: _Call) -> Any:
        customer_id = _dm_account(str(request.parent), "parent")
        spec = request.user_list
        name = _dm_display_name(spec)
        if "ingested_user_list_info" in spec:
            types = {getattr(t, "name", str(t)) for t in spec.ingested_user_list_info.upload_key_types}
            if types - {"CONTACT_ID"}:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "user_list.ingested_user_list_info.upload_key_types: the emulator supports CONTACT_ID only.",
                    reason="UNSUPPORTED_USER_LIST_UPLOAD_KEY_TYPES",
                )
        life_span = _dm_life_span(spec)
        rate = int(self.faults["match_rate_percentage"])
        with self._store.lock:
            self._dm_check_name_free(customer_id, name)
            new = _UserList(0, customer_id, name, str(spec.description), life_span)
            if not request.validate_only:
                new.id = next(self._store.list_ids)
                self._store.lists[new.id] = new
            return _dm_user_list_message(new, rate)

    def _dm_check_name_free(self, customer_id: str, name: str, renamed: _UserList | None = None) -> None:
        """Display names are unique per account; a list may keep its own (``renamed``)."""
        other = self._store.list_named(customer_id, name)
        if other is not None and other is not renamed:
            raise _Abort(
                grpc.StatusCode.ALREADY_EXISTS,
                "user_list.display_name: a user list with this name exists.",
                reason="DISPLAY_NAME_ALREADY_USED",
            )

    def _dm_list_by_name(self, name: str) -> _UserList:
        match = _DM_LIST_NAME.fullmatch(name)
        if match is None or match.group(1) != "GOOGLE_ADS":
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "name: expected accountTypes/GOOGLE_ADS/accounts/{account}/userLists/{user_list}.",
                reason="INVALID_RESOURCE_NAME",
            )
        found = self._store.lists.get(int(match.group(3)))
        if found is None or found.customer_id != match.group(2):
            raise _Abort(grpc.StatusCode.NOT_FOUND, "User list not found.")
        return found

    def _dm_get_list(self, request: Any, call: _Call) -> Any:
        with self._store.lock:
            self._store.settle(time.monotonic())
            return _dm_user_list_message(
                self._dm_list_by_name(str(request.name)), int(self.faults["match_rate_percentage"])
            )

    def _dm_list_lists(self, request: Any, call: _Call) -> Any:
        customer_id = _dm_account(str(request.parent), "parent")
        wanted = _dm_filter(str(request.filter))
        size = int(request.page_size) or 50
        if size < 0:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_size: must not be negative.",
                reason="INVALID_ARGUMENT",
            )
        size = min(size, 1000)
        token = str(request.page_token)
        if token and not token.isdigit():
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "page_token: invalid.", reason="INVALID_PAGE_TOKEN"
            )
        start = int(token or 0)
        with self._store.lock:
            self._store.settle(time.monotonic())
            rate = int(self.faults["match_rate_percentage"])
            mine = [
                x
                for x in self._store.lists.values()
                if x.customer_id == customer_id and wanted in (None, x.name)
            ]
            page = [_dm_user_list_message(x, rate) for x in mine[start : start + size]]
        response = dm_user_list_service.ListUserListsResponse(user_lists=page)
        if start + size < len(mine):
            response.next_page_token = str(start + size)
        return response

    def _dm_update_list(self, request: Any, call: _Call) -> Any:
        spec = request.user_list
        paths = list(dm_user_list_service.UpdateUserListRequest.pb(request).update_mask.paths)
        unknown = set(paths) - {"display_name", "description", "membership_duration"}
        if unknown or not paths:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "update_mask: the emulator updates display_name, description and membership_duration.",
                reason="INVALID_UPDATE_MASK",
            )
        with self._store.lock:
            target = self._dm_list_by_name(str(spec.name))
            name = _dm_display_name(spec) if "display_name" in paths else target.name
            self._dm_check_name_free(target.customer_id, name, renamed=target)
            life_span = _dm_life_span(spec) if "membership_duration" in paths else target.life_span_days
            if not request.validate_only:
                target.name = name
                target.life_span_days = life_span
                if "description" in paths:
                    target.description = str(spec.description)
            return _dm_user_list_message(target, int(self.faults["match_rate_percentage"]))


# --- Ads helpers ------------------------------------------------------------------------------------


def _ads_customer(customer_id: str) -> str:
    if not _CUSTOMER_ID.fullmatch(customer_id):
        raise _fail(
            "request_error",
            "INVALID_CUSTOMER_ID",
            "The customer ID is not valid (10 digits, no dashes).",
            [("customer_id", None)],
        )
    return customer_id


def _rejected_values(values: Iterable[str] | None) -> frozenset[str]:
    return frozenset(str(v) for v in values or ())


def _is_rejected(entry: str, rejected: frozenset[str]) -> bool:
    return bool(rejected) and (entry in rejected or entry.split(":", 1)[1] in rejected)


def _ads_operation(
    i: int, op: Any, kind: str | None, *, first: bool, rejected: frozenset[str]
) -> tuple[str, frozenset[str]]:
    """Validate one ``OfflineUserDataJobOperation`` (raw protobuf) as Google does; (kind, person)."""
    which_op = op.WhichOneof("operation")
    if which_op == "remove_all":
        if not op.remove_all:
            raise _fail(
                "field_error",
                "INVALID_VALUE",
                "remove_all must be true when set.",
                [("operations", i), ("remove_all", None)],
            )
        if not first:
            raise _fail(
                "offline_user_data_job_error",
                "INVALID_OPERATION_ORDER",
                "remove_all must be the first operation of a job.",
                [("operations", i), ("remove_all", None)],
            )
        return "remove_all", frozenset()
    if which_op == "create":
        op_kind, data = "create", op.create
    elif which_op == "remove":
        op_kind, data = "remove", op.remove
    else:
        raise _fail(
            "request_error",
            "OPERATION_REQUIRED",
            "The operation has no create, remove or remove_all.",
            [("operations", i)],
        )
    at: _Path = [("operations", i), (op_kind, None)]
    if kind is not None and kind != op_kind:
        raise _fail(
            "offline_user_data_job_error",
            "CONFLICTING_OPERATION",
            "Create and remove operations cannot be mixed in one job.",
            [("operations", i), (op_kind, None)],
        )
    if data.HasField("consent"):
        raise _fail(
            "offline_user_data_job_error",
            "OPERATION_LEVEL_CONSENT_PROVIDED",
            "Consent is set on the job's customer_match_user_list_metadata, not on operations.",
            [*at, ("consent", None)],
        )
    if data.HasField("transaction_attribute") or data.HasField("user_attribute"):
        raise _fail(
            "offline_user_data_job_error",
            "ATTRIBUTES_NOT_APPLICABLE_FOR_CUSTOMER_MATCH_USER_LIST",
            "Attributes are not applicable to a Customer Match user list job.",
            at,
        )
    identifiers = list(data.user_identifiers)
    if not identifiers:
        raise _fail(
            "offline_user_data_job_error",
            "MISSING_USER_IDENTIFIER",
            "User identifiers are required.",
            [*at, ("user_identifiers", None)],
        )
    if len(identifiers) > MAX_ADS_IDENTIFIERS:
        raise _fail(
            "offline_user_data_job_error",
            "TOO_MANY_USER_IDENTIFIERS",
            f"At most {MAX_ADS_IDENTIFIERS} user identifiers per UserData.",
            [*at, ("user_identifiers", None)],
        )
    entries: list[str] = []
    for j, ident in enumerate(identifiers):
        where: _Path = [*at, ("user_identifiers", j)]
        for entry, leaf in _ads_identifier(ident, where):
            if _is_rejected(entry, rejected):
                raise _fail(
                    "offline_user_data_job_error",
                    "INVALID_SHA256_FORMAT",
                    "The identifier was rejected (emulator reject_identifiers switch).",
                    [*where, (leaf, None)],
                )
            entries.append(entry)
    return op_kind, frozenset(entries)


def _ads_identifier(ident: Any, at: _Path) -> list[tuple[str, str]]:
    """One ``UserIdentifier`` as ("kind:value", proto field) pairs, validated."""
    which = ident.WhichOneof("identifier")
    if which in ("hashed_email", "hashed_phone_number"):
        value = str(getattr(ident, which))
        _check_hash(value, [*at, (which, None)])
        return [(f"{'email' if which == 'hashed_email' else 'phone'}:{value}", which)]
    if which == "address_info":
        address = ident.address_info
        where: _Path = [*at, ("address_info", None)]
        for part in ("hashed_first_name", "hashed_last_name"):
            _check_hash(str(getattr(address, part)), [*where, (part, None)])
        country, postal = str(address.country_code), str(address.postal_code)
        if not re.fullmatch(r"[A-Z]{2}|[a-z]{2}", country):
            raise _fail(
                "offline_user_data_job_error",
                "INVALID_COUNTRY_CODE",
                "country_code must be a two-letter ISO 3166-1 code, not hashed.",
                [*where, ("country_code", None)],
            )
        if not postal.strip():
            raise _fail(
                "field_error",
                "REQUIRED",
                "postal_code is required with address_info.",
                [*where, ("postal_code", None)],
            )
        return [
            (f"first_name:{address.hashed_first_name}", "hashed_first_name"),
            (f"last_name:{address.hashed_last_name}", "hashed_last_name"),
            (f"country:{country.upper()}", "country_code"),
            (f"zip:{postal}", "postal_code"),
        ]
    if which is None:
        raise _fail(
            "offline_user_data_job_error", "MISSING_USER_IDENTIFIER", "The user identifier is empty.", at
        )
    raise _fail(
        "offline_user_data_job_error",
        "INCOMPATIBLE_UPLOAD_KEY_TYPE",
        f"{which} does not match the list's CONTACT_INFO upload key type.",
        [*at, (which, None)],
    )


def _check_hash(value: str, path: _Path) -> None:
    if not _HEX64.fullmatch(value):
        raise _fail(
            "offline_user_data_job_error",
            "INVALID_SHA256_FORMAT",
            "The SHA256 encoded value is malformed (64 lowercase hex characters expected).",
            path,
        )


def _dm_account(parent: str, field_name: str) -> str:
    match = _DM_ACCOUNT.fullmatch(parent)
    if match is None or match.group(1) != "GOOGLE_ADS":
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field_name}: expected accountTypes/GOOGLE_ADS/accounts/{{account}}.",
            reason="INVALID_RESOURCE_NAME",
        )
    if not _CUSTOMER_ID.fullmatch(match.group(2)):
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field_name}: the account id must be 10 digits, no dashes.",
            reason="INVALID_RESOURCE_NAME",
        )
    return match.group(2)


def _dm_filter(text: str) -> str | None:
    if not text.strip():
        return None
    match = re.fullmatch(r"\s*display_name\s*=\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')\s*", text)
    if match is None:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            'filter: the emulator supports display_name = "..." only.',
            reason="INVALID_FILTER",
        )
    return _literal(match.group(1))


def _dm_display_name(spec: Any) -> str:
    name = str(spec.display_name).strip()
    if not name:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_list.display_name: required.",
            reason="INVALID_DISPLAY_NAME",
        )
    return name


def _dm_life_span(spec: Any) -> int:
    if "membership_duration" not in spec:
        return MAX_LIFE_SPAN_DAYS
    duration = spec.membership_duration
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration.seconds)
    days = int(seconds // 86400)
    if seconds % 86400 or not 1 <= days <= MAX_LIFE_SPAN_DAYS:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"user_list.membership_duration: whole days from 1 to {MAX_LIFE_SPAN_DAYS}.",
            reason="MEMBERSHIP_DURATION_TOO_LONG",
        )
    return days


def _dm_user_list_message(x: _UserList, rate: int) -> Any:
    size = len(x.members)
    info = dm_user_list.IngestedUserListInfo(
        upload_key_types=[dm_user_list.IngestedUserListInfo.UploadKeyType.CONTACT_ID],
        contact_id_info=dm_user_list.ContactIdInfo(
            data_source_type=dm_user_list.DataSourceType.DATA_SOURCE_TYPE_FIRST_PARTY,
            match_rate_percentage=rate if size else 0,
        ),
    )
    return dm_user_list.UserList(
        name=x.dm_name,
        id=x.id,
        read_only=False,
        display_name=x.name,
        description=x.description,
        membership_status=dm_user_list.UserList.MembershipStatus.OPEN,
        membership_duration=timedelta(days=x.life_span_days),
        access_reason=dm_user_list.UserList.AccessReason.OWNED,
        account_access_status=dm_user_list.UserList.AccessStatus.ENABLED,
        size_info=dm_user_list.SizeInfo(
            display_network_members_count=size, search_network_members_count=size
        ),
        target_network_info=dm_user_list.TargetNetworkInfo(
            eligible_for_display=size >= 100, eligible_for_search=size >= 1000
        ),
        ingested_user_list_info=info,
    )


_CONSENT_DENIED = int(dm_consent.ConsentStatus.CONSENT_DENIED)


def _denied(request_consent: Any, member_consent: Any) -> bool:
    """True when the effective consent (the member's over the request's; raw ``Consent`` protobufs)
    denies either purpose. Statuses compare as ints: an unset one (0, unspecified) defers."""
    for purpose in ("ad_user_data", "ad_personalization"):
        status = 0
        for source in (request_consent, member_consent):
            if source is not None and getattr(source, purpose):
                status = getattr(source, purpose)
        if status == _CONSENT_DENIED:
            return True
    return False


def _denied_members(request_consent: Any, members: Any) -> list[bool]:
    """``_denied`` for each member (raw protobufs) of an ingest request, in one sweep."""
    user_data = request_consent.ad_user_data if request_consent is not None else 0
    personalization = request_consent.ad_personalization if request_consent is not None else 0
    denied = _CONSENT_DENIED
    request_denies = denied in (user_data, personalization)
    out: list[bool] = []
    append = out.append
    for member in members:
        if member.HasField("consent"):
            consent = member.consent
            append(
                (consent.ad_user_data or user_data) == denied
                or (consent.ad_personalization or personalization) == denied
            )
        else:
            append(request_denies)
    return out


def _dm_hash(value: str, base64: bool, at: str) -> str:
    if base64:
        import base64 as b64
        import binascii

        try:
            raw = b64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{at}: must be a base64-encoded SHA-256 hash.",
                reason="INVALID_SHA256_FORMAT",
            )
        return raw.hex()
    if not _HEX64.fullmatch(value):
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{at}: must be a hex-encoded SHA-256 hash (64 lowercase hex characters).",
            reason="INVALID_SHA256_FORMAT",
        )
    return value


def _dm_person(i: int, member: Any, base64: bool, rejected: frozenset[str]) -> frozenset[str]:
    """Validate one ``AudienceMember`` (raw protobuf); its person as a frozenset of "kind:value"."""
    at = f"audience_members[{i}]"
    if member.WhichOneof("data") != "user_data":
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{at}: the emulator takes user_data members only.",
            reason="INVALID_AUDIENCE_MEMBER",
        )
    identifiers = member.user_data.user_identifiers
    if not identifiers:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{at}.user_data.user_identifiers: at least one is required.",
            reason="NO_IDENTIFIERS_PROVIDED",
        )
    if len(identifiers) > MAX_DM_IDENTIFIERS:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{at}.user_data.user_identifiers: at most {MAX_DM_IDENTIFIERS} per member, got {len(identifiers)}.",
            reason="TOO_MANY_USER_IDENTIFIERS",
        )
    entries: list[str] = []
    for j, ident in enumerate(identifiers):
        where = f"{at}.user_data.user_identifiers[{j}]"
        which = ident.WhichOneof("identifier")
        if which == "email_address":
            entries.append(f"email:{_dm_hash(str(ident.email_address), base64, where + '.email_address')}")
        elif which == "phone_number":
            entries.append(f"phone:{_dm_hash(str(ident.phone_number), base64, where + '.phone_number')}")
        elif which == "address":
            address = ident.address
            first = _dm_hash(str(address.given_name), base64, where + ".address.given_name")
            last = _dm_hash(str(address.family_name), base64, where + ".address.family_name")
            region, postal = str(address.region_code), str(address.postal_code)
            if not re.fullmatch(r"[A-Za-z]{2}", region):
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}.address.region_code: a two-letter ISO 3166-1 code.",
                    reason="INVALID_COUNTRY_CODE",
                )
            if not postal.strip():
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}.address.postal_code: required.",
                    reason="INVALID_POSTAL_CODE",
                )
            entries += [
                f"first_name:{first}",
                f"last_name:{last}",
                f"country:{region.upper()}",
                f"zip:{postal}",
            ]
        else:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where}: an identifier is required.",
                reason="NO_IDENTIFIERS_PROVIDED",
            )
    for entry in entries:
        if _is_rejected(entry, rejected):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{at}.user_data: an identifier was rejected as invalid.",
                reason="INVALID_FORMAT",
            )
    return frozenset(entries)


def _dm_check_request_size(destinations: int, members: int) -> None:
    """Data Manager's per-request limits: 1 to 10 destinations, 1 to 10,000 members."""
    if not destinations:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "destinations: at least one destination is required.",
            reason="REQUIRED_FIELD_MISSING",
        )
    if destinations > MAX_DM_DESTINATIONS:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"destinations: at most {MAX_DM_DESTINATIONS} per request.",
            reason="TOO_MANY_DESTINATIONS",
        )
    if not members:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "audience_members: at least one member is required.",
            reason="REQUIRED_FIELD_MISSING",
        )
    if members > MAX_DM_MEMBERS:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"audience_members: at most {MAX_DM_MEMBERS} members per request, got {members}.",
            reason="TOO_MANY_AUDIENCE_MEMBERS",
        )


def _distribute(
    members: Any, persons: list[frozenset[str]], denied: list[bool], deliveries: list[_Delivery]
) -> None:
    """Give each member (raw protobufs) to the deliveries its ``destination_references`` name (all of
    them when it names none): counted there, and applied later unless its consent is ``denied``."""
    references = {d.destination.reference: d for d in deliveries if d.destination.reference}
    for i, member in enumerate(members):
        refs = list(member.destination_references)
        if any(r not in references for r in refs):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"audience_members[{i}].destination_references: no destination has this reference.",
                reason="INVALID_DESTINATION",
            )
        for delivery in [references[r] for r in refs] if refs else deliveries:
            delivery.records += 1
            delivery.identifiers += len(member.user_data.user_identifiers)
            if denied[i]:
                delivery.errors["PROCESSING_ERROR_REASON_DENIED_CONSENT"] += 1
            else:
                delivery.persons.append(persons[i])


def _drop_tenth(delivery: _Delivery) -> None:
    """The partial_success_rate switch: the last tenth of the persons (at least one) is not applied
    and is counted as an invalid-format processing error, as a PARTIAL_SUCCESS request reports."""
    dropped = max(1, len(delivery.persons) // 10) if delivery.persons else 0
    if dropped:
        del delivery.persons[-dropped:]
        delivery.errors["PROCESSING_ERROR_REASON_INVALID_FORMAT"] += dropped


def _dm_request_status(req: _DmRequest, delivery: _Delivery) -> str:
    if not req.settled:
        return "PROCESSING"
    failed = sum(delivery.errors.values())
    if failed and failed >= delivery.records:
        return "FAILED"
    return "PARTIAL_SUCCESS" if failed else "SUCCESS"


def _match_range(rate: int) -> Any:
    """The Data Manager match-rate bucket for a percentage."""
    return getattr(dm_match_rate.MatchRateRange, f"MATCH_RATE_RANGE_{_match_bucket(rate)}")


def _dm_status_for(req: _DmRequest, delivery: _Delivery, rate: int) -> Any:
    rsd = dm_status.RequestStatusPerDestination
    status = rsd(
        destination=delivery.destination,
        request_status=getattr(rsd.RequestStatus, _dm_request_status(req, delivery)),
    )
    if req.settled and delivery.errors:
        status.error_info = dm_errors.ErrorInfo(
            error_counts=[
                dm_errors.ErrorCount(record_count=n, reason=getattr(dm_errors.ProcessingErrorReason, reason))
                for reason, n in sorted(delivery.errors.items())
            ]
        )
    if req.kind == "ingest":
        status.audience_members_ingestion_status = rsd.IngestAudienceMembersStatus(
            user_data_ingestion_status=rsd.IngestUserDataStatus(
                record_count=delivery.records,
                user_identifier_count=delivery.identifiers,
                upload_match_rate_range=_match_range(rate)
                if req.settled
                else dm_match_rate.MatchRateRange.MATCH_RATE_RANGE_UNKNOWN,
            )
        )
    else:
        status.audience_members_removal_status = rsd.RemoveAudienceMembersStatus(
            user_data_removal_status=rsd.RemoveUserDataStatus(
                record_count=delivery.records, user_identifier_count=delivery.identifiers
            )
        )
    return status


# --- admin and entry points ----------------------------------------------------------------------------


def _not_found(req: Request) -> Response:
    # The admin port serves /_emulator/* only; the APIs are on the gRPC port.
    return Response.of_json({"error": "not found: the APIs are served over gRPC on the other port"}, 404)


def start_emulator(port: int = 0, admin_port: int = 0, **faults: Any) -> GoogleEmulator:
    """A started Google emulator on 127.0.0.1 (``port`` 0: any free port); ``faults`` are switches."""
    return GoogleEmulator(port, admin_port, **faults).start()


def serve(port: int, admin_port: int) -> None:
    """Serve both APIs on ``port`` and the admin surface on ``admin_port`` until interrupted."""
    emulator = start_emulator(port, admin_port)
    print(
        f"Google Ads API v24 + Data Manager API v1 emulator (gRPC, plaintext) on {emulator.endpoint} "
        f"(admin: {emulator.admin_url}/_emulator/state)",
        flush=True,
    )
    if threading.current_thread() is threading.main_thread():
        # A background process started by a non-interactive shell ignores SIGINT: let SIGTERM (a plain
        # ``kill``) take the same clean way out as Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        emulator.wait()
    finally:
        emulator.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
