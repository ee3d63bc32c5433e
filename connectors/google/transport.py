"""What both Google backends share: the gRPC channel and credentials, the retry budget, the
follow polling step, and the capabilities both declare. The backends (``datamanager``, ``ads``) and
``GoogleConnector`` import it; it imports none of them, so there is no import circle."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from audiencesync.connectors import contract
from audiencesync.connectors.errors import AuthError, ConnectorError
from audiencesync.connectors.google import payload as gp
from audiencesync.connectors.google.settings import SETTINGS
from audiencesync.connectors.retry import Backoff, RetryBudget

T = TypeVar("T")

# The Ads client's own channel options: its answers (a 10,000-row search page, a failure listing
# 10,000 partial errors) exceed gRPC's 4 MB default.
GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_metadata_size", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass
class Tuning:
    """Waits and deadlines; the defaults suit production, tests shrink them."""

    max_wait_seconds: float = 300.0
    """The destination's ``max_wait_seconds``: see ``audiencesync.connectors.retry``."""
    backoff_initial: float = 2.0
    backoff_max: float = 120.0
    timeout_seconds: float = 60.0
    """Deadline of each RPC."""
    poll_interval: float = 5.0
    follow_wait_seconds: float = 0.0
    """How long ``follow`` keeps polling pending work before answering; 0 asks once (the next run, or
    the daemon's next tick, asks again)."""
    sleep: Callable[[float], None] = time.sleep


@dataclass
class RpcLog:
    """RPCs made, retries included: ``member_rpcs`` counts the member-carrying ones (ingest, remove,
    AddOperations), which is ``PushResult.requests``; ``calls`` the others, by method name."""

    calls: Counter[str] = field(default_factory=Counter)
    member_rpcs: int = 0

    def mark(self) -> tuple[int, Counter[str]]:
        return self.member_rpcs, Counter(self.calls)

    def since(self, mark: tuple[int, Counter[str]]) -> tuple[int, dict[str, int]]:
        """(member RPCs, other RPCs by name) made since ``mark``."""
        members, before = mark
        others = {k: v - before.get(k, 0) for k, v in self.calls.items() if v - before.get(k, 0) > 0}
        return self.member_rpcs - members, others


@dataclass(frozen=True)
class Account:
    """The account settings both backends read."""

    customer_id: str
    login_customer_id: str | None
    """The manager account the calls act through, if any."""
    life_span_days: int
    """``membership_life_span_days``: how long a list keeps a member (540 is Google's default)."""

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Account:
        login = settings.get("login_customer_id")
        return cls(
            customer_id=str(settings["customer_id"]),
            login_customer_id=str(login) if login else None,
            life_span_days=int(SETTINGS.value(settings, "membership_life_span_days")),
        )


class Retrier:
    """Runs one RPC through the connector's retry budget (``audiencesync.connectors.retry``): the
    RPC's exception is mapped by ``classify``, and what that calls transient is retried while the
    budget lasts; anything else is raised at once. Each attempt is counted in ``log``."""

    def __init__(self, tuning: Tuning) -> None:
        self.log = RpcLog()
        self.budget = RetryBudget(
            "google",
            tuning.max_wait_seconds,
            Backoff(tuning.backoff_initial, tuning.backoff_max),
            sleep=tuning.sleep,
        )

    def call(
        self,
        method: str,
        fn: Callable[[], T],
        classify: Callable[[Exception], ConnectorError | None],
        *,
        carries_members: bool = False,
    ) -> T:
        def attempt() -> T:
            if carries_members:
                self.log.member_rpcs += 1
            else:
                self.log.calls[method] += 1
            try:
                return fn()
            except Exception as exc:
                mapped = classify(exc)
                if mapped is None:
                    raise
                raise mapped from None

        return self.budget.call(method, attempt)


