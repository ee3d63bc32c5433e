"""TikTok custom audiences through the Business API v1.3, on requests + tenacity.

Two flows, chosen by the destination's ``flow`` setting:

* ``segment`` (default): members are streamed with ``POST segment/mapping/`` (action ``add`` or
  ``delete``), the audience is created with ``POST segment/audience/``.
* ``file``: for accounts without the segment API. Each batch is uploaded as a customer file
  (``dmp/custom_audience/file/upload/``) and applied with ``dmp/custom_audience/update/`` (``APPEND`` or
  ``REMOVE``, always named: TikTok's default is ``REPLACE``). TikTok creates a file audience only from a
  first file, so ``ensure_audience`` returns a placeholder id (``to-create:<name>``) when no audience of
  that name exists yet, and the first add creates it. The runner stores the placeholder; the next
  ``ensure_audience`` finds the real audience by name and returns its id.

TikTok accepts a mapping batch as a whole and never says which hashed ids matched a TikTok user, so a
sent member is confirmed on code 0; how many matched shows only as ``cover_num`` in ``read_back``. A
20001 PARTIAL_OK answer (TikTok's SDK, tiktok/tiktok-business-api-sdk:
``python_sdk/business_api_client/tiktok_business/tiktok_code.py``) confirms the batch too: TikTok does
not say which items failed, so re-sending would be blind; its message is kept in the push result's
``detail``.

The file flow follows the SDK's ``python_sdk/docs/CustomAudienceUpdateBody.md``: every update fails
when the audience has fewer than 1,000 members afterwards. So the first file must hold at least 1,000
people and a REMOVE is checked against the audience's size first; either refusal says to use the
segment flow.

Every response code is classified once, in ``tiktok.payload.code_class``. What no primary source backs
(the segment/* shapes, batch limits, the file layout, the waits) is listed under "Assumptions" in
docs/setup-tiktok.md; comments here refer to those entries as A1, A2, ...
A value that is not SHA-256 hex is left out of the request (one bad id fails the whole request on
TikTok), and a person with no usable value is rejected with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import requests
from audiencesync.connectors import contract
from audiencesync.connectors.audience_lookup import find_or_create
from audiencesync.connectors.errors import (
    AudienceGone,
    ConfigurationRejected,
    FatalError,
    SchemaMismatch,
    TransientError,
)
from audiencesync.connectors.retry import Backoff, RetryBudget, max_wait_seconds
from audiencesync.connectors.tiktok import payload as tp
from audiencesync.connectors.tiktok.settings import SETTINGS

EMULATOR_TOKEN = "emulator-token"
PLACEHOLDER_PREFIX = "to-create:"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff, timeouts and TikTok's own pauses. The backoff and the budget (the destination's
    ``max_wait_seconds``) work as ``audiencesync.connectors.retry`` says for every platform. Tests
    pass millisecond waits and short timeouts."""

    initial_wait: float = 1.0
    """The first backoff (``Backoff.initial``)."""
    max_single_wait: float = 60.0
    """The longest ordinary backoff (``Backoff.maximum``)."""
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    long_wait_factor: float = 4.0
    """61000 TOO_MANY_REQUESTS_BL waits this many times longer (assumption A6: TikTok publishes no
    figure, only that this limit is a separate, stricter one)."""
    conflict_pause: float = 2.0
    """The least wait after 40202 WRITE_CONFLICT, so the other write can finish (assumption A6)."""


class _TooLarge(Exception):
    """TikTok refused a request for its size; the caller splits it."""

    def __init__(self, env: tp.Envelope) -> None:
        super().__init__("request too large")
        self.env = env


@dataclass
class _Rows:
    keys: list[bytes]
    rows: list[tuple[str | None, ...]]


def is_placeholder(audience_id: str) -> bool:
    return audience_id.startswith(PLACEHOLDER_PREFIX)


