"""The Data Manager API backend (``google-ads-datamanager``, gRPC transport).

No jobs and no developer token: each ingest or remove request carries up to 10,000 members and
returns a request id, which ``follow`` resolves with ``retrieve_request_status``. Requests fail whole
(fast-fail: developers.google.com/data-manager/api/devguides/concepts/understand-errors), so members are
checked before sending. When Google's error names members (``BadRequest.field_violations`` inside
``audience_members[i]``) those members are rejected with Google's reason and the rest resent; any other
error concerns the request (``ErrorInfo`` reason such as INVALID_USER_LIST_ID or
TERMS_AND_CONDITIONS_NOT_SIGNED) and stops the destination, rejecting no member.

Ingests declare the Customer Match terms ACCEPTED, and only for a destination whose config says
``accept_customer_match_terms = true``: the advertiser's attestation, never the tool's.

Lists are found or created by display name with the Data Manager ``UserListService``, with a
``membership_duration`` of ``membership_life_span_days``: Data Manager lists expire members like the
Ads API's lists do, so the connector's ``refresh_due_seconds`` applies to both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from audiencesync.connectors import contract
from audiencesync.connectors.errors import ConfigurationRejected, ConnectorError, FatalError
from audiencesync.connectors.google import payload as gp
from audiencesync.connectors.google.transport import Account, Retrier, Tuning, make_channel, poll
from google.ads import datamanager_v1 as dm
from google.ads.datamanager_v1.services.ingestion_service.transports import IngestionServiceGrpcTransport
from google.ads.datamanager_v1.services.user_list_service.transports import UserListServiceGrpcTransport
from google.api_core import exceptions as core

SERVICE = "the Data Manager API"
REJECTED_PREFIX = "Data Manager refused the member: "
DEFAULT_HOST = "datamanager.googleapis.com"


class _MembersRefused(ConnectorError):
    """Internal: Google named these members (request indices) as the reason the request failed."""

    def __init__(self, members: Mapping[int, str], request_id: str | None) -> None:
        super().__init__("members refused", request_id=request_id, code="INVALID_ARGUMENT")
        self.members = members


def _classify(exc: Exception) -> ConnectorError | None:
    if isinstance(exc, core.GoogleAPICallError):
        return gp.classify_api_error(exc, service=SERVICE)
    return None


def _classify_send(exc: Exception) -> ConnectorError | None:
    if isinstance(exc, core.GoogleAPICallError) and not isinstance(exc, gp.TRANSIENT_EXCEPTIONS):
        found = gp.dm_error(exc)
        if found.members:
            return _MembersRefused(found.members, gp.grpc_request_id(exc))
        return gp.classify_dm_request_error(exc, service=SERVICE)
    return _classify(exc)


def _classify_status(exc: Exception) -> ConnectorError | None:
    """As ``_classify``, except that NotFound (a request id Data Manager no longer knows) passes
    through unmapped, for ``_status`` to answer."""
    if isinstance(exc, core.NotFound):
        return None
    return _classify(exc)


class DataManagerBackend:
    """Customer Match through the Data Manager API, for one operating account."""

    def __init__(self, dest: contract.DestinationConfig, tuning: Tuning) -> None:
        self._account = Account.of(dest.settings)
        self._terms_accepted = dest.settings.get("accept_customer_match_terms") is True
        self._tuning = tuning
        self._retrier = Retrier(tuning)
        self._channel = make_channel(dest, DEFAULT_HOST, [gp.DM_SCOPE])
        self._ingest = dm.IngestionServiceClient(
            transport=IngestionServiceGrpcTransport(channel=self._channel)
        )
        self._lists = dm.UserListServiceClient(transport=UserListServiceGrpcTransport(channel=self._channel))
        # The login (manager) account is a header on UserListService calls; ingestion names it in the
        # destination instead.
        self._metadata: tuple[tuple[str, str], ...] = (
            (("login-account", gp.dm_parent(self._account.login_customer_id)),)
            if self._account.login_customer_id
            else ()
        )
        self._last_status: dict[str, contract.HandleStatus] = {}
        self._sent_order: dict[str, int] = {}
        """Request id -> how many requests this connector had sent before it: Data Manager request ids
        carry no order, so this is how ``follow`` knows which is the latest."""

    def close(self) -> None:
        self._channel.close()

    # --- lists -------------------------------------------------------------------------------------

    def list_by_id(self, list_id: str) -> dm.UserList:
        """The ``UserList`` with this id (NotFound is mapped to ``AudienceGone``)."""
        name = gp.dm_list_name(self._account.customer_id, list_id)
        found: dm.UserList = self._rpc(
            "GetUserList", lambda: self._lists.get_user_list(name=name, **self._opts())
        )
        return found

    def create_list(self, spec: contract.AudienceSpec) -> str:
        """A new Customer Match contact list for ``spec``; its id."""
        request = dm.CreateUserListRequest(
            parent=gp.dm_parent(self._account.customer_id),
            user_list=gp.dm_user_list(spec.name, spec.description, self._account.life_span_days),
        )
        created = self._rpc(
            "CreateUserList", lambda: self._lists.create_user_list(request=request, **self._opts())
        )
        return str(created.id)

    def list_by_name(self, name: str) -> dm.UserList | None:
        """The ``UserList`` of this display name, or None."""
        request = dm.ListUserListsRequest(
            parent=gp.dm_parent(self._account.customer_id), filter=gp.dm_name_filter(name), page_size=1000
        )
        while True:
            page = self._rpc(
                "ListUserLists",
                lambda: next(iter(self._lists.list_user_lists(request=request, **self._opts()).pages)),
            )
            # The filter already asks for the name; checking again keeps a lenient server honest.
            for user_list in page.user_lists:
                if user_list.display_name == name:
                    found: dm.UserList = user_list
                    return found
            if not page.next_page_token:
                return None
            request.page_token = page.next_page_token

    @staticmethod
    def unusable_kind(user_list: dm.UserList) -> str | None:
        """What keeps the list from taking contact info, or None."""
        return None if gp.dm_is_contact_list(user_list) else "is not a Customer Match contact list"

    # --- members -----------------------------------------------------------------------------------

    def push(
        self, audience_id: str, batch: Sequence[contract.Change], *, remove: bool
    ) -> contract.PushResult:
        if not remove and not self._terms_accepted:
            raise ConfigurationRejected(
                "Data Manager takes Customer Match uploads only with the terms accepted: set "
                "accept_customer_match_terms = true in this destination if the advertiser accepts them",
                code="accept_customer_match_terms",
            )
        mark = self._retrier.log.mark()
        sendable, refused = gp.screen(batch)
        result = contract.PushResult(rejected=refused)
        destination = gp.dm_destination(
            self._account.customer_id, self._account.login_customer_id, audience_id
        )
        for start in range(0, len(sendable), gp.MAX_BATCH):
            self._send_rejecting(destination, sendable[start : start + gp.MAX_BATCH], remove, result)
        result.requests, others = self._retrier.log.since(mark)
        result.detail = {
            "rpcs": others,
            "google_rejections": sum(1 for r in result.rejected.values() if r.startswith(REJECTED_PREFIX)),
        }
        return result

    def _send_rejecting(
        self,
        destination: dm.Destination,
        changes: Sequence[contract.Change],
        remove: bool,
        result: contract.PushResult,
    ) -> None:
        """Send ``changes``; while Google names members as the reason a request failed, reject those and
        resend the rest (one more request per refusal). Any other error propagates."""
        remaining = list(changes)
        while remaining:
            try:
                request_id = self._send(destination, remaining, remove)
            except _MembersRefused as refused:
                named = {i for i in refused.members if 0 <= i < len(remaining)}
                if not named:
                    raise FatalError(
                        f"{SERVICE} named members outside the request", request_id=refused.request_id
                    ) from None
                for i in named:
                    result.rejected[remaining[i].member_key] = f"{REJECTED_PREFIX}{refused.members[i]}"
                remaining = [c for i, c in enumerate(remaining) if i not in named]
                continue
            result.pending.setdefault(request_id, []).extend(c.member_key for c in remaining)
            self._sent_order.setdefault(request_id, len(self._sent_order))
            return

    def _send(self, destination: dm.Destination, changes: Sequence[contract.Change], remove: bool) -> str:
        method: str
        send: Callable[..., Any]
        request: Any
        if remove:
            method, send = "RemoveAudienceMembers", self._ingest.remove_audience_members
            request = gp.dm_remove_request(destination, changes)
        else:
            method, send = "IngestAudienceMembers", self._ingest.ingest_audience_members
            request = gp.dm_ingest_request(destination, changes)
        response = self._retrier.call(
            method,
            lambda: send(request=request, **self._opts(login=False)),
            _classify_send,
            carries_members=True,
        )
        return str(response.request_id)

    # --- follow and read-back ----------------------------------------------------------------------

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]:
        statuses = poll(handles, self._status, self._tuning)
        if statuses:
            # The latest this connector sent; requests of earlier runs (no order known) only when it
            # sent none of them, the last one asked about then.
            latest = max(reversed(list(statuses)), key=lambda h: self._sent_order.get(h, -1))
            self._last_status[audience_id] = statuses[latest]
        return statuses

    def _status(self, handle: str) -> contract.HandleStatus:
        if gp.is_job_handle(handle):
            # Sent by the google_ads backend before the destination was switched: its members are
            # queued again and resent here (adds and removes are idempotent).
            return contract.HandleStatus(
                "failed", detail="job of the google_ads backend; resent through Data Manager"
            )
        request = dm.RetrieveRequestStatusRequest(request_id=handle)
        try:
            response = self._retrier.call(
                "RetrieveRequestStatus",
                lambda: self._ingest.retrieve_request_status(request=request, **self._opts(login=False)),
                _classify_status,
            )
        except core.NotFound:
            return contract.HandleStatus("failed", detail="request id unknown to Data Manager; resent")
        return gp.dm_handle_status(response)

    def read_back(self, audience_id: str) -> contract.PlatformStatus:
        found = self.list_by_id(audience_id)
        sizes = found.size_info
        size = max(int(sizes.display_network_members_count), int(sizes.search_network_members_count))
        last = self._last_status.get(audience_id)
        membership = gp.enum_name(found.membership_status) if "membership_status" in found else "OPEN"
        match_rate = int(found.ingested_user_list_info.contact_id_info.match_rate_percentage)
        return contract.PlatformStatus(
            size_lower=size,
            size_upper=size,
            state=gp.list_state(membership, last, size, "request"),
            ready=last is None or last.state != "pending",
            detail={
                "display_network_members": int(sizes.display_network_members_count),
                "search_network_members": int(sizes.search_network_members_count),
                "youtube_members": int(sizes.youtube_members_count),
                "gmail_members": int(sizes.gmail_members_count),
                "match_rate_percentage": match_rate,
                "eligible_for_search": bool(found.target_network_info.eligible_for_search),
                "eligible_for_display": bool(found.target_network_info.eligible_for_display),
                "last_request": {"state": last.state, "detail": last.detail, "rejected": last.rejected_count}
                if last
                else None,
            },
        )

    # --- plumbing ----------------------------------------------------------------------------------

    def _opts(self, *, login: bool = True) -> dict[str, Any]:
        # retry=None: the generated client would otherwise retry UNAVAILABLE itself for two minutes,
        # outside the wait budget; the Retrier owns retries.
        return {
            "retry": None,
            "timeout": self._tuning.timeout_seconds,
            "metadata": self._metadata if login else (),
        }

    def _rpc(self, method: str, fn: Callable[[], Any]) -> Any:
        return self._retrier.call(method, fn, _classify)
