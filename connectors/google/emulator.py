"""A local stand-in for Google's Customer Match APIs: one plaintext gRPC server serving both the Google
Ads API (every version in ADS_VERSIONS, v23..v26, each under its own service names) and the Data
Manager API v1, over one shared store of user lists (``emulator_store``), with the handlers of each API
in ``emulator_ads`` and ``emulator_datamanager``, plus the HTTP admin surface every emulator has (on a
second port, ``connectors.emulation.http``).

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
``google.ads.googleads.<the called version>.errors.googleadsfailure-bin`` (a serialized
``GoogleAdsFailure``) and ``request-id``, so the google-ads client raises ``GoogleAdsException``. Status
codes: INVALID_ARGUMENT for request errors, UNAUTHENTICATED for the developer token, PERMISSION_DENIED
for not-allowlisted, ABORTED for CONCURRENT_MODIFICATION, RESOURCE_EXHAUSTED for quota errors (the
client leaves RESOURCE_EXHAUSTED and INTERNAL unwrapped: those arrive as ``google.api_core.exceptions.
ResourceExhausted``, with the failure still in the trailing metadata). Developer token: any non-empty
``developer-token`` metadata (missing: RequestError.DEVELOPER_TOKEN_PARAMETER_MISSING); a ``login-customer-id``
must be 10 digits. Validation rules and their sources: ``emulator_ads`` (Ads) and
``emulator_datamanager`` (Data Manager).

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

Sources of the checks made here, before any handler: the failure transport (the googleadsfailure-bin
key) from google-ads google/ads/googleads/interceptors/exception_interceptor.py; NOT_ALLOWLISTED from
the Ads blog post of March 2026 on Customer Match (developers.google.com/ads/blog/posts/2026/03/
changes-to-customer-match-support-in); the Data Manager quota (300 a minute) from
developers.google.com/data-manager/api/devguides/limits.

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
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from audiencesync.connectors.emulation.http import EmulatorServer, FaultSwitches, Request, Response
from audiencesync.connectors.google.emulator_ads import AdsApi
from audiencesync.connectors.google.emulator_datamanager import DataManagerApi, _dm_request_status
from audiencesync.connectors.google.emulator_errors import (
    _Abort,
    _AdsFailure,
    _concurrent_modification,
    _fail,
)
from audiencesync.connectors.google.emulator_rpc import Api, Call, Handler, Rpc, declared_rpcs
from audiencesync.connectors.google.emulator_store import CUSTOMER_ID, _Store
from audiencesync.connectors.google.settings import API_VERSIONS
from google.ads.googleads.v24.errors.types import errors as ads_errors
from grpc_status import rpc_status

ADS_VERSION = "v24"
"""The version whose generated types the emulator reads and writes with."""
ADS_VERSIONS = tuple(API_VERSIONS.versions)
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
        apis = (AdsApi(self._store, self.faults), DataManagerApi(self._store, self.faults))
        self._grpc.add_generic_rpc_handlers(self._services(apis))
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
        self.admin.start()
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

    def _services(self, apis: tuple[object, ...]) -> list[Any]:
        """The gRPC services of every ``@rpc`` handler: Ads methods under each version's name."""
        services: dict[str, dict[str, Any]] = {}
        for api in apis:
            for declared, fn in declared_rpcs(api):
                for version in ADS_VERSIONS if declared.api is Api.ADS else (ADS_VERSION,):
                    name = {
                        Api.ADS: f"google.ads.googleads.{version}.services.{declared.service}",
                        Api.DATA_MANAGER: f"{_DM_SERVICES}.{declared.service}",
                    }.get(declared.api, declared.service)
                    services.setdefault(name, {})[declared.method] = self._method_handler(
                        declared, fn, version
                    )
        return [grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()]

    def _method_handler(self, declared: Rpc, fn: Handler, version: str) -> Any:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            return self._dispatch(declared, fn, request, context, version)

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # One batch, as the real service sends for a small result set.
            yield self._dispatch(declared, fn, request, context, version)

        codec = {"request_deserializer": declared.deserialize, "response_serializer": declared.serialize}
        if declared.streaming:
            return grpc.unary_stream_rpc_method_handler(stream, **codec)
        return grpc.unary_unary_rpc_method_handler(unary, **codec)

    def _dispatch(
        self, declared: Rpc, fn: Handler, request: Any, context: grpc.ServicerContext, version: str
    ) -> Any:
        method = declared.method
        ads = declared.api is not Api.DATA_MANAGER
        with self._store.lock:
            self.calls[method] += 1
        metadata = {str(k): v for k, v in context.invocation_metadata()}
        request_id = f"emu{next(self._ads_request_ids):019d}" if ads else ""
        call = Call(method, request_id, metadata)
        try:
            self._transport_faults()
            if ads:
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

    def _ads_checks(self, call: Call) -> None:
        token = call.metadata.get("developer-token", "")
        expected = self.faults["expected_developer_token"]
        if not token:
            raise _fail("request_error", "DEVELOPER_TOKEN_PARAMETER_MISSING", "Developer token is missing.")
        if expected is not None and token != expected:
            raise _fail(
                "authentication_error", "DEVELOPER_TOKEN_INVALID", "The developer token is not valid."
            )
        login = call.metadata.get("login-customer-id")
        if login is not None and not CUSTOMER_ID.fullmatch(login):
            raise _fail(
                "authentication_error",
                "CLIENTCUSTOMER_ID_INVALID",
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
