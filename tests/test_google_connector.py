"""GoogleConnector without a socket: partial-failure decoding, job and request status, the error
table, and each backend's push logic against stand-in service clients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audiencesync.connectors.contract import Change, DestinationConfig, HandleStatus
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    ConfigurationRejected,
    FatalError,
    PermissionDenied,
    TransientError,
)
from audiencesync.connectors.google import payload as gp
from audiencesync.connectors.google.connector import GoogleConnector
from audiencesync.connectors.google.transport import normalized_target, refresh_seconds
from google.ads import datamanager_v1 as dm
from google.ads.googleads.errors import GoogleAdsException
from google.ads.googleads.v24.errors.types.errors import ErrorCode, GoogleAdsError, GoogleAdsFailure
from google.ads.googleads.v24.resources.types.offline_user_data_job import OfflineUserDataJob
from google.api_core import exceptions as core
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from google_samples import CUSTOMER, JOB, as_dict, change, connector, destination, dm_status, h

# --- partial failures, job status -------------------------------------------------------------------


def ads_error(which: str, name: str, index: int | None = None, message: str = "") -> GoogleAdsError:
    code = ErrorCode()
    enum_type = type(getattr(code, which))
    setattr(code, which, getattr(enum_type, name))
    error = GoogleAdsError(error_code=code, message=message)
    if index is not None:
        error.location.field_path_elements.append({"field_name": "operations", "index": index})
        error.location.field_path_elements.append({"field_name": "create"})
    return error


def partial_status(*errors: GoogleAdsError) -> status_pb2.Status:
    failure = GoogleAdsFailure(errors=list(errors))
    detail = any_pb2.Any(
        type_url="type.googleapis.com/google.ads.googleads.v24.errors.GoogleAdsFailure",
        value=GoogleAdsFailure.serialize(failure),
    )
    return status_pb2.Status(code=3, message="partial", details=[detail])


def test_partial_failure_indexes_map_back_to_members_without_their_values() -> None:
    batch = [change(0), change(1), change(2)]
    status = partial_status(
        ads_error("offline_user_data_job_error", "INVALID_SHA256_FORMAT", 2, message=f"bad {h('x')}"),
        ads_error("collection_size_error", "TOO_MANY", 0),
    )
    reasons = gp.partial_failure_reasons(status, batch)
    assert reasons == {
        b"m2": "offline_user_data_job_error.INVALID_SHA256_FORMAT",
        b"m0": "collection_size_error.TOO_MANY",
    }
    assert gp.partial_failure_reasons(status_pb2.Status(), batch) == {}


def test_ads_job_status_outcomes() -> None:
    job = OfflineUserDataJob(resource_name=JOB)
    job.status = type(job.status).SUCCESS
    assert gp.ads_job_status(job).state == "confirmed"
    job.operation_metadata.match_rate_range = type(
        job.operation_metadata.match_rate_range
    ).MATCH_RANGE_LESS_THAN_20
    assert "few or none" in gp.ads_job_status(job).detail
    assert gp.ads_job_status(job, refused=2, sent=5) == HandleStatus(
        "confirmed",
        rejected_count=2,
        detail="SUCCESS match rate MATCH_RANGE_LESS_THAN_20 (few or none of the uploaded people matched)"
        "; 2 of 5 operations refused at upload",
    )
    assert gp.ads_unrun_job_status(3) == HandleStatus(
        "failed", rejected_count=3, detail="not run: all 3 operations refused at upload"
    )
    job.status = type(job.status).FAILED
    job.failure_reason = type(job.failure_reason).INSUFFICIENT_MATCHED_TRANSACTIONS
    assert gp.ads_job_status(job) == HandleStatus("failed", detail="FAILED INSUFFICIENT_MATCHED_TRANSACTIONS")
    for state in ("PENDING", "RUNNING"):
        job.status = getattr(type(job.status), state)
        assert gp.ads_job_status(job) == HandleStatus("pending", detail=state)
    assert gp.ads_job_status(None).state == "failed"


# --- error table ------------------------------------------------------------------------------------


def test_not_allowlisted_is_a_configuration_error_naming_the_data_manager_backend() -> None:
    failure = GoogleAdsFailure(errors=[ads_error("not_allowlisted_error", gp.NOT_ALLOWLISTED)])
    error = gp.classify_ads_failure(failure, "req-1")
    assert isinstance(error, ConfigurationRejected)
    assert 'backend = "data_manager"' in str(error) and "req-1" in str(error)


@pytest.mark.parametrize(
    ("which", "name", "error_class"),
    [
        ("database_error", "CONCURRENT_MODIFICATION", TransientError),
        ("quota_error", "RESOURCE_TEMPORARILY_EXHAUSTED", TransientError),
        ("quota_error", "RESOURCE_EXHAUSTED", FatalError),
        ("authentication_error", "NOT_ADS_USER", AuthError),
        ("authorization_error", "USER_PERMISSION_DENIED", PermissionDenied),
        ("offline_user_data_job_error", "INVALID_USER_LIST_ID", AudienceGone),
        ("mutate_error", "RESOURCE_NOT_FOUND", AudienceGone),
        ("offline_user_data_job_error", "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", PermissionDenied),
        ("field_error", "REQUIRED", FatalError),
    ],
)
def test_each_ads_error_maps_to_its_class(which: str, name: str, error_class: type) -> None:
    error = gp.classify_ads_failure(GoogleAdsFailure(errors=[ads_error(which, name, message=h("x"))]), "rid")
    assert type(error) is error_class
    assert error.request_id == "rid" and error.code == f"{which}.{name}"
    assert h("x") not in str(error)


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (core.ResourceExhausted("quota"), TransientError),
        (core.ServiceUnavailable("down"), TransientError),
        (core.InternalServerError("oops"), TransientError),
        (core.DeadlineExceeded("slow"), TransientError),
        (core.Unauthenticated("who"), AuthError),
        (core.PermissionDenied("no"), PermissionDenied),
        (core.NotFound("gone"), AudienceGone),
        (core.FailedPrecondition("terms"), ConfigurationRejected),
        (core.InvalidArgument("bad"), FatalError),
    ],
)
def test_grpc_errors_map_to_their_class(exc: core.GoogleAPICallError, error_class: type) -> None:
    assert type(gp.classify_api_error(exc, service="svc")) is error_class


def test_members_with_a_malformed_hash_or_nothing_usable_are_caught_before_sending() -> None:
    assert gp.invalid_reason(change(1)) is None
    assert (
        gp.invalid_reason(Change(b"k", {"email": "Not-A-Hash"}))
        == "email is not a lowercase SHA-256 hex digest"
    )
    assert gp.invalid_reason(Change(b"k", {"country": "US", "zip": "10001"})) == gp.NO_IDENTIFIER_REASON


def test_refresh_is_lifespan_minus_margin_and_at_least_a_day() -> None:
    assert refresh_seconds({"membership_life_span_days": 540, "refresh_margin_days": 30}) == 510 * 86_400
    assert refresh_seconds({"membership_life_span_days": 10, "refresh_margin_days": 30}) == 86_400
    assert connector("google_ads").refresh_due_seconds() == 510 * 86_400
    assert connector("data_manager").refresh_due_seconds() == 510 * 86_400


def test_endpoint_targets() -> None:
    assert normalized_target(None, "datamanager.googleapis.com") == "datamanager.googleapis.com:443"
    assert normalized_target("127.0.0.1:8803", "x") == "127.0.0.1:8803"
    assert normalized_target("http://localhost:8803/", "x") == "localhost:8803"
    assert normalized_target("[::1]", "x") == "[::1]:443"


def test_capabilities_are_the_same_for_both_backends() -> None:
    for backend in ("data_manager", "google_ads"):
        caps = connector(backend).capabilities()
        assert caps.max_batch == 10_000 and caps.asynchronous
        assert caps.identifier_kinds == frozenset(
            {"email", "phone", "first_name", "last_name", "zip", "country"}
        )


# --- push logic against stand-in clients ------------------------------------------------------------


class _Response:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def _dm_invalid(reason: str, field: str | None = None) -> core.InvalidArgument:
    """An INVALID_ARGUMENT as Google's error model sends it: ErrorInfo reason, RequestInfo, and a
    BadRequest field violation when a field is at fault (Data Manager understand-errors page)."""
    details: list[Any] = [
        error_details_pb2.ErrorInfo(reason=reason, domain="datamanager.googleapis.com"),
        error_details_pb2.RequestInfo(request_id="req-failed"),
    ]
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, reason=reason)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    return core.InvalidArgument("invalid", details=details)


class FakeIngestion:
    """Refuses any request holding a member whose email is in ``bad``, naming the first such member's
    field path (Data Manager fails fast, whole request); ``request_error`` refuses every request with
    that request-level reason."""

    def __init__(self, bad: set[str], transient: int = 0, request_error: str | None = None) -> None:
        self.bad = bad
        self.transient = transient
        self.request_error = request_error
        self.requests: list[Any] = []

    def _answer(self, request: Any) -> _Response:
        self.requests.append(request)
        if self.transient:
            self.transient -= 1
            raise core.ResourceExhausted("quota")
        if self.request_error:
            raise _dm_invalid(self.request_error)
        for i, m in enumerate(request.audience_members):
            for j, ident in enumerate(m.user_data.user_identifiers):
                if ident.email_address in self.bad:
                    field = f"audience_members[{i}].user_data.user_identifiers[{j}].email_address"
                    raise _dm_invalid("INVALID_SHA256_FORMAT", field)
        return _Response(request_id=f"req-{len(self.requests)}")

    def ingest_audience_members(self, request: Any, **_: Any) -> _Response:
        return self._answer(request)

    def remove_audience_members(self, request: Any, **_: Any) -> _Response:
        return self._answer(request)


def test_data_manager_rejects_exactly_the_members_google_names_and_resends_the_rest() -> None:
    google = connector("data_manager")
    backend: Any = google._backend
    batch = [change(i) for i in range(16)]
    fake = FakeIngestion({batch[5].identifiers["email"], batch[11].identifiers["email"]})
    backend._ingest = fake
    result = google.add("555", batch, None)
    assert set(result.rejected) == {b"m5", b"m11"}
    assert all("INVALID_SHA256_FORMAT" in r for r in result.rejected.values())
    assert all(h("") not in r and "@" not in r for r in result.rejected.values())
    pending = sorted(k for keys in result.pending.values() for k in keys)
    assert pending == sorted(c.member_key for c in batch if c.member_key not in (b"m5", b"m11"))
    assert result.requests == len(fake.requests)
    # One request per member Google names, then the clean rest: no bisection.
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("INVALID_USER_LIST_ID", AudienceGone),
        ("INVALID_DESTINATION", ConfigurationRejected),
        ("TERMS_AND_CONDITIONS_NOT_SIGNED", ConfigurationRejected),
        ("INVALID_ARGUMENT", FatalError),
    ],
)
def test_a_request_level_error_stops_the_destination_in_one_request(
    reason: str, error: type[Exception]
) -> None:
    google = connector("data_manager")
    backend: Any = google._backend
    fake = FakeIngestion(set(), request_error=reason)
    backend._ingest = fake
    with pytest.raises(error) as caught:
        google.add("555", [change(i) for i in range(64)], None)
    assert len(fake.requests) == 1
    assert getattr(caught.value, "code", None) == reason
    assert getattr(caught.value, "request_id", None) == "req-failed"


def test_data_manager_refuses_to_ingest_without_the_declared_terms_acceptance() -> None:
    google = connector("data_manager", accept_customer_match_terms=None)
    backend: Any = google._backend
    fake = FakeIngestion(set())
    backend._ingest = fake
    with pytest.raises(ConfigurationRejected, match="accept_customer_match_terms"):
        google.add("555", [change(1)], None)
    assert fake.requests == []
    # Removes carry no terms (RemoveAudienceMembersRequest has no such field) and still go out.
    assert google.remove("555", [change(1)], None).pending


def test_data_manager_retries_quota_errors_and_counts_every_attempt() -> None:
    google = connector("data_manager")
    backend: Any = google._backend
    fake = FakeIngestion(set(), transient=2)
    backend._ingest = fake
    result = google.remove("555", [change(1), change(2)], None)
    assert result.pending == {"req-3": [b"m1", b"m2"]}
    assert result.requests == 3


def test_data_manager_read_back_names_the_request_sent_last_not_the_highest_id() -> None:
    """Data Manager request ids carry no order; the connector's own sending order does."""
    google = connector("data_manager")
    backend: Any = google._backend
    fake = FakeIngestion(set())
    answers = iter([_Response(request_id="req-z"), _Response(request_id="req-a")])
    fake._answer = lambda request: next(answers)  # type: ignore[method-assign]
    fake.retrieve_request_status = lambda request, **_: dm_status(  # type: ignore[attr-defined]
        "FAILED" if request.request_id == "req-z" else "SUCCESS"
    )
    backend._ingest = fake
    backend._lists = _Response(get_user_list=lambda **_: dm.UserList(display_name="vip"))
    handles = [h for c in (change(1), change(2)) for h in google.add("555", [c], None).pending]
    assert handles == ["req-z", "req-a"]
    google.follow("555", sorted(handles))
    assert google.read_back("555").state.startswith("OPEN; last request SUCCESS")


