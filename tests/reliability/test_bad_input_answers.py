"""The bad-input corpus: platform answers, from a stub server and the Google emulator. What every case
must end with is in bad_input_case.py."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from bad_input_case import GOOGLE_DEV_TOKEN, Case, assert_failed_target, member_count, run

# --- platform answers ---------------------------------------------------------------------------


class _Answers(BaseHTTPRequestHandler):
    status = 200
    body = b""
    content_type = "application/json"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def answering(status: int, body: bytes, content_type: str) -> Iterator[str]:
    handler = type("Handler", (_Answers,), {"status": status, "body": body, "content_type": content_type})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


PLATFORM_DESTINATIONS = {
    "meta": """
        [destinations.plat]
        platform = "meta"
        ad_account_id = "act_1234"
        access_token_env = "NO_SUCH_TOKEN_VAR"
        endpoint = "{endpoint}"
        max_wait_seconds = 1
        """,
    "tiktok": """
        [destinations.plat]
        platform = "tiktok"
        advertiser_id = "7000000000000000001"
        access_token_env = "NO_SUCH_TOKEN_VAR"
        endpoint = "{endpoint}"
        max_wait_seconds = 1
        """,
}

ANSWERS: list[object] = [
    ("malformed_json", 200, b'{"id": "12', "application/json"),
    ("html_error_page", 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    ("html_ok_page", 200, b"<html><body>Welcome to nginx!</body></html>", "text/html"),
    ("json_array", 200, b"[1, 2, 3]", "application/json"),
    pytest.param(
        "wrong_types",
        200,
        b'{"id": 12, "data": "x", "code": "zero", "num_received": "many"}',
        "application/json",
        id="wrong_types",
    ),
    ("empty_body", 200, b"", "application/json"),
    ("error_without_fields", 400, b'{"error": "nope"}', "application/json"),
]


@pytest.mark.parametrize("name,status,body,content_type", ANSWERS)
@pytest.mark.parametrize("platform", sorted(PLATFORM_DESTINATIONS))
def test_platform_answer_cases(
    case: Case, platform: str, name: str, status: int, body: bytes, content_type: str
) -> None:
    with answering(status, body, content_type) as endpoint:
        text = case.config.read_text(encoding="utf-8").split("[[syncs]]")[0]
        case.write_config(
            text
            + textwrap.dedent(PLATFORM_DESTINATIONS[platform].format(endpoint=endpoint))
            + '\n[[syncs]]\naudience = "vip"\ndestinations = ["plat"]\n'
        )
        members_before = member_count(case.state)
        result = run(case, "sync", "--config", str(case.config), "--json")
    targets = assert_failed_target(result)
    error = targets[0]["error"]
    assert error and "\n" not in error
    assert member_count(case.state) == members_before


# --- Google answers, through the emulator's fault switches -----------------------------------------

GOOGLE_FAULTS = [
    ("data_manager", {"internal_rate": 1.0}),
    ("data_manager", {"unavailable_rate": 1.0}),
    ("data_manager", {"resource_exhausted_rate": 1.0}),
    ("google_ads", {"resource_temporarily_exhausted_rate": 1.0}),
    ("google_ads", {"not_allowlisted": True}),
    ("google_ads", {"internal_rate": 1.0}),
    ("google_ads", {"unavailable_rate": 1.0}),
    ("google_ads", {"expected_developer_token": "another-token"}),
]


def _google_config(case: Case, endpoint: str, backend: str, token_env: str | None = None) -> None:
    text = case.config.read_text(encoding="utf-8").split("[[syncs]]")[0]
    token = f'developer_token_env = "{token_env}"\n' if token_env else ""
    case.write_config(
        text + f'\n[destinations.g]\nplatform = "google"\nbackend = "{backend}"\ncustomer_id = "1234567890"\n'
        f'endpoint = "{endpoint}"\nmax_wait_seconds = 1\naccept_customer_match_terms = true\n{token}'
        '\n[[syncs]]\naudience = "vip"\ndestinations = ["g"]\n'
    )


@pytest.mark.parametrize(
    "backend,faults", GOOGLE_FAULTS, ids=[f"{b}-{next(iter(f))}" for b, f in GOOGLE_FAULTS]
)
def test_google_answer_cases(
    case: Case, google_emulator: Any, backend: str, faults: dict[str, object]
) -> None:
    google_emulator.faults.set(faults)
    _google_config(case, google_emulator.endpoint, backend)
    members_before = member_count(case.state)
    result = run(case, "sync", "--config", str(case.config), "--json")
    targets = assert_failed_target(result)
    assert targets[0]["push"]["confirmed"] == 0
    assert member_count(case.state) == members_before


@pytest.mark.parametrize("backend", ["data_manager", "google_ads"])
def test_a_google_developer_token_with_a_newline_is_trimmed_not_retried(
    case: Case, google_emulator: Any, backend: str
) -> None:
    google_emulator.faults.set({"expected_developer_token": GOOGLE_DEV_TOKEN})
    _google_config(case, google_emulator.endpoint, backend, token_env="GOOGLE_DEV_TOKEN_FILE")
    result = run(
        case,
        "sync",
        "--config",
        str(case.config),
        "--json",
        env={"GOOGLE_DEV_TOKEN_FILE": GOOGLE_DEV_TOKEN + "\n"},
    )
    assert result.exit_code == 0, result.output
    assert GOOGLE_DEV_TOKEN not in result.output
