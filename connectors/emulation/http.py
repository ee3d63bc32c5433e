"""The plumbing every emulator shares: one threaded HTTP server on loopback, the admin surface and the
fault switchboard.

Every emulator has one shape: a store (``emulator_store.py`` in its platform's folder: the platform's
objects behind one lock, with ``snapshot`` and ``reset``), handlers (the platform's routes or RPCs, each
rule with its source), and this admin surface over them. Meta's and TikTok's APIs are served by the
``EmulatorServer`` here, beside the admin surface; Google's are gRPC, so its ``EmulatorServer`` serves
the admin surface alone, on a second port.

Admin surface, the same on every emulator:
    GET  /_emulator/state   every audience (id, name) and its members as the hashed identifiers received
    POST /_emulator/faults  set fault switches from a JSON body (unknown switch names are a 400)
    POST /_emulator/reset   empty all audiences and clear the faults
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        """Form fields of the body, URL-encoded or multipart/form-data (the facebook-business SDK posts
        either way), merged over the query. Raises ``ValueError`` on a malformed multipart body."""
        merged = dict(self.query)
        ctype = self.headers.get("Content-Type", "")
        if self.body and "application/x-www-form-urlencoded" in ctype:
            merged.update({k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()})
        elif self.body and "multipart/form-data" in ctype:
            merged.update({k: v.decode() for k, v in self.multipart().items()})
        return merged

    def multipart(self) -> dict[str, bytes]:
        """The parts of a multipart/form-data body by field name (RFC 7578); the last of a repeated
        name wins. Raises ``ValueError`` when the body is not multipart or is malformed."""
        return parse_multipart(self.body, self.headers.get("Content-Type", ""))

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^";\s]+))', re.IGNORECASE)
_PART_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_PART_FILENAME = re.compile(rb'(?:^|;)\s*filename="([^"]*)"', re.IGNORECASE)


def parse_multipart(body: bytes, content_type: str, *, with_filenames: bool = False) -> dict[str, bytes]:
    """Split a multipart/form-data body on its boundary. Bytes-level splitting rather than the
    ``email`` parser: the parts are megabytes of hashed rows, and a field's bytes come back as sent.
    With ``with_filenames``, a file part's ``filename`` is kept too, under ``"<name>.filename"``."""
    if "multipart/form-data" not in content_type.lower():
        raise ValueError("not multipart/form-data")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise ValueError("multipart/form-data without a boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("multipart body without its closing boundary")
    fields: dict[str, bytes] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("multipart part not delimited by CRLF")
        # The CRLF before each delimiter belongs to the delimiter, not to the part's content.
        head, sep, rest = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without headers")
        content = rest[:-2]
        name = filename = None
        for line in head.split(b"\r\n"):
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-disposition":
                found = _PART_NAME.search(value)
                name = found.group(1).decode() if found else None
                named = _PART_FILENAME.search(value)
                filename = named.group(1) if named else None
        if name is None:
            raise ValueError("multipart part without a field name")
        fields[name] = content
        if with_filenames and filename:
            fields[f"{name}.filename"] = filename
    return fields


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode(), "application/json", headers or {})


class DropConnection(Exception):
    """Raised by a handler to close the socket without an answer, as a failing proxy would."""


class FaultSwitches:
    """Named fault switches. Rates are probabilities per request, drawn from a seeded generator so a
    test run is repeatable; other switches hold values (seconds of delay, codes)."""

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        self._defaults = dict(defaults)
        self._values = dict(defaults)
        self._rng = random.Random(0)
        self._lock = threading.Lock()
        self.fired = 0
        """Rolls that came up true since start: the faults injected, for the reliability figures."""

    def set(self, values: Mapping[str, Any]) -> None:
        unknown = set(values) - set(self._defaults) - {"seed"}
        if unknown:
            raise KeyError(", ".join(sorted(unknown)))
        with self._lock:
            if "seed" in values:
                self._rng = random.Random(values["seed"])
            self._values.update({k: v for k, v in values.items() if k != "seed"})

    def reset(self) -> None:
        with self._lock:
            self._values = dict(self._defaults)
            self._rng = random.Random(0)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def roll(self, name: str) -> bool:
        """True with the probability the switch ``name`` holds."""
        with self._lock:
            rate = float(self._values.get(name) or 0.0)
            hit = rate > 0 and self._rng.random() < rate
            self.fired += hit
            return hit

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def maybe_drop(self, rate: str = "drop_rate") -> None:
        """Close the connection unanswered (``DropConnection``) with the probability ``rate`` holds."""
        if self.roll(rate):
            raise DropConnection()

    def stall_for(self, rate: str, seconds: str) -> float:
        """Seconds this request should stall (past a client's timeout): ``seconds``' value with the
        probability ``rate`` holds, else 0. Each platform decides whether the work is done first."""
        return float(self[seconds]) if self.roll(rate) else 0.0