def test_the_wait_budget_spans_every_call_of_the_run() -> None:
    slept: list[float] = []
    google = GoogleConnector(
        destination("data_manager", max_wait_seconds=1),
        backoff_initial=0.2,
        backoff_max=0.2,
        sleep=slept.append,
    )
    backend: Any = google._backend
    fake = FakeIngestion(set(), transient=1_000)
    backend._ingest = fake
    with pytest.raises(TransientError) as info:
        google.add("555", [change(1)], None)
    assert info.value.retry_after is not None
    assert 0 < sum(slept) <= 1.0
    first = len(fake.requests)
    with pytest.raises(TransientError):
        google.add("555", [change(2)], None)
    assert len(fake.requests) - first <= 2  # the budget is spent: at most one more short wait


class FakeJobs:
    """Records the Ads job RPCs; ``fail`` maps an email to a partial-failure error code."""

    def __init__(
        self, fail: dict[str, tuple[str, str]] | None = None, raise_on_create: Exception | None = None
    ):
        self.fail = fail or {}
        self.raise_on_create = raise_on_create
        self.created: list[Any] = []
        self.added: list[Any] = []
        self.ran: list[str] = []

    def create_offline_user_data_job(self, request: Any, **_: Any) -> _Response:
        if self.raise_on_create is not None:
            raise self.raise_on_create
        self.created.append(request)
        return _Response(resource_name=f"customers/{CUSTOMER}/offlineUserDataJobs/{len(self.created)}")

    def add_offline_user_data_job_operations(self, request: Any, **_: Any) -> _Response:
        self.added.append(request)
        errors = []
        for index, op in enumerate(request.operations):
            data = op.remove if "remove" in op else op.create
            email = data.user_identifiers[0].hashed_email
            if email in self.fail:
                errors.append(ads_error(*self.fail[email], index))
        return _Response(partial_failure_error=partial_status(*errors) if errors else status_pb2.Status())

    def run_offline_user_data_job(self, request: Any, **_: Any) -> None:
        self.ran.append(request.resource_name)


