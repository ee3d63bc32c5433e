"""The bad-input corpus's shared parts (its cases are the tests/reliability/test_bad_input_*.py files).

Every case is one thing a user (or a platform) can get wrong, run through the CLI, and must end with
the documented exit code, a short message naming the file, key or line, no traceback, and the state
file unchanged. The cases share one synced state (a small demo database synced to a file
destination, the ``synced_template`` fixture), copied into each test's own folder (``case``), so the
corpus runs in seconds."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner, Result

META_TOKEN = "EAABsbCS1iHgBAKZCZB7ZBhZCZAZBn1Q0ZB3ZBZCexample0token"
TIKTOK_TOKEN = "4f1c2a9be07d3b6c5a8e9f0d1c2b3a4f5e6d7c8b"
GOOGLE_DEV_TOKEN = "aB3dE5fG7hI9jK1lM3nO5p"


@dataclass
class Case:
    """A prepared folder: the config, the source, the synced state, and the command to run."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "audience-sync.toml"

    @property
    def state(self) -> Path:
        return self.root / "state.db"

    def write_config(self, text: str) -> None:
        self.config.write_text(textwrap.dedent(text), encoding="utf-8")

    def replace_in_config(self, old: str, new: str) -> None:
        text = self.config.read_text(encoding="utf-8")
        assert old in text, old
        self.config.write_text(text.replace(old, new, 1), encoding="utf-8")


def state_digest(path: Path) -> str:
    """The state's content: its SQL dump when it is a database, else its bytes."""
    if not path.exists():
        return "absent"
    if path.is_dir():
        return "directory"
    raw = path.read_bytes()
    if not raw.startswith(b"SQLite format 3\x00"):
        return hashlib.sha256(raw).hexdigest()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    except sqlite3.DatabaseError:
        return hashlib.sha256(raw).hexdigest()
    finally:
        conn.close()


def run(case: Case, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [*args], env=env, catch_exceptions=True)


def assert_refused(result: Result, *names: str, code: int = 2, secret: str | None = None) -> str:
    """Exit ``code``, a message on stderr naming each of ``names``, no traceback, no crash."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error:"), result.output
    for name in names:
        assert name in message, (name, message)
    if secret is not None:
        assert secret not in result.output
    return message


def assert_one_line(message: str) -> None:
    assert "\n" not in message, message


def member_count(state: Path) -> int:
    conn = sqlite3.connect(state)
    try:
        return int(conn.execute("SELECT count(*) FROM members").fetchone()[0])
    finally:
        conn.close()


def assert_failed_target(result: Result) -> list[dict[str, Any]]:
    """A platform that fails is a failed target (exit 1, documented), not a crash: its status is error
    (refused) or partial (transient: left queued for the next run). Returns the JSON targets."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    targets: list[dict[str, Any]] = json.loads(result.stdout)["targets"]
    assert [t["status"] for t in targets] in (["error"], ["partial"])
    return targets
