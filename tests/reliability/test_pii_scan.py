"""The PII and secret scans: after the demo (with its emulators), a second sync, a saved plan and the
HTML lag report, no plaintext identifier from the demo's profile database is found in the state
file, the logs, the plan file or the report; and no token reaches a message or a log line.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from audiencesync.state.sealed import PREFIX, key_path
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.demo.emulation import listening
from audiencesync.sync.redact import REDACTED, redact
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from loopback import free_ports

PACKAGED = Path(__file__).parent.parent.parent / "sync" / "config.example.toml"


def _profiles(db: Path) -> list[dict[str, str | None]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM profiles")]
    finally:
        conn.close()


def _needles(profiles: list[dict[str, str | None]]) -> tuple[set[str], set[str]]:
    """(substrings, quoted values): emails, phones and names are searched as they are; postal codes,
    being short digit strings that also occur as numbers, are searched as JSON strings."""
    plain: set[str] = set()
    quoted: set[str] = set()
    for p in profiles:
        for column in ("email", "phone"):
            if p.get(column):
                plain.add(str(p[column]))
                plain.add(str(p[column]).strip().lower())
        digits = re.sub(r"\D", "", str(p.get("phone") or ""))
        if len(digits) >= 8:
            plain.add(digits)
        for column in ("first_name", "last_name"):
            name = str(p.get(column) or "")
            if len(name) >= 5:
                plain.add(name)
        if p.get("postcode"):
            code = str(p["postcode"])
            quoted.update({json.dumps(code), json.dumps(code.replace(" ", "").lower())})
    return plain, quoted


def _find(blob: str, plain: set[str], quoted: set[str]) -> list[str]:
    # Values shorter than 6 characters (a phone of "000") match by chance anywhere.
    found = [n for n in plain if len(n) >= 6 and n in blob]
    found += [q for q in quoted if q in blob]
    return found


@contextmanager
def _emulators(config: Path) -> Iterator[None]:
    """The config's emulators in their own process, as the README's walkthrough runs them, so the
    demo keeps what it synced to them in state (a demo that starts its own forgets those targets)."""
    ports = [
        int(line.split(":")[-1].rstrip('"'))
        for line in config.read_text().splitlines()
        if line.startswith("endpoint")
    ]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "audience-sync"), "emulator", "all", "--config", str(config)],
        cwd=config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not all(listening(p, timeout=0.3) for p in ports):
            assert proc.poll() is None, "the emulators exited"
            assert time.monotonic() < deadline, "the emulators did not start"
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("pii")
    config = root / "demo.toml"
    text = PACKAGED.read_text(encoding="utf-8")
    for default, port in zip(("8801", "8802", "8803"), free_ports(3), strict=True):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    config.write_text(text, encoding="utf-8")
    runner = CliRunner()
    with _emulators(config):
        first = runner.invoke(
            cli,
            [
                "--log-format",
                "json",
                "-v",
                "demo",
                "--config",
                str(config),
                "--profiles",
                "600",
                "--seed",
                "3",
            ],
        )
        assert first.exit_code == 0, first.output
        advanced = runner.invoke(cli, ["demo", "advance", "--config", str(config), "--seed", "5"])
        assert advanced.exit_code == 0, advanced.output
        plan = root / "plan.jsonl"
        planned = runner.invoke(
            cli,
            [
                "-v",
                "sync",
                "--config",
                str(config),
                "--dry-run",
                "--allow-mass-remove",
                "--plan-out",
                str(plan),
            ],
        )
        assert planned.exit_code == 0, planned.output
        synced = runner.invoke(cli, ["-v", "sync", "--config", str(config), "--allow-mass-remove"])
        assert synced.exit_code == 0, synced.output
        report = root / "lag.html"
        lag = runner.invoke(cli, ["lag", "--config", str(config), "--html", str(report)])
        assert lag.exit_code in (0, 4), lag.output  # 4: an SLO breach, which is no concern of this scan
    state = root / "demo" / "audience-sync.db"
    yield {
        "root": root,
        "profiles": _profiles(root / "demo" / "profiles.db"),
        "state": state,
        "plan": plan,
        "report": report,
        "logs": first.output + advanced.output + planned.output + synced.output + lag.output,
    }


def _state_text(state: Path) -> str:
    """Everything in the state file, as SQL text (the WAL included, as SQLite reads it)."""
    conn = sqlite3.connect(state)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_the_state_file_holds_no_plaintext_identifier(demo_run: dict[str, object]) -> None:
    plain, quoted = _needles(demo_run["profiles"])  # type: ignore[arg-type]
    state = demo_run["state"]
    assert isinstance(state, Path)
    dump = _state_text(state)
    assert 'INSERT INTO "members"' in dump and PREFIX in dump  # the scan looked at real rows
    raw = state.read_bytes().decode("latin-1")
    assert _find(dump, plain, quoted) == []
    assert _find(raw, plain, quoted) == []
    assert key_path(state).read_bytes().strip().decode() not in dump


def test_the_plan_file_holds_no_plaintext_identifier(demo_run: dict[str, object]) -> None:
    plain, quoted = _needles(demo_run["profiles"])  # type: ignore[arg-type]
    plan = demo_run["plan"]
    assert isinstance(plan, Path)
    text = plan.read_text(encoding="utf-8")
    assert text.count("\n") > 10
    # Payloads are JSON inside JSON: scan them decoded too, or their quotes would hide a value.
    payloads = "\n".join(str(json.loads(line).get("p", "")) for line in text.splitlines())
    assert "zip" in payloads
    assert _find(text, plain, quoted) == []
    assert _find(payloads, plain, quoted) == []


def test_the_logs_and_the_html_report_hold_no_plaintext_identifier(demo_run: dict[str, object]) -> None:
    plain, quoted = _needles(demo_run["profiles"])  # type: ignore[arg-type]
    report = demo_run["report"]
    assert isinstance(report, Path)
    logs = str(demo_run["logs"])
    assert "target synced" in logs
    assert _find(logs, plain, quoted) == []
    assert _find(report.read_text(encoding="utf-8"), plain, quoted) == []


def test_the_sealed_values_open_to_what_was_sent(demo_run: dict[str, object]) -> None:
    from audiencesync.state.sealed import sealer_for

    state = demo_run["state"]
    assert isinstance(state, Path)
    conn = sqlite3.connect(state)
    try:
        sealer = sealer_for(conn)
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM members")]
    finally:
        conn.close()
    zips = [p["zip"] for p in payloads if "zip" in p]
    assert zips and all(z.startswith(PREFIX) for z in zips)
    profiles = demo_run["profiles"]
    assert isinstance(profiles, list)
    codes = {str(p["postcode"]).replace(" ", "").lower() for p in profiles if p["postcode"]}
    # Meta's zips are hashed (and sealed all the same); Google's open to the postal code itself.
    opened = {sealer.open(z) for z in zips} - {
        o for o in map(sealer.open, zips) if re.fullmatch("[0-9a-f]{64}", o)
    }
    assert opened
    assert all(any(o.replace(" ", "").lower() in c for c in codes) for o in opened)


# --- secrets -------------------------------------------------------------------------------------

TOKENS = [
    "EAABsbCS1iHgBAKZCZB7ZBhZCZAZBn1Q0ZB3ZBZCexample",
    "ya29.a0AfH6SMBx3-example_access_token",
    "1//0gLxExampleRefreshToken-abc",
    "4f1c2a9be07d3b6c5a8e9f0d1c2b3a4f5e6d7c8b",
    "aB3dE5fG7hI9jK1lM3nO5p",
    "Bearer abc.def.ghi",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
]


@pytest.mark.parametrize("token", TOKENS)
def test_redact_hides_token_shapes(token: str) -> None:
    text = redact(f"the platform said: token {token} is bad")
    assert token not in text and REDACTED in text


@pytest.mark.parametrize(
    "text",
    [
        "state file /tmp/pytest-of-root/pytest-12/test_bad_input_case0/state.db: is a directory",
        "destinations.meta_main.access_token_env: environment variable META_ACCESS_TOKEN is not set",
        "plan.jsonl line 14: missing field 'state_version'",
        "lapsed@google_main: 1,204 removes exceed max_remove_count 1000",
    ],
)
def test_redact_leaves_messages_readable(text: str) -> None:
    assert redact(text) == text


@given(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=24, max_size=80
    )
)
def test_any_long_mixed_case_token_is_redacted(token: str) -> None:
    has_all = (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
    )
    if has_all:
        assert token not in redact(f"error: {token}.")


def test_a_token_never_reaches_the_error_or_the_logs(tmp_path: Path) -> None:
    token = TOKENS[0]
    config = tmp_path / "c.toml"
    config.write_text(
        f'state_path = "s.db"\n[source]\nkind = "csv"\npath = "{token}.csv"\nid_column = "id"\n'
        'stage_column = "stage"\n[source.identifiers]\nemail = "email"\n[audiences.a]\nstage = "x"\n'
        '[destinations.m]\nplatform = "meta"\nad_account_id = "act_1"\n'
        f'access_token_env = "{token}"\n[[syncs]]\naudience = "a"\ndestinations = ["m"]\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["--log-format", "json", "-v", "sync", "--config", str(config)])
    assert result.exit_code == 2
    assert token not in result.output
    assert "access_token_env" in result.stderr


# --- the migration and the key -------------------------------------------------------------------


def test_the_migration_seals_rows_written_in_plain_text(tmp_path: Path) -> None:
    from audiencesync.state.db import connect
    from audiencesync.state.sealed import sealer_for

    path = tmp_path / "state.db"
    db = connect(path)
    plain = '{"country":"GB","email":"' + "a" * 64 + '","zip":"M1 1AE"}'
    db.execute("DROP TABLE sealing")
    # The sealing migration only, from both records of it.
    db.execute("DELETE FROM schema_migrations WHERE version = 4")
    db.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_seal_unhashed'")
    db.execute(
        "INSERT INTO targets (id, key, audience, destination, platform, created_at) "
        "VALUES (1, 'a@g', 'a', 'g', 'google', 0)"
    )
    for key in (b"k1", b"k2"):
        db.execute(
            "INSERT INTO members (target_id, member_key, raw_fp, payload_fp, payload, added_at, uploaded_at) "
            "VALUES (1, ?, x'00', x'00', ?, 0, 0)",
            [key, plain],
        )
    db.conn.close()
    db = connect(path)
    try:
        stored = [json.loads(p) for (p,) in db.execute("SELECT payload FROM members")]
        assert all(p["zip"].startswith(PREFIX) and p["country"].startswith(PREFIX) for p in stored)
        sealer = sealer_for(db.conn)
        assert {sealer.open(p["zip"]) for p in stored} == {"M1 1AE"}
        assert {p["email"] for p in stored} == {"a" * 64}
    finally:
        db.conn.close()
    # Closed, the WAL is checkpointed into the file; the plain rows were zeroed, not left behind.
    assert "M1 1AE" not in path.read_bytes().decode("latin-1")


def test_a_wrong_state_key_is_refused_before_anything_is_written(tmp_path: Path, demo_db: Path) -> None:
    from sample_configs import SOURCE

    destination = (
        '\n[destinations.g]\nplatform = "file"\ndirectory = "out"\nformat = "google"\n'
        '[[syncs]]\naudience = "vip"\ndestinations = ["g"]\n'
    )
    config = tmp_path / "c.toml"
    config.write_text(SOURCE + destination, encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(
        cli, ["sync", "--config", str(config)], env={"AUDIENCE_SYNC_STATE_KEY": "first key"}
    )
    assert first.exit_code == 0, first.output
    from audiencesync.sync.demo.profiles import advance

    advance(demo_db, share=0.05, seed=1)
    before = (tmp_path / "state.db").read_bytes()
    second = runner.invoke(
        cli, ["sync", "--config", str(config)], env={"AUDIENCE_SYNC_STATE_KEY": "another key"}
    )
    assert second.exit_code == 2, second.output
    assert "AUDIENCE_SYNC_STATE_KEY" in second.stderr and "does not open" in second.stderr
    assert "Traceback" not in second.output and "another key" not in second.output
    assert (tmp_path / "state.db").read_bytes() == before


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_are_redacted(fmt: str) -> None:
    import logging

    from audiencesync.sync.cli.logs import JsonFormatter, TextFormatter

    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    record = logging.LogRecord(
        "audiencesync.x", logging.WARNING, __file__, 1, "refused %s", (TOKENS[0],), None
    )
    record.detail = f"token={TOKENS[3]}"
    line = formatter.format(record)
    assert TOKENS[0] not in line and TOKENS[3] not in line and REDACTED in line