def test_ads_add_makes_one_job_per_consent_state_and_rejects_denied() -> None:
    google = connector("google_ads")
    backend: Any = google._backend
    jobs = FakeJobs(
        fail={change(4).identifiers["email"]: ("offline_user_data_job_error", "INVALID_SHA256_FORMAT")}
    )
    backend._jobs = jobs
    batch = [change(1, True), change(2, None), change(3, False), change(4, True)]
    result = google.add("555", batch, None)
    consents = [as_dict(r.job)["customer_match_user_list_metadata"].get("consent") for r in jobs.created]
    assert consents == [{"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}, None]
    assert result.pending == {
        f"customers/{CUSTOMER}/offlineUserDataJobs/1": [b"m1"],
        f"customers/{CUSTOMER}/offlineUserDataJobs/2": [b"m2"],
    }
    assert result.rejected == {
        b"m3": gp.CONSENT_DENIED_REASON,
        b"m4": "offline_user_data_job_error.INVALID_SHA256_FORMAT",
    }
    assert all(r.enable_partial_failure for r in jobs.added)
    assert jobs.ran == list(result.pending)
    assert result.requests == 2  # AddOperations only; the rest are in detail
    assert result.detail["rpcs"] == {"CreateOfflineUserDataJob": 2, "RunOfflineUserDataJob": 2}


def test_ads_remove_is_one_job_without_consent_even_for_denied_members() -> None:
    google = connector("google_ads")
    backend: Any = google._backend
    jobs = FakeJobs()
    backend._jobs = jobs
    result = google.remove("555", [change(1, False), change(2, True)], None)
    assert len(jobs.created) == 1
    assert "consent" not in as_dict(jobs.created[0].job)["customer_match_user_list_metadata"]
    assert all("remove" in op for op in jobs.added[0].operations)
    assert result.pending == {f"customers/{CUSTOMER}/offlineUserDataJobs/1": [b"m1", b"m2"]}


def test_an_ads_job_whose_every_operation_failed_is_not_run() -> None:
    google = connector("google_ads")
    backend: Any = google._backend
    jobs = FakeJobs(fail={change(1).identifiers["email"]: ("user_data_error", "TOO_MANY_USER_IDENTIFIERS")})
    backend._jobs = jobs
    result = google.add("555", [change(1)], None)
    assert jobs.ran == [] and result.pending == {}
    assert result.rejected == {b"m1": "user_data_error.TOO_MANY_USER_IDENTIFIERS"}


def _ads_exception(which: str, name: str) -> GoogleAdsException:
    failure = GoogleAdsFailure(errors=[ads_error(which, name)])
    return GoogleAdsException(None, None, failure, "req-42")  # type: ignore[arg-type]


def test_ads_not_allowlisted_stops_the_push_with_its_own_message() -> None:
    google = connector("google_ads")
    backend: Any = google._backend
    backend._jobs = FakeJobs(raise_on_create=_ads_exception("not_allowlisted_error", gp.NOT_ALLOWLISTED))
    with pytest.raises(ConfigurationRejected, match='backend = "data_manager"') as info:
        google.add("555", [change(1)], None)
    assert info.value.request_id == "req-42"


def test_ads_concurrent_modification_is_retried() -> None:
    google = connector("google_ads")
    backend: Any = google._backend
    jobs = FakeJobs()
    original: Callable[..., Any] = jobs.add_offline_user_data_job_operations
    failures = [_ads_exception("database_error", "CONCURRENT_MODIFICATION")]

    def flaky(request: Any, **kw: Any) -> Any:
        if failures:
            raise failures.pop()
        return original(request, **kw)

    jobs.add_offline_user_data_job_operations = flaky  # type: ignore[method-assign]
    backend._jobs = jobs
    result = google.add("555", [change(1)], None)
    assert result.requests == 2 and list(result.pending.values()) == [[b"m1"]]


def test_handles_of_the_other_backend_fail_so_their_members_are_resent() -> None:
    dm_side = connector("data_manager").follow("555", [JOB])
    assert dm_side[JOB].state == "failed"
    ads_side = connector("google_ads").follow("555", ["req-1"])
    assert ads_side["req-1"].state == "failed"


def test_a_job_already_started_by_a_lost_attempt_counts_as_run() -> None:
    google = connector("google_ads")
    backend: Any = google._backend
    jobs = FakeJobs()
    calls: list[str] = []

    def run(request: Any, **_: Any) -> None:
        calls.append(request.resource_name)
        if len(calls) == 1:
            raise core.DeadlineExceeded("answer lost")
        raise _ads_exception("offline_user_data_job_error", "JOB_ALREADY_STARTED")

    jobs.run_offline_user_data_job = run  # type: ignore[method-assign]
    backend._jobs = jobs
    result = google.add("555", [change(1)], None)
    assert len(calls) == 2
    assert result.pending == {f"customers/{CUSTOMER}/offlineUserDataJobs/1": [b"m1"]}


def test_read_back_state_says_when_a_successful_upload_left_the_list_empty() -> None:
    ok = HandleStatus("confirmed", detail="SUCCESS")
    assert gp.list_state("OPEN", None, 0, "job") == "OPEN"
    assert gp.list_state("OPEN", ok, 120, "job") == "OPEN; last job SUCCESS"
    assert "empty after a successful upload" in gp.list_state("OPEN", ok, 0, "job")
    assert "empty" not in gp.list_state("OPEN", HandleStatus("pending", detail="RUNNING"), 0, "job")


def test_a_remote_endpoint_uses_the_configured_credentials_file(tmp_path: Path) -> None:
    """Any non-loopback endpoint means TLS and real credentials; building needs no network (gRPC dials
    on the first call)."""
    creds = tmp_path / "oauth.json"
    creds.write_text(
        '{"type": "authorized_user", "client_id": "id.apps.googleusercontent.com", '
        '"client_secret": "not-a-secret", "refresh_token": "not-a-token"}',
        encoding="utf-8",
    )
    for backend in ("data_manager", "google_ads"):
        dest = destination(backend, endpoint="proxy.example.test:443")
        dest = DestinationConfig(
            dest.name,
            dest.platform,
            dest.settings,
            {"credentials": str(creds), "developer_token": "dev-token"},
            dest.name_prefix,
            dest.base_dir,
        )
        assert not dest.is_emulated
        GoogleConnector(dest).close()


def test_a_missing_credentials_file_is_an_auth_error_naming_the_setting(tmp_path: Path) -> None:
    dest = destination("data_manager", endpoint="proxy.example.test:443")
    dest = DestinationConfig(
        dest.name, dest.platform, dest.settings, {"credentials": str(tmp_path / "nope.json")}, "p", Path(".")
    )
    with pytest.raises(AuthError, match="credentials_env"):
        GoogleConnector(dest)