def base_url(endpoint: str | None) -> str:
    """``endpoint`` (default TikTok's host) with the v1.3 prefix; a bare ``host:port`` on loopback is
    taken as plain HTTP, any other bare host as HTTPS."""
    root = (endpoint or tp.DEFAULT_BASE_URL).rstrip("/")
    if "//" not in root:
        from audiencesync.connectors.contract import is_loopback

        root = f"{'http' if is_loopback(root) else 'https'}://{root}"
    if root.endswith(tp.API_PREFIX.rstrip("/")):
        root = root[: -len(tp.API_PREFIX.rstrip("/"))]
    return root + tp.API_PREFIX


class TikTokConnector:
    """One TikTok advertiser account (``advertiser_id``) as a destination."""

    def __init__(
        self,
        dest: contract.DestinationConfig,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.advertiser_id = str(dest.settings["advertiser_id"])
        # TikTok publishes no batch limit (assumption A3); a size code splits the request.
        self.batch_size = int(SETTINGS.value(dest.settings, "batch_size"))
        self.flow = str(SETTINGS.value(dest.settings, "flow"))
        self.maid_type = str(SETTINGS.value(dest.settings, "maid_type"))
        self.base_url = base_url(dest.endpoint)
        token = dest.secrets.get("access_token") or (EMULATOR_TOKEN if dest.is_emulated else "")
        if not token:
            raise FatalError(
                f"destination {dest.name}: no TikTok access token; set the environment variable named "
                "by access_token_env"
            )
        self._session = session or requests.Session()
        self._session.headers.update({"Access-Token": token, "Accept": "application/json"})
        self._retry = RetryBudget(
            "tiktok",
            max_wait_seconds(dest.settings),
            Backoff(self.policy.initial_wait, self.policy.max_single_wait),
            sleep=sleep,
            platform_wait=self._platform_wait,
        )
        self._requests = 0
        self._token_checked = False
        self._kinds: dict[str, tuple[str, ...]] = {}
        self._created: dict[str, str] = {}
        """Placeholder id -> real id, for file audiences created by this instance."""

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def refresh_due_seconds(self) -> float | None:
        """TikTok expires a whole audience, not its members (Business API SDK,
        ``CustomAudienceCreateBody.md``, ``retention_in_days``): never re-sent for age."""
        return None

    # --- contract --------------------------------------------------------------------------------
    def capabilities(self) -> contract.Capabilities:
        return contract.Capabilities(
            max_batch=self.batch_size, identifier_kinds=frozenset(tp.SUPPORTED_KINDS)
        )

    def ensure_audience(self, spec: contract.AudienceSpec) -> str:
        kinds = tp.schema_kinds(spec.identifier_kinds)
        if not kinds:
            raise SchemaMismatch(
                f"target {spec.target}: TikTok matches on email, phone or mobile ad id, and the source "
                "configures none of them"
            )
        self._check_token()
        if spec.known_id and is_placeholder(spec.known_id):
            # A file audience not created yet when the id was stored: it is looked for by name.
            spec = replace(spec, known_id=None)
        audience_id = find_or_create(
            spec,
            lookup=lambda known: self._pinned_audience(spec.target, known),
            find=self._find_by_name,
            id_of=lambda entry: str(entry["audience_id"]),
            create=lambda: self._create_audience(spec.name, kinds),
        )
        self._kinds[audience_id] = kinds
        return audience_id

    def add(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        return self._push(audience_id, batch, adding=True)

    def remove(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        return self._push(audience_id, batch, adding=False)

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]:
        # Pushes are confirmed synchronously and no handle is ever issued; a handle left from elsewhere
        # is safest re-sent, since adds and deletes are idempotent.
        return {
            h: contract.HandleStatus("failed", detail="TikTok pushes are confirmed at once; re-sending")
            for h in handles
        }

    def read_back(self, audience_id: str) -> contract.PlatformStatus:
        real_id = self._created.get(audience_id, audience_id)
        if is_placeholder(real_id):
            return contract.PlatformStatus(
                state="not created yet",
                detail={"note": "the file audience is created with the first upload"},
            )
        entry = self._get_audience(real_id)
        if entry is None:
            raise AudienceGone(f"TikTok no longer lists audience {real_id}; it was deleted or expired")
        return tp.platform_status(entry)

    # --- audiences -------------------------------------------------------------------------------
    def _check_token(self) -> None:
        """One ``user/info`` per connector: a bad token fails with a clear message before any work."""
        if not self._token_checked:
            self._call("GET", "user/info/", operation="token check")
            self._token_checked = True

    def _pinned_audience(self, target: str, audience_id: str) -> Mapping[str, Any]:
        entry = self._get_audience(audience_id)
        if entry is None:
            raise AudienceGone(
                f"target {target}: TikTok audience {audience_id} no longer exists; remove the pinned "
                "id (or the state entry) to let audience-sync create a new one"
            )
        return entry

    def _get_audience(self, audience_id: str) -> Mapping[str, Any] | None:
        env = self._call(
            "GET",
            "dmp/custom_audience/get/",
            operation="audience lookup",
            audience_id=audience_id,
            params=tp.get_params(self.advertiser_id, audience_id),
        )
        for entry in env.data.get("list") or []:
            if isinstance(entry, Mapping):
                details = tp.audience_details(entry)
                if str(details.get("audience_id")) == audience_id:
                    return entry
        return None

    def _find_by_name(self, name: str) -> Mapping[str, Any] | None:
        limit = tp.SEGMENT_NAME_LIMIT if self.flow == "segment" else tp.FILE_AUDIENCE_NAME_LIMIT
        wanted = tp.cut_name(name, limit)
        page = 1
        while True:
            env = self._call(
                "GET",
                "dmp/custom_audience/list/",
                operation="audience list",
                params={"advertiser_id": self.advertiser_id, "page": page, "page_size": tp.LIST_PAGE_SIZE},
            )
            entries = env.data.get("list") or []
            for entry in entries:
                if isinstance(entry, Mapping) and entry.get("name") == wanted:
                    return entry
            page_info = env.data.get("page_info") or {}
            total_pages = int(page_info.get("total_page") or 1) if isinstance(page_info, Mapping) else 1
            if not entries or page >= total_pages:
                return None
            page += 1

    def _create_audience(self, name: str, kinds: tuple[str, ...]) -> str:
        if self.flow == "file":
            return PLACEHOLDER_PREFIX + name
        id_type = tp.schema_for(kinds[0], self.maid_type)
        env = self._call(
            "POST",
            "segment/audience/",
            operation="audience create",
            json_body=tp.create_segment_body(self.advertiser_id, name, id_type),
        )
        audience_id = env.data.get("audience_id")
        if not audience_id:
            raise FatalError("TikTok created the audience but returned no id", request_id=env.request_id)
        return str(audience_id)

    # --- pushes ----------------------------------------------------------------------------------
    def _push(self, audience_id: str, batch: Sequence[contract.Change], adding: bool) -> contract.PushResult:
        started = self._requests
        kinds = self._kinds.get(audience_id) or _kinds_in(batch)
        prepared = tp.person_rows(kinds, batch)
        result = contract.PushResult(rejected=dict(prepared.rejected))
        schema = tp.id_schema(kinds, self.maid_type)
        pending = _Rows(prepared.keys, prepared.rows)
        chunks = [
            _Rows(pending.keys[i : i + self.batch_size], pending.rows[i : i + self.batch_size])
            for i in range(0, len(pending.keys), self.batch_size)
        ]
        partial: list[dict[str, object]] = []
        if self.flow == "file":
            self._check_file_floor(audience_id, len(pending.keys), adding)
        for n, chunk in enumerate(chunks):
            try:
                self._send_splitting(audience_id, schema, chunk, adding, partial)
            except TransientError:
                if not result.confirmed:
                    raise
                # Part of the batch landed: keep that, and hand the rest back for the next run.
                result.retry.extend(k for c in chunks[n:] for k in c.keys)
                break
            result.confirmed.extend(chunk.keys)
        result.requests = self._requests - started
        if partial:
            # 20001 PARTIAL_OK: the batch counts as sent; what TikTok said is kept for the report.
            result.detail["tiktok_partial"] = partial
        if self.flow == "file" and not adding and self._unresolved(audience_id):
            result.detail["note"] = "no file audience exists yet, so there was nothing to remove"
        return result

    def _send_splitting(
        self,
        audience_id: str,
        schema: list[str],
        chunk: _Rows,
        adding: bool,
        partial: list[dict[str, object]],
    ) -> None:
        """Send ``chunk``; when TikTok says it is too large (40061, 40011, 40907 or HTTP 413), send each
        half instead. A 20001 answer is noted in ``partial``."""
        try:
            env = self._send(audience_id, schema, chunk, adding)
        except _TooLarge as exc:
            if len(chunk.keys) <= 1:
                raise tp.classify(exc.env, operation="member push") or FatalError(
                    "TikTok refuses even a single person as too large", request_id=exc.env.request_id
                ) from None
            half = len(chunk.keys) // 2
            first, rest = (
                _Rows(chunk.keys[:half], chunk.rows[:half]),
                _Rows(chunk.keys[half:], chunk.rows[half:]),
            )
            self._send_splitting(audience_id, schema, first, adding, partial)
            self._send_splitting(audience_id, schema, rest, adding, partial)
            return
        if env is not None and env.code == tp.PARTIAL_OK:
            partial.append(tp.partial_detail(env))

    def _send(self, audience_id: str, schema: list[str], chunk: _Rows, adding: bool) -> tp.Envelope | None:
        if self.flow == "file":
            return self._send_file(audience_id, schema, chunk, adding)
        body = tp.mapping_json(
            self.advertiser_id, audience_id, "add" if adding else "delete", schema, chunk.rows
        )
        return self._call(
            "POST",
            "segment/mapping/",
            operation="member add" if adding else "member delete",
            audience_id=audience_id,
            json_bytes=body,
            splittable=True,
        )

    def _unresolved(self, audience_id: str) -> bool:
        return is_placeholder(self._created.get(audience_id, audience_id))

    def _check_file_floor(self, audience_id: str, count: int, adding: bool) -> None:
        """Refuse, before anything is uploaded, a file-flow change that would leave the audience under
        1,000 members: TikTok fails every update then (CustomAudienceUpdateBody.md), and the user is
        better told why and what to do than shown a failed update."""
        if count == 0 or (not adding and self._unresolved(audience_id)):
            return
        floor = tp.MIN_FILE_AUDIENCE
        advice = (
            f'use flow = "segment" for this destination (it streams members and has no {floor:,} floor), '
            f"or sync this audience by file only once it holds at least {floor:,} people"
        )
        if adding and self._unresolved(audience_id):
            # The first file (one chunk) creates the audience; under the floor every later update fails
            # (the SDK states the floor for updates; applying it to the first file is A11).
            if self.batch_size < floor:
                raise ConfigurationRejected(
                    f"TikTok's customer-file flow creates the audience from the first file, which holds "
                    f"batch_size = {self.batch_size:,} people, and TikTok refuses every update of a file "
                    f"audience smaller than {floor:,}; set batch_size to at least {floor:,}"
                )
            if count < floor:
                raise ConfigurationRejected(
                    f"TikTok's customer-file flow cannot hold this audience: its first upload has {count:,} "
                    f"people, and TikTok refuses every update of a file audience smaller than {floor:,}; "
                    + advice
                )
            return
        if adding:
            return  # an APPEND to an audience created at 1,000 or more only grows it
        real_id = self._created.get(audience_id, audience_id)
        entry = self._get_audience(real_id)
        if entry is None:
            raise AudienceGone(f"TikTok no longer lists audience {real_id}; it was deleted or expired")
        size = tp.platform_status(entry).size_lower
        # cover_num is TikTok's only published size; while TikTok recalculates it is the last one (A5).
        if size is not None and size - count < floor:
            raise ConfigurationRejected(
                f"TikTok's customer-file flow cannot remove {count:,} people from audience {real_id}: it "
                f"holds {size:,}, and TikTok refuses an update that leaves fewer than {floor:,}; the "
                "removals stay queued; " + advice
            )

    def _send_file(
        self, audience_id: str, schema: list[str], chunk: _Rows, adding: bool
    ) -> tp.Envelope | None:
        if not adding and self._unresolved(audience_id):
            return None
        calculate_type = tp.file_calculate_type(schema)
        content = tp.customer_file(schema, chunk.rows)
        # Named after its content, so a re-sent batch uploads under the same name.
        file_name = f"audience-sync-{tp.file_signature(content)[:16]}.csv"
        env = self._call(
            "POST",
            "dmp/custom_audience/file/upload/",
            operation="file upload",
            form=tp.upload_fields(self.advertiser_id, calculate_type, content, file_name),
            files={"file": (file_name, content, "text/csv")},
            splittable=True,
        )
        file_path = env.data.get("file_path")
        if not file_path:
            raise FatalError("TikTok accepted the file but returned no file_path", request_id=env.request_id)
        real_id = self._created.get(audience_id, audience_id)
        if is_placeholder(real_id):
            name = real_id[len(PLACEHOLDER_PREFIX) :]
            created = self._call(
                "POST",
                "dmp/custom_audience/create/",
                operation="file audience create",
                json_body=tp.file_create_body(self.advertiser_id, name, calculate_type, str(file_path)),
            )
            new_id = created.data.get("custom_audience_id") or created.data.get("audience_id")
            if not new_id:
                raise FatalError(
                    "TikTok created the audience but returned no id", request_id=created.request_id
                )
            self._created[audience_id] = str(new_id)
            return created
        return self._call(
            "POST",
            "dmp/custom_audience/update/",
            operation="file audience update",
            audience_id=real_id,
            json_body=tp.file_update_body(
                self.advertiser_id, real_id, "APPEND" if adding else "REMOVE", str(file_path)
            ),
            splittable=True,
        )

    # --- transport -------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        audience_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
        json_bytes: bytes | None = None,
        form: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        splittable: bool = False,
    ) -> tp.Envelope:
        """One API call, retried on what TikTok marks transient while the connector's retry budget
        lasts (``audiencesync.connectors.retry``). Raises the mapped error, or ``_TooLarge`` when
        ``splittable``. ``json_bytes`` is a JSON body already serialized (``tp.mapping_json``)."""
        headers = {"Content-Type": "application/json"} if json_bytes is not None else None

        def attempt() -> tp.Envelope:
            self._requests += 1
            try:
                response = self._session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json_body,
                    data=json_bytes if json_bytes is not None else form,
                    files=files,
                    headers=headers,
                    timeout=(self.policy.connect_timeout, self.policy.read_timeout),
                )
            except requests.Timeout:
                raise TransientError(f"TikTok did not answer {operation} in time") from None
            except requests.ConnectionError:
                raise TransientError(f"could not reach TikTok for {operation}") from None
            env = tp.parse_envelope(response.status_code, response.content)
            if splittable and tp.is_too_large(env):
                raise _TooLarge(env)
            error = tp.classify(env, operation=operation, audience_id=audience_id)
            if error is not None:
                raise error
            return env

        return self._retry.call(operation, attempt)

    def _platform_wait(self, error: TransientError, wait: float) -> float:
        """Longer for 61000 TOO_MANY_REQUESTS_BL, and at least ``conflict_pause`` after 40202
        WRITE_CONFLICT (the classes come from ``tp.code_class``)."""
        code = _code_number(error.code)
        kind = tp.code_class(200, code) if code is not None else None
        if kind is tp.CodeClass.RATE_LIMITED_LONG:
            # Still jittered, but never shorter than the longest ordinary wait: a 61000 block is
            # longer than plain throttling (the SDK's tiktok_code.py), so its backoff is too.
            return max(self.policy.max_single_wait, wait * self.policy.long_wait_factor)
        if kind is tp.CodeClass.WRITE_CONFLICT:
            return max(wait, self.policy.conflict_pause)
        return wait


def _code_number(code: str | None) -> int | None:
    """An error's ``code`` as a number, when it has one."""
    return int(code) if code and code.lstrip("-").isdigit() else None


def _kinds_in(batch: Sequence[contract.Change]) -> tuple[str, ...]:
    """The id kinds a batch carries, for a push whose audience ``ensure_audience`` did not resolve."""
    present = {k for change in batch for k in change.identifiers}
    return tuple(k for k in tp.SUPPORTED_KINDS if k in present)