Handler = Callable[[Request], Response]


class EmulatorServer:
    """A ThreadingHTTPServer on 127.0.0.1 that routes ``/_emulator/*`` to the admin surface and
    everything else to ``handle``. Counts requests per path, for request-efficiency tests."""

    def __init__(
        self,
        handle: Handler,
        snapshot: Callable[[], dict[str, Any]],
        reset: Callable[[], None],
        faults: FaultSwitches,
        port: int = 0,
    ) -> None:
        self.handle = handle
        self.snapshot = snapshot
        self.reset_state = reset
        self.faults = faults
        self.request_log: list[tuple[str, str]] = []
        self._log_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_to(self, method: str, suffix: str) -> int:
        with self._log_lock:
            return sum(1 for m, p in self.request_log if m == method and p.endswith(suffix))

    def start(self) -> EmulatorServer:
        # socketserver polls for shutdown every 0.5 s by default, which every stop() would wait out; a
        # short poll keeps the teardown of each test fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def reset(self) -> None:
        """Empty the store, reset the fault switches and clear the request log."""
        self.reset_state()
        self.faults.reset()
        with self._log_lock:
            self.request_log.clear()

    def _admin(self, req: Request) -> Response:
        if req.method == "GET" and req.path == "/_emulator/state":
            return Response.of_json(self.snapshot())
        if req.method == "POST" and req.path == "/_emulator/faults":
            try:
                self.faults.set(req.json())
            except KeyError as exc:
                return Response.of_json({"error": f"unknown fault switch: {exc.args[0]}"}, 400)
            except (ValueError, TypeError):
                return Response.of_json({"error": "body must be a JSON object"}, 400)
            return Response.of_json({"faults": self.faults.as_dict()})
        if req.method == "POST" and req.path == "/_emulator/reset":
            self.reset()
            return Response.of_json({"reset": True})
        return Response.of_json({"error": "no such admin route"}, 404)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, a keep-alive client waits for
            # the delayed ACK (about 40 ms) on every call, which dominates request-heavy tests.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return  # request lines can carry tokens in query strings: never print them

            def _dispatch(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                req = Request(self.command, parts.path, query, dict(self.headers.items()), body)
                if parts.path.startswith("/_emulator/"):
                    resp = server._admin(req)
                else:
                    with server._log_lock:
                        server.request_log.append((self.command, parts.path))
                    try:
                        resp = server.handle(req)
                    except DropConnection:
                        self.close_connection = True
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                for name, value in resp.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(resp.body)

            do_GET = do_POST = do_DELETE = _dispatch

        return _Handler


class HttpEmulator:
    """What every HTTP emulator exposes around its ``EmulatorServer``: where it listens, start and
    stop, the request log, the state and a reset. A platform emulator sets ``self.server`` in its
    constructor, built from its store's ``snapshot`` and ``reset`` and its handler."""

    server: EmulatorServer

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """The endpoint to configure (the API's base URL)."""
        return self.server.url

    @property
    def admin_url(self) -> str:
        """Where ``/_emulator/*`` is served: the same server."""
        return self.server.url

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def requests_to(self, method: str, suffix: str) -> int:
        """How many API calls (admin calls excluded) had ``method`` and a path ending in ``suffix``."""
        return self.server.requests_to(method, suffix)

    def snapshot(self) -> dict[str, Any]:
        """The state ``GET /_emulator/state`` answers."""
        return self.server.snapshot()

    def reset(self) -> None:
        """What ``POST /_emulator/reset`` does: an empty store and every fault switch at its default."""
        self.server.reset()


@contextmanager
def running(server: EmulatorServer) -> Iterator[EmulatorServer]:
    """Start ``server`` in a background thread for the duration of a ``with`` block."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
