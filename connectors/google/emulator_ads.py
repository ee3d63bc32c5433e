"""The Google emulator's Google Ads API handlers: user lists (``UserListService``), Customer Match jobs
(``OfflineUserDataJobService``), the long-running operation a run returns, and GAQL search
(``GoogleAdsService``), over the store both APIs share.

Validation follows Google: 64-lowercase-hex hashes, country code two letters and postal code raw
(address_info needs all four parts), at most 20 identifiers per UserData and 100,000 operations per
request, creates and removes not mixed in one job (CONFLICTING_OPERATION), ``remove_all`` only first
(INVALID_OPERATION_ORDER), consent on the job only (OPERATION_LEVEL_CONSENT_PROVIDED), DENIED job
consent refused (FieldError.INVALID_VALUE), operations after Run refused (JOB_ALREADY_STARTED), two
AddOperations on one job at once refused (CONCURRENT_MODIFICATION). Without ``enable_partial_failure``
one bad operation fails the request; with it, ``partial_failure_error`` holds a GoogleAdsFailure per
bad operation, located at ``operations[i]``, and the rest are kept.

Sources: error codes and enum names from google-ads google/ads/googleads/vNN/errors/types/ (e.g.
offline_user_data_job_error.py: CONFLICTING_OPERATION, INVALID_OPERATION_ORDER, JOB_ALREADY_STARTED);
limits (540-day life span, 20 identifiers, 100,000 operations) from user_list.py
(membership_life_span) and Google's Customer Match guide (an assumption where no page is pinned,
docs/setup-google.md); hash format and raw country/postal code from the Data Manager formatting
guide (developers.google.com/data-manager/api/devguides/concepts/formatting).
"""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
from audiencesync.connectors.emulation.http import FaultSwitches
from audiencesync.connectors.google.emulator_errors import (
    _Abort,
    _AdsFailure,
    _concurrent_modification,
    _fail,
    _partial_failure_status,
    _Path,
)
from audiencesync.connectors.google.emulator_gaql import _ads_job_fields, _ads_list_fields, _nest, _parse_gaql
from audiencesync.connectors.google.emulator_rpc import Api, Call, Service
from audiencesync.connectors.google.emulator_store import (
    CUSTOMER_ID,
    HEX64,
    MAX_LIFE_SPAN_DAYS,
    _Job,
    _Store,
    _UserList,
    is_rejected,
    rejected_values,
)
from google.ads.googleads.v24.services.types import google_ads_service as ads_search
from google.ads.googleads.v24.services.types import offline_user_data_job_service as ads_job_service
from google.ads.googleads.v24.services.types import user_list_service as ads_user_list_service
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.rpc import status_pb2

MAX_ADS_IDENTIFIERS = 20
MAX_ADS_OPERATIONS = 100_000

_ADS_LIST_NAME = re.compile(r"customers/(\d+)/userLists/(\d+)")
_ADS_JOB_NAME = re.compile(r"customers/(\d+)/offlineUserDataJobs/(\d+)")
_ADS_OPERATION_NAME = re.compile(r"customers/(\d+)/operations/(\d+)")


_USER_LISTS = Service(Api.ADS, "UserListService", ads_user_list_service)
_JOBS = Service(Api.ADS, "OfflineUserDataJobService", ads_job_service)
_SEARCH = Service(Api.ADS, "GoogleAdsService", ads_search)
_OPERATIONS = Service(Api.OPERATIONS, "google.longrunning.Operations", operations_pb2)


