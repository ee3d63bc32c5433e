"""Meta (Facebook) Custom Audiences on the facebook-business SDK.

Requests go through ``FacebookAdsApi.call`` so the SDK owns URLs, the token and ``appsecret_proof``;
this module owns per-member outcomes, and retries what ``classify_error`` calls transient within
the connector's retry budget (``audiencesync.connectors.retry``). Payload building and error mapping
live in ``meta.payload``, which also lists the sources of every Meta rule; the rules no primary source
settles are under "Assumptions" in docs/setup-meta.md.

The Graph API version is the destination's ``api_version``, by default the version the installed
facebook-business SDK is built for. Meta's note that it auto-upgraded a call made with an expired
version (``X-Ad-Api-Version-Warning``) is logged once per connector and shown in ``read_back``; a
version Meta no longer serves (2635) stops the destination with ``ConfigurationRejected``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from audiencesync.connectors import contract
from audiencesync.connectors.audience_lookup import find_or_create
from audiencesync.connectors.errors import (
    AudienceGone,
    FatalError,
    PermissionDenied,
    SchemaMismatch,
    TransientError,
)
from audiencesync.connectors.meta import payload as mp
from audiencesync.connectors.meta.settings import API_VERSIONS, SETTINGS
from audiencesync.connectors.retry import Backoff, RetryBudget, max_wait_seconds
from facebook_business.api import FacebookAdsApi, FacebookResponse
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

EMULATOR_TOKEN = "emulator-token"
DEFAULT_API_VERSION = API_VERSIONS.default
log = logging.getLogger("audiencesync.connectors.meta.connector")
_AUDIENCE_FIELDS = "id,name,description,operation_status"
_STATUS_FIELDS = (
    "approximate_count_lower_bound,approximate_count_upper_bound,operation_status,delivery_status,"
    "time_content_updated"
)


class _TooSmall(Exception):
    """Internal: Meta refused a remove because the audience would become too small."""


class MetaConnector:
    """One Meta ad account. ``backoff_initial`` and ``timeout_seconds`` exist so tests can shrink waits."""

    def __init__(
        self,
        dest: contract.DestinationConfig,
        *,
        backoff_initial: float = 2.0,
        backoff_max: float = 120.0,
        timeout_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        settings = dest.settings
        token = dest.secrets.get("access_token") or (EMULATOR_TOKEN if dest.is_emulated else "")
        session = FacebookSession(
            access_token=token, app_secret=dest.secrets.get("app_secret"), timeout=timeout_seconds
        )
        if dest.endpoint:
            endpoint = dest.endpoint if "//" in dest.endpoint else f"http://{dest.endpoint}"
            session.GRAPH = endpoint.rstrip("/")
        self.api_version = str(SETTINGS.value(settings, "api_version"))
        self._sdk_session = session
        self._api = FacebookAdsApi(session, api_version=self.api_version)
        self.version_warning: str | None = None
        """Meta's last auto-upgrade note for ``api_version``, if it sent one."""
        account = str(settings["ad_account_id"])
        self._account = account if account.startswith("act_") else f"act_{account}"
        self._file_source = str(SETTINGS.value(settings, "customer_file_source"))
        self._retry = RetryBudget(
            "meta",
            max_wait_seconds(settings),
            Backoff(backoff_initial, backoff_max),
            sleep=sleep,
        )
        self._kinds: dict[str, tuple[str, ...]] = {}
        self._requests = 0

    def capabilities(self) -> contract.Capabilities:
        return contract.Capabilities(
            max_batch=mp.MAX_ROWS,
            identifier_kinds=frozenset(mp.SCHEMA_FIELDS),
            asynchronous=False,
            uses_sessions=True,
        )

    # --- audiences ---------------------------------------------------------------------------------

    def ensure_audience(self, spec: contract.AudienceSpec) -> str:
        """The known id (checked), else the audience found by name, else a new one. The schema is
        recorded in the description at creation and compared on every later find."""
        schema = mp.schema_for(spec.identifier_kinds)
        audience_id = find_or_create(
            spec,
            lookup=self._get_audience,
            find=self._find_by_name,
            id_of=lambda audience: str(audience["id"]),
            create=lambda: self._create_audience(spec, schema),
            check=lambda audience: self._check_schema(audience, schema),
        )
        self._kinds[audience_id] = tuple(spec.identifier_kinds)
        return audience_id

    def _get_audience(self, audience_id: str) -> Mapping[str, Any]:
        try:
            found = self._call("GET", (audience_id,), {"fields": _AUDIENCE_FIELDS})
        except PermissionDenied as exc:
            if exc.code != "100/33":
                raise
            # Meta answers a deleted object the same way as one we cannot see.
            raise AudienceGone(
                f"custom audience {audience_id} does not exist or this token cannot see it: if it "
                "was deleted, remove its id from audience_ids (or state) so a new one is created",
                request_id=exc.request_id,
                code=exc.code,
            ) from None
        status = found.get("operation_status")
        if isinstance(status, Mapping) and status.get("code") == mp.FLAGGED_OPERATION_STATUS:
            raise AudienceGone(
                "the custom audience is flagged by Meta (operation_status 471): remove its id from "
                "audience_ids (or state) so a new one is created",
                code="471",
            )
        return found

    def _create_audience(self, spec: contract.AudienceSpec, schema: list[str]) -> str:
        created = self._call(
            "POST",
            (self._account, "customaudiences"),
            {
                "name": spec.name,
                "subtype": "CUSTOM",
                "description": mp.with_schema_marker(spec.description, schema),
                "customer_file_source": self._file_source,
            },
        )
        return str(created["id"])

    def _find_by_name(self, name: str) -> Mapping[str, Any] | None:
        params: dict[str, Any] = {"fields": _AUDIENCE_FIELDS, "limit": 200}
        while True:
            page = self._call("GET", (self._account, "customaudiences"), params)
            for item in page.get("data") or []:
                if isinstance(item, Mapping) and item.get("name") == name:
                    return item
            cursors = (page.get("paging") or {}).get("cursors") or {}
            after = cursors.get("after")
            if not (page.get("paging") or {}).get("next") or not after:
                return None
            params = {**params, "after": after}

    @staticmethod
    def _check_schema(audience: Mapping[str, Any], schema: list[str]) -> None:
        recorded = mp.schema_in_description(audience.get("description"))
        if recorded is not None and recorded != schema:
            raise SchemaMismatch(
                f"audience {audience.get('id')} was created with schema {','.join(recorded)} but this sync "
                f"sends {','.join(schema)}: use a new audience name or align source.identifiers",
                code="schema",
            )

    # --- members -----------------------------------------------------------------------------------

    def add(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        return self._push(audience_id, batch, session, remove=False)

    def remove(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        return self._push(audience_id, batch, session, remove=True)

    def _push(
        self,
        audience_id: str,
        batch: Sequence[contract.Change],
        session: contract.SessionInfo | None,
        *,
        remove: bool,
    ) -> contract.PushResult:
        if not batch:
            return contract.PushResult()
        if len(batch) > mp.MAX_ROWS:
            raise ValueError(f"a Meta batch holds at most {mp.MAX_ROWS} members, got {len(batch)}")
        kinds = self._kinds.get(audience_id) or self._kinds_from_batch(batch)
        rows = mp.rows_for(batch, kinds)
        fields, payload = mp.users_request(kinds, rows, session)
        before = self._requests
        try:
            body = self._call(
                "DELETE" if remove else "POST",
                (audience_id, "users"),
                {},
                files={"payload": (None, payload), **{k: (None, v.encode()) for k, v in fields.items()}},
                detect_too_small=remove,
            )
        except _TooSmall:
            return contract.PushResult(
                rejected={c.member_key: mp.TOO_SMALL_REASON for c in batch},
                requests=self._requests - before,
                detail={"refused": mp.TOO_SMALL_REASON},
            )
        except FatalError as exc:
            if (
                session is None
                or type(exc) not in (FatalError, SchemaMismatch)
                or not mp.is_session_refusal(exc.code)
            ):
                raise
            # Meta would not take this batch in this session (closed, expired, or a batch_seq it
            # never saw): nothing was applied; the runner abandons the session and resends the batch
            # in a new one, where a real refusal of the batch shows again.
            return contract.PushResult(
                retry=[c.member_key for c in batch],
                requests=self._requests - before,
                detail={"session_refused": exc.code or "refused"},
            )
        if not mp.is_users_answer(body):
            # Not the success body Meta documents for /users: what became of the batch is unknown, so
            # nothing in it is called confirmed; it stays queued (maybe applied) for the next run.
            raise TransientError(
                "Meta answered /users without the documented success fields (num_received): the "
                "outcome of this batch is unknown; it stays queued for the next run"
            )
        outcomes = mp.row_outcomes(body, batch, kinds)
        return contract.PushResult(
            confirmed=outcomes.confirmed,
            rejected=outcomes.rejected,
            unverified=outcomes.unverified,
            reported_failures=outcomes.unnamed_failures,
            requests=self._requests - before,
            detail=outcomes.detail,
        )

    @staticmethod
    def _kinds_from_batch(batch: Sequence[contract.Change]) -> tuple[str, ...]:
        # Without ensure_audience in this process the schema can only come from the keys members carry,
        # in the canonical order; the runner always calls ensure_audience first, so this is a fallback.
        present = {k for c in batch for k in c.identifiers}
        return tuple(k for k in mp.SCHEMA_FIELDS if k in present)

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]:
        """Meta confirms /users requests synchronously, so nothing is ever pending."""
        return {h: contract.HandleStatus("confirmed") for h in handles}

    def refresh_due_seconds(self) -> float | None:
        """Meta states no membership lifespan for customer-list members: never re-sent for age."""
        return None

    def close(self) -> None:
        """Close the SDK session's HTTP connections (``FacebookSession.requests``)."""
        self._sdk_session.requests.close()

    def read_back(self, audience_id: str) -> contract.PlatformStatus:
        body = self._call("GET", (audience_id,), {"fields": _STATUS_FIELDS})
        operation = body.get("operation_status") if isinstance(body.get("operation_status"), Mapping) else {}
        delivery = body.get("delivery_status") if isinstance(body.get("delivery_status"), Mapping) else {}
        assert isinstance(operation, Mapping) and isinstance(delivery, Mapping)
        updated = body.get("time_content_updated")
        return contract.PlatformStatus(
            size_lower=_opt_int(body.get("approximate_count_lower_bound")),
            size_upper=_opt_int(body.get("approximate_count_upper_bound")),
            state=str(operation.get("description", "")),
            ready=operation.get("code") == 200,
            updated_at=float(updated)
            if isinstance(updated, int | float | str) and str(updated).isdigit()
            else None,
            detail={
                "operation_status": dict(operation),
                "delivery_status": dict(delivery),
                "api_version": self.api_version,
                **({"version_warning": self.version_warning} if self.version_warning else {}),
            },
        )

    # --- transport ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: tuple[str, ...],
        params: Mapping[str, Any],
        *,
        files: Mapping[str, tuple[None, bytes]] | None = None,
        detect_too_small: bool = False,
    ) -> Mapping[str, Any]:
        """One Graph API call, retried on transient answers while the connector's retry budget
        lasts (``audiencesync.connectors.retry``). ``files`` are sent as form fields of their own in
        the body (multipart/form-data; a ``None`` file name makes a plain field), for a DELETE as for
        a POST, where ``params`` of a DELETE would go in the URL."""
        return self._retry.call(
            f"{method} {path[-1] if path else ''}",
            lambda: self._once(method, path, dict(params), files, detect_too_small),
        )

    def _once(
        self,
        method: str,
        path: tuple[str, ...],
        params: dict[str, Any],
        files: Mapping[str, tuple[None, bytes]] | None,
        detect_too_small: bool,
    ) -> Mapping[str, Any]:
        self._requests += 1
        try:
            response: FacebookResponse = self._api.call(
                method, path, params=params, files=dict(files) if files else None
            )
        except FacebookRequestError as exc:
            self._note_version_warning(exc.http_headers())
            body = exc.body()
            error = body.get("error") if isinstance(body, Mapping) else None
            if detect_too_small and isinstance(error, Mapping) and mp.is_too_small_refusal(error):
                raise _TooSmall() from None
            raise mp.classify_error(exc.http_status(), body, exc.http_headers(), self._account) from None
        except (TypeError, ValueError, AttributeError):
            # The SDK indexes a non-JSON error body as if it were a dict (TypeError) when an HTML page
            # contains the word "error": that is Meta's HTML error page, a transient server fault. An
            # "error" that is not an object (AttributeError in the SDK) is no Graph API answer either.
            raise TransientError("Meta answered with an HTML error page or a malformed error") from None
        except requests.RequestException as exc:
            raise TransientError(f"no answer from Meta ({type(exc).__name__})") from None
        self._note_version_warning(response.headers())
        body = response.json()
        if not isinstance(body, Mapping):
            raise TransientError(f"Meta answered with a page that is not JSON (HTTP {response.status()})")
        return body

    def _note_version_warning(self, headers: Mapping[str, str] | None) -> None:
        warning = mp.version_warning(headers)
        if warning and warning != self.version_warning:
            log.warning(
                "Meta auto-upgraded a call made with api_version %s, which it no longer serves: set "
                "api_version to a current version (Meta said: %s)",
                self.api_version,
                warning,
            )
        self.version_warning = warning or self.version_warning


def _opt_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
