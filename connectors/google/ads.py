"""The Google Ads API backend (``google-ads``): CRM-based user lists and OfflineUserDataJobs.

The API version is the destination's ``api_version`` (default: the newest google-ads 34.x ships,
``connectors/google/settings.py``); clients, request types and the exception interceptor all use it.

Each ``add``/``remove`` call creates one job per consent group (removes: one job), adds the members in
one ``AddOfflineUserDataJobOperations`` request with partial failure on, runs the job, and returns the
job's resource name as the pending handle; ``follow`` polls the job's status with GAQL, so a job that
takes hours is followed across runs and restarts.

The service clients are built as ``GoogleAdsClient.get_service`` builds them (a gRPC channel
intercepted by the client's metadata and exception interceptors, so ``developer-token`` and
``login-customer-id`` are sent and failures surface as ``GoogleAdsException`` with their request id),
except that the channel comes from ``transport.make_channel``: plaintext for the emulator, TLS with
credentials otherwise. The client's logging interceptor is left out: at WARNING it logs failed
requests with their payload, hashed identifiers included.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from audiencesync.connectors import contract
from audiencesync.connectors.errors import AudienceGone, ConnectorError
from audiencesync.connectors.google import payload as gp
from audiencesync.connectors.google.settings import SETTINGS
from audiencesync.connectors.google.transport import Account, Retrier, Tuning, make_channel, poll
from google.ads.googleads.errors import GoogleAdsException
from google.ads.googleads.interceptors import ExceptionInterceptor, MetadataInterceptor
from google.api_core import exceptions as core

SERVICE = "the Google Ads API"


class _AdsApi:
    """The generated modules of one Google Ads API version (``google.ads.googleads.<version>``)."""

    def __init__(self, version: str) -> None:
        def load(name: str) -> Any:
            return importlib.import_module(f"google.ads.googleads.{version}.{name}")

        self.version = version
        services = "services.services"
        self.lists = load(f"{services}.user_list_service")
        self.lists_transport = load(f"{services}.user_list_service.transports")
        self.jobs = load(f"{services}.offline_user_data_job_service")
        self.jobs_transport = load(f"{services}.offline_user_data_job_service.transports")
        self.search = load(f"{services}.google_ads_service")
        self.search_transport = load(f"{services}.google_ads_service.transports")
        self.list_types = load("services.types.user_list_service")
        self.job_types = load("services.types.offline_user_data_job_service")
        self.search_types = load("services.types.google_ads_service")
        self.jobs_resource = load("resources.types.offline_user_data_job")

    def convert(self, message: Any, target: Any) -> Any:
        """``message`` (built by ``google.payload`` on one version's types) as ``target``, this version's
        type of the same message: Google Ads keeps field numbers stable across versions (protos in
        google/ads/googleads/vNN), so the wire bytes carry over."""
        if type(message) is target:
            return message
        return target.deserialize(type(message).serialize(message))


DEFAULT_HOST = "googleads.googleapis.com"
EMULATOR_DEVELOPER_TOKEN = "emulator-developer-token"


def _classify(exc: Exception) -> ConnectorError | None:
    if isinstance(exc, GoogleAdsException):
        return gp.classify_ads_failure(exc.failure, exc.request_id)
    if isinstance(exc, core.GoogleAPICallError):
        return gp.classify_api_error(exc, service=SERVICE)
    return None


def _classify_run(exc: Exception) -> ConnectorError | None:
    """As ``_classify``, except that JOB_ALREADY_STARTED is passed through unmapped (None)."""
    if isinstance(exc, GoogleAdsException) and any(
        gp.ads_error_code(e) == ("offline_user_data_job_error", "JOB_ALREADY_STARTED")
        for e in exc.failure.errors
    ):
        return None
    return _classify(exc)


class GoogleAdsBackend:
    """Customer Match through the Google Ads API, for one customer id."""

    def __init__(self, dest: contract.DestinationConfig, tuning: Tuning) -> None:
        settings = dest.settings
        self._account = account = Account.of(settings)
        self._tuning = tuning
        self._retrier = Retrier(tuning)
        token = dest.secrets.get("developer_token") or (EMULATOR_DEVELOPER_TOKEN if dest.is_emulated else "")
        self._api = api = _AdsApi(str(SETTINGS.value(settings, "api_version")))
        self._channel = make_channel(dest, DEFAULT_HOST, [gp.ADS_SCOPE])
        channel = grpc.intercept_channel(
            self._channel,
            MetadataInterceptor(token, account.login_customer_id, None),
            # Reads the GoogleAdsFailure from google.ads.googleads.<version>.errors.googleadsfailure-bin.
            ExceptionInterceptor(api.version, use_proto_plus=True),
        )
        self._lists = api.lists.UserListServiceClient(
            transport=api.lists_transport.UserListServiceGrpcTransport(channel=channel)
        )
        self._jobs = api.jobs.OfflineUserDataJobServiceClient(
            transport=api.jobs_transport.OfflineUserDataJobServiceGrpcTransport(channel=channel)
        )
        self._search = api.search.GoogleAdsServiceClient(
            transport=api.search_transport.GoogleAdsServiceGrpcTransport(channel=channel)
        )
        # AddOperations must never run concurrently for one list (CONCURRENT_MODIFICATION).
        self._list_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._last_job: dict[str, tuple[str, contract.HandleStatus]] = {}
        """Per list: the newest job this connector followed or left unrun, and its status."""
        self._refused: dict[str, tuple[int, int]] = {}
        """Per job this connector uploaded: (operations refused by partial failure, operations sent).
        Google's job status never says; kept so ``follow`` in the same run can."""

    def close(self) -> None:
        self._channel.close()

    # --- lists -------------------------------------------------------------------------------------

    def list_by_id(self, list_id: str) -> Any:
        """The ``UserList`` with this id; ``AudienceGone`` when the customer has none."""
        rows = self._query(gp.gaql_user_list_by_id(list_id))
        if not rows:
            raise AudienceGone(
                f"user list {list_id} does not exist in customer {self._account.customer_id} or cannot be "
                "seen: remove its id from audience_ids (or state) so a new one is created",
                code="USER_LIST_NOT_FOUND",
            )
        return rows[0].user_list

    def list_by_name(self, name: str) -> Any:
        """The ``UserList`` of this name, or None."""
        for row in self._query(gp.gaql_user_list_by_name(name)):
            if row.user_list.name == name:
                return row.user_list
        return None

    def create_list(self, spec: contract.AudienceSpec) -> str:
        """A new CRM-based list for ``spec``; its id."""
        operation = gp.ads_user_list_operation(spec.name, spec.description, self._account.life_span_days)
        request = self._api.list_types.MutateUserListsRequest(
            customer_id=self._account.customer_id,
            operations=[self._api.convert(operation, self._api.list_types.UserListOperation)],
        )
        response = self._rpc(
            "MutateUserLists", lambda: self._lists.mutate_user_lists(request=request, **self._opts())
        )
        return str(response.results[0].resource_name).rsplit("/", 1)[-1]

    @staticmethod
    def unusable_kind(user_list: Any) -> str | None:
        """What keeps the list from taking contact info, or None."""
        key_type = gp.enum_name(user_list.crm_based_user_list.upload_key_type)
        if key_type not in ("CONTACT_INFO", "UNSPECIFIED", "0"):
            return f"is a {key_type} list, not CONTACT_INFO"
        return None

    # --- members -----------------------------------------------------------------------------------

    def push(
        self, audience_id: str, batch: Sequence[contract.Change], *, remove: bool
    ) -> contract.PushResult:
        mark = self._retrier.log.mark()
        sendable, refused = gp.screen(batch)
        result = contract.PushResult(rejected=refused)
        groups: list[tuple[bool | None, list[contract.Change]]]
        if remove:
            groups = [(None, sendable)] if sendable else []
        else:
            split = gp.split_by_consent(sendable)
            for change in split.denied:
                result.rejected[change.member_key] = gp.CONSENT_DENIED_REASON
            groups = split.groups()
        jobs: list[dict[str, object]] = []
        with self._lock_for(audience_id):
            for consent, members in groups:
                for start in range(0, len(members), gp.MAX_BATCH):
                    chunk = members[start : start + gp.MAX_BATCH]
                    jobs.append(self._upload(audience_id, consent, chunk, remove, result))
        result.requests, others = self._retrier.log.since(mark)
        result.detail = {"rpcs": others, "jobs": jobs}
        return result

    def _upload(
        self,
        audience_id: str,
        consent: bool | None,
        members: list[contract.Change],
        remove: bool,
        result: contract.PushResult,
    ) -> dict[str, object]:
        """Create a job, add ``members`` with partial failure on, run it; returns the job's summary.
        A crash before the run leaves the members queued (they are marked in flight only when the
        push returns), and a job that never runs does nothing."""
        job_name = self._create_job(audience_id, consent)
        request = self._api.convert(
            gp.ads_operations_request(job_name, members, remove=remove),
            self._api.job_types.AddOfflineUserDataJobOperationsRequest,
        )
        response = self._retrier.call(
            "AddOfflineUserDataJobOperations",
            lambda: self._jobs.add_offline_user_data_job_operations(request=request, **self._opts()),
            _classify,
            carries_members=True,
        )
        failed = gp.partial_failure_reasons(response.partial_failure_error, members)
        result.rejected.update(failed)
        self._refused[job_name] = (len(failed), len(members))
        accepted = [c.member_key for c in members if c.member_key not in failed]
        summary: dict[str, object] = {
            "job": job_name,
            "consent": {True: "granted", None: "unspecified"}[consent],
            "sent": len(members),
            "partial_failures": len(failed),
            "run": bool(accepted),
        }
        if not accepted:
            # Running the job would upload nothing and still end SUCCESS. It is not run, and read_back
            # names it, since no handle will ever report it.
            self._note_job(audience_id, job_name, gp.ads_unrun_job_status(len(members)))
            return summary
        self._run_job(job_name)
        result.pending[job_name] = accepted
        return summary

    def _create_job(self, audience_id: str, consent: bool | None) -> str:
        create = self._api.job_types.CreateOfflineUserDataJobRequest(
            customer_id=self._account.customer_id,
            job=self._api.convert(
                gp.ads_job(gp.ads_list_resource(self._account.customer_id, audience_id), consent),
                self._api.jobs_resource.OfflineUserDataJob,
            ),
        )
        created = self._rpc(
            "CreateOfflineUserDataJob",
            lambda: self._jobs.create_offline_user_data_job(request=create, **self._opts()),
        )
        return str(created.resource_name)

    def _run_job(self, job_name: str) -> None:
        run = self._api.job_types.RunOfflineUserDataJobRequest(resource_name=job_name)
        # JOB_ALREADY_STARTED (passed through by _classify_run): an earlier attempt ran the job and its
        # answer was lost (a deadline or an outage after the server acted). The job runs, which is all
        # this call wants.
        with contextlib.suppress(GoogleAdsException):
            self._retrier.call(
                "RunOfflineUserDataJob",
                lambda: self._jobs.run_offline_user_data_job(request=run, **self._opts()),
                _classify_run,
            )

    def _lock_for(self, audience_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._list_locks.setdefault(audience_id, threading.Lock())

    # --- follow and read-back ----------------------------------------------------------------------

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]:
        statuses = poll(handles, self._job_status, self._tuning)
        for handle, status in statuses.items():
            if gp.is_job_handle(handle):
                self._note_job(audience_id, handle, status)
        return statuses

    def _job_status(self, handle: str) -> contract.HandleStatus:
        if not gp.is_job_handle(handle):
            # A Data Manager request id, from before the destination was switched: resend here.
            return contract.HandleStatus(
                "failed", detail="request of the data_manager backend; resent as a job"
            )
        rows = self._query(gp.gaql_job(handle, match_rate=True))
        refused, sent = self._refused.get(handle, (0, 0))
        return gp.ads_job_status(rows[0].offline_user_data_job if rows else None, refused=refused, sent=sent)

    def _note_job(self, audience_id: str, job_name: str, status: contract.HandleStatus) -> None:
        """Keep ``status`` as the list's last job unless a newer job (ids grow) is already kept."""
        kept = self._last_job.get(audience_id)
        if kept is None or gp.job_number(job_name) >= gp.job_number(kept[0]):
            self._last_job[audience_id] = (job_name, status)

    def read_back(self, audience_id: str) -> contract.PlatformStatus:
        rows = self._query(gp.gaql_user_list_by_id(audience_id))
        if not rows:
            raise AudienceGone(f"user list {audience_id} no longer exists", code="USER_LIST_NOT_FOUND")
        user_list = rows[0].user_list
        display, search = int(user_list.size_for_display), int(user_list.size_for_search)
        last_name, last = self._last_job.get(audience_id, ("", None))
        membership = gp.enum_name(user_list.membership_status)
        return contract.PlatformStatus(
            size_lower=max(display, search),
            size_upper=max(display, search),
            state=gp.list_state(membership, last, max(display, search), "job"),
            ready=last is None or last.state != "pending",
            detail={
                "size_for_display": display,
                "size_for_search": search,
                "match_rate_percentage": int(user_list.match_rate_percentage),
                "eligible_for_search": bool(user_list.eligible_for_search),
                "eligible_for_display": bool(user_list.eligible_for_display),
                "last_job": {
                    "job": last_name,
                    "state": last.state,
                    "detail": last.detail,
                    "rejected": last.rejected_count,
                }
                if last
                else None,
            },
        )

    # --- plumbing ----------------------------------------------------------------------------------

    def _query(self, query: str) -> list[Any]:
        """Every row of a GAQL search, each page fetched through the Retrier."""
        request = self._api.search_types.SearchGoogleAdsRequest(
            customer_id=self._account.customer_id, query=query
        )
        rows: list[Any] = []
        while True:
            page = self._rpc(
                "Search", lambda: next(iter(self._search.search(request=request, **self._opts()).pages))
            )
            rows.extend(page.results)
            if not page.next_page_token:
                return rows
            request.page_token = page.next_page_token

    def _opts(self) -> dict[str, Any]:
        # retry=None: the Retrier owns retries, within the run's wait budget.
        return {"retry": None, "timeout": self._tuning.timeout_seconds}

    def _rpc(self, method: str, fn: Callable[[], Any]) -> Any:
        return self._retrier.call(method, fn, _classify)