class AdsApi:
    """The Google Ads API methods. Each takes the request message and the ``Call``; it answers the
    response message or raises ``_AdsFailure`` / ``_Abort``."""

    def __init__(self, store: _Store, faults: FaultSwitches) -> None:
        self.store = store
        self.faults = faults

    # --- Google Ads API: user lists ---

    @_USER_LISTS.rpc("MutateUserLists")
    def mutate_user_lists(self, request: Any, call: Call) -> Any:
        customer_id = _ads_customer(request.customer_id)
        if not request.operations:
            raise _fail("request_error", "OPERATION_REQUIRED", "At least one operation is required.")
        results: list[Any] = []
        errors: list[Any] = []
        with self.store.lock:
            staged: list[_UserList] = []
            removed: list[int] = []
            for i, op in enumerate(request.operations):
                try:
                    if "create" in op:
                        new = self._ads_list_from(customer_id, op.create, i, staged)
                        # An id drawn for a request that then fails is never reused: ids may have gaps.
                        new.id = next(self.store.list_ids)
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
                self.store.lists.update((new.id, new) for new in staged)
                for list_id in removed:
                    self.store.lists.pop(list_id, None)
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
        if self.store.list_named(customer_id, name) or any(s.name == name for s in staged):
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
        found = self.store.lists.get(int(match.group(2)))
        return found if found is not None and found.customer_id == customer_id else None

    # --- Google Ads API: offline user data jobs ---

    @_JOBS.rpc("CreateOfflineUserDataJob")
    def create_job(self, request: Any, call: Call) -> Any:
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
        with self.store.lock:
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
            new = _Job(next(self.store.job_ids), customer_id, target.id, consent)
            self.store.jobs[new.id] = new
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
        job = self.store.jobs.get(int(match.group(2)))
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

    @_JOBS.rpc("AddOfflineUserDataJobOperations")
    def add_operations(self, request: Any, call: Call) -> Any:
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
        rejected = rejected_values(self.faults["reject_identifiers"])
        with self.store.lock:
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
            with self.store.lock:
                if not request.validate_only:
                    job.kind = kind
                    job.operations.extend(accepted)
                    job.counts.update(k for k, _ in accepted)
        finally:
            with self.store.lock:
                job.busy = False
        response = ads_job_service.AddOfflineUserDataJobOperationsResponse()
        if errors:
            response.partial_failure_error = _partial_failure_status(errors, call.request_id)
        return response

    @_JOBS.rpc("RunOfflineUserDataJob", response=operations_pb2.Operation)
    def run_job(self, request: Any, call: Call) -> Any:
        with self.store.lock:
            job = self._idle_unrun_job(request, "The job has already been run.")
            if not request.validate_only:
                job.ran_at = time.monotonic()
                job.processing_seconds = float(self.faults["processing_seconds"])
                job.fail = self.faults.roll("job_fail_rate")
                job.status = "PENDING"
        return operations_pb2.Operation(name=f"customers/{job.customer_id}/operations/{job.id}", done=False)

    @_OPERATIONS.rpc("GetOperation", response=operations_pb2.Operation)
    def get_operation(self, request: Any, call: Call) -> Any:
        match = _ADS_OPERATION_NAME.fullmatch(str(request.name))
        with self.store.lock:
            self.store.settle(time.monotonic())
            job = self.store.jobs.get(int(match.group(2))) if match else None
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

    @_SEARCH.rpc(
        "Search", request=ads_search.SearchGoogleAdsRequest, response=ads_search.SearchGoogleAdsResponse
    )
    def search(self, request: Any, call: Call) -> Any:
        rows, paths = self._query(request.customer_id, str(request.query))
        response = ads_search.SearchGoogleAdsResponse(results=rows)
        ads_search.SearchGoogleAdsResponse.pb(response).field_mask.paths.extend(paths)
        if request.search_settings.return_total_results_count:
            response.total_results_count = len(rows)
        return response

    @_SEARCH.rpc(
        "SearchStream",
        request=ads_search.SearchGoogleAdsStreamRequest,
        response=ads_search.SearchGoogleAdsStreamResponse,
        streaming=True,
    )
    def search_stream(self, request: Any, call: Call) -> Any:
        rows, paths = self._query(request.customer_id, str(request.query))
        response = ads_search.SearchGoogleAdsStreamResponse(results=rows, request_id=call.request_id)
        ads_search.SearchGoogleAdsStreamResponse.pb(response).field_mask.paths.extend(paths)
        return response

    def _query(self, customer_id_raw: str, query: str) -> tuple[list[Any], list[str]]:
        customer_id = _ads_customer(customer_id_raw)
        parsed = _parse_gaql(query)
        with self.store.lock:
            self.store.settle(time.monotonic())
            rate = int(self.faults["match_rate_percentage"])
            if parsed.resource == "user_list":
                flat = [
                    _ads_list_fields(x, rate)
                    for x in self.store.lists.values()
                    if x.customer_id == customer_id
                ]
            else:
                flat = [
                    _ads_job_fields(j, rate) for j in self.store.jobs.values() if j.customer_id == customer_id
                ]
        rows = parsed.run(flat)
        return [ads_search.GoogleAdsRow(_nest(row, parsed.fields)) for row in rows], parsed.fields


# --- Ads helpers ------------------------------------------------------------------------------------


def _ads_customer(customer_id: str) -> str:
    if not CUSTOMER_ID.fullmatch(customer_id):
        raise _fail(
            "request_error",
            "INVALIDCUSTOMER_ID",
            "The customer ID is not valid (10 digits, no dashes).",
            [("customer_id", None)],
        )
    return customer_id


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
            if is_rejected(entry, rejected):
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
    if not HEX64.fullmatch(value):
        raise _fail(
            "offline_user_data_job_error",
            "INVALID_SHA256_FORMAT",
            "The SHA256 encoded value is malformed (64 lowercase hex characters expected).",
            path,
        )
