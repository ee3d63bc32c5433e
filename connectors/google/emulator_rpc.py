"""How the Google emulator's handlers declare the RPC they answer: ``@SERVICE.rpc(method)`` names the
method of a ``Service`` (and its messages), and ``declared_rpcs`` finds them on a handler object,
so the server builds its gRPC method table from the handlers instead of a list kept beside them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import Any, TypeVar


class Api(StrEnum):
    """Which API a method belongs to: its checks and, for Ads, its versioned service names."""

    ADS = "ads"
    DATA_MANAGER = "dm"
    OPERATIONS = "lro"
    """``google.longrunning.Operations``, served beside the Ads API with the Ads checks."""


@dataclass(frozen=True)
class Call:
    """One RPC as the handlers see it."""

    method: str
    request_id: str
    """The Ads ``request-id`` sent back in trailing metadata; empty for Data Manager."""
    metadata: dict[str, str]


@dataclass(frozen=True)
class Rpc:
    api: Api
    service: str
    """The service name without package for Ads and Data Manager (``UserListService``); the full
    name for long-running operations."""
    method: str
    request: Any
    """The request message class: proto-plus (``deserialize``) or protobuf (``FromString``)."""
    response: Any
    streaming: bool = False

    def deserialize(self, data: bytes) -> Any:
        decode = getattr(self.request, "deserialize", None) or self.request.FromString
        return decode(data)

    def serialize(self, message: Any) -> bytes:
        encode = getattr(self.response, "serialize", None) or self.response.SerializeToString
        return bytes(encode(message))


Handler = Callable[[Any, Call], Any]
_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "_emulator_rpc"


@dataclass(frozen=True)
class Service:
    """One gRPC service the emulator serves, and the module its messages are generated in."""

    api: Api
    name: str
    """Without package for Ads and Data Manager (``UserListService``); the full name otherwise."""
    messages: ModuleType

    def rpc(
        self, method: str, *, request: Any = None, response: Any = None, streaming: bool = False
    ) -> Callable[[_F], _F]:
        """Mark a handler method as the implementation of ``method``, whose messages are
        ``<method>Request`` and ``<method>Response`` of ``messages`` unless named."""
        declared = Rpc(
            self.api,
            self.name,
            method,
            request if request is not None else getattr(self.messages, f"{method}Request"),
            response if response is not None else getattr(self.messages, f"{method}Response"),
            streaming,
        )

        def mark(fn: _F) -> _F:
            setattr(fn, _MARK, declared)
            return fn

        return mark


def declared_rpcs(handlers: object) -> Iterator[tuple[Rpc, Handler]]:
    """Every ``@rpc`` method of ``handlers``, bound."""
    for name in dir(type(handlers)):
        declared = getattr(getattr(type(handlers), name), _MARK, None)
        if isinstance(declared, Rpc):
            yield declared, getattr(handlers, name)