def poll(
    handles: Sequence[str], status_of: Callable[[str], contract.HandleStatus], tuning: Tuning
) -> dict[str, contract.HandleStatus]:
    """Each handle's status, asked again every ``poll_interval`` for those still pending until
    ``follow_wait_seconds`` would be overrun (0: asked once; the next run asks again)."""
    statuses: dict[str, contract.HandleStatus] = {}
    deadline = time.monotonic() + tuning.follow_wait_seconds
    waiting = list(handles)
    while True:
        for handle in waiting:
            statuses[handle] = status_of(handle)
        waiting = [h for h in waiting if statuses[h].state == "pending"]
        if not waiting or time.monotonic() + tuning.poll_interval > deadline:
            return statuses
        tuning.sleep(tuning.poll_interval)


def normalized_target(endpoint: str | None, default_host: str) -> str:
    """``host:port`` for gRPC: a scheme is dropped, port 443 assumed when none is given."""
    target = endpoint or default_host
    if "//" in target:
        target = target.split("//", 1)[1]
    target = target.rstrip("/")
    host_part = target.rsplit("]", 1)[-1]
    return target if ":" in host_part else f"{target}:443"


def load_credentials(dest: contract.DestinationConfig, scopes: Sequence[str]) -> Any:
    """The credentials file named by ``credentials_env`` (service account or OAuth authorized user),
    else application-default credentials."""
    import google.auth
    from google.auth import exceptions as auth_exceptions

    path = dest.secrets.get("credentials")
    try:
        if path:
            # google.auth leaves this function untyped; the annotation keeps strict mypy honest.
            load: Callable[..., tuple[Any, Any]] = google.auth.load_credentials_from_file
            credentials, _ = load(path, scopes=list(scopes))
        else:
            credentials, _ = google.auth.default(scopes=list(scopes))
    except auth_exceptions.DefaultCredentialsError as exc:
        # The library's message names files and variables, never key material.
        raise AuthError(
            "no usable Google credentials: set the environment variable named by credentials_env to a "
            f"service-account or OAuth file, or configure application-default credentials ({exc})"
        ) from None
    return credentials


def make_channel(dest: contract.DestinationConfig, default_host: str, scopes: Sequence[str]) -> grpc.Channel:
    """Plaintext and anonymous for a loopback endpoint (the emulator), TLS with credentials otherwise."""
    target = normalized_target(dest.endpoint, default_host)
    if dest.is_emulated:
        return grpc.insecure_channel(target, options=GRPC_OPTIONS)
    from google.api_core import grpc_helpers

    channel: grpc.Channel = grpc_helpers.create_channel(
        target, credentials=load_credentials(dest, scopes), scopes=list(scopes), options=GRPC_OPTIONS
    )
    return channel


class Backend(Protocol):
    """What GoogleConnector delegates to: the calls find-or-create needs (a list is a ``UserList``
    message of the backend's API, read only by the backend), and the contract's member calls, with
    adds and removes as one ``push`` of a batch that is never empty (neither API has upload sessions).
    Capabilities are the same for both backends."""

    def list_by_id(self, list_id: str) -> Any: ...
    def list_by_name(self, name: str) -> Any | None: ...
    def create_list(self, spec: contract.AudienceSpec) -> str: ...
    def unusable_kind(self, user_list: Any) -> str | None: ...
    def push(
        self, audience_id: str, batch: Sequence[contract.Change], *, remove: bool
    ) -> contract.PushResult: ...
    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]: ...
    def read_back(self, audience_id: str) -> contract.PlatformStatus: ...
    def close(self) -> None: ...


def capabilities() -> contract.Capabilities:
    """Both backends: 10,000 members a request, Google's identifier kinds, confirmed later."""
    return contract.Capabilities(
        max_batch=gp.MAX_BATCH, identifier_kinds=gp.IDENTIFIER_KINDS, asynchronous=True
    )


def refresh_seconds(settings: Mapping[str, Any]) -> float:
    """Seconds after an upload at which a member is re-added: the list's membership lifespan minus
    ``refresh_margin_days``, at least one day (a margin as long as the lifespan would re-add everyone
    on every run)."""
    life = int(SETTINGS.value(settings, "membership_life_span_days"))
    margin = int(SETTINGS.value(settings, "refresh_margin_days"))
    return float(max(1, life - margin) * 86_400)
