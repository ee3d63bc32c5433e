"""The bad-input corpus: every case is one thing a user (or a platform) can get wrong, run through the
CLI, and must end with the documented exit code, a short message naming the file, key or line, no
traceback, and the state file unchanged.

The cases share one synced state (a small demo database synced to a file destination), copied into
each test's own folder, so the corpus runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.demo.profiles import advance, build_profiles
from click.testing import CliRunner, Result
from sample_configs import FILE_DESTINATION, SOURCE

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


@pytest.fixture(scope="module")
def synced_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a 400-profile source synced once to a file destination."""
    root = tmp_path_factory.mktemp("synced")
    build_profiles(root / "profiles.db", 400, seed=5)
    (root / "audience-sync.toml").write_text(
        textwrap.dedent(SOURCE) + textwrap.dedent(FILE_DESTINATION), encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["sync", "--config", str(root / "audience-sync.toml")])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def case(synced_template: Path, tmp_path: Path) -> Case:
    root = tmp_path / "case"
    shutil.copytree(synced_template, root)
    return Case(root)


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


# --- config -------------------------------------------------------------------------------------

CONFIG_CASES: list[tuple[str, Callable[[Case], None], tuple[str, ...]]] = [
    ("not_toml", lambda c: c.config.write_text("this is = = not toml [", encoding="utf-8"), ()),
    ("not_utf8", lambda c: c.config.write_bytes(b'state_path = "\xff\xfe"\n'), ()),
    ("no_source", lambda c: c.replace_in_config("[source]", "[sauce]"), ("source",)),
    ("bad_source_kind", lambda c: c.replace_in_config('kind = "sqlite"', 'kind = "excel"'), ("source.kind",)),
    ("unknown_identifier", lambda c: c.replace_in_config('zip = "postcode"', 'zipp = "postcode"'), ("zipp",)),
    (
        "bad_country",
        lambda c: c.replace_in_config('default_country = "US"', 'default_country = "XX"'),
        ("source.default_country",),
    ),
    (
        "state_path_number",
        lambda c: c.replace_in_config('state_path = "state.db"', "state_path = 7"),
        ("state_path",),
    ),
    ("no_platform", lambda c: c.replace_in_config('platform = "file"', ""), ("destinations.files.platform",)),
    (
        "unknown_platform",
        lambda c: c.replace_in_config('platform = "file"', 'platform = "myspace"'),
        ("destinations.files.platform",),
    ),
    (
        "unknown_sync_audience",
        lambda c: c.replace_in_config('audience = "vip"', 'audience = "vipp"'),
        ("vipp",),
    ),
    (
        "unknown_sync_destination",
        lambda c: c.replace_in_config('destinations = ["files"]', 'destinations = ["nowhere"]'),
        ("nowhere",),
    ),
    (
        "no_syncs",
        lambda c: c.config.write_text(c.config.read_text().split("[[syncs]]")[0], encoding="utf-8"),
        ("syncs",),
    ),
    ("audience_without_rule", lambda c: c.replace_in_config('stage = "vip"', ""), ("vip",)),
    (
        "unknown_top_key",
        lambda c: c.replace_in_config('state_path = "state.db"', 'state_path = "state.db"\nstate_pth = "x"'),
        ("state_pth",),
    ),
    (
        "bad_format",
        lambda c: c.replace_in_config('format = "meta"', 'format = "snapchat"'),
        ("destinations.files.format",),
    ),
    (
        "secret_in_file",
        lambda c: c.replace_in_config('format = "meta"', f'format = "meta"\naccess_token = "{META_TOKEN}"'),
        ("destinations.files.access_token",),
    ),
    (
        "destination_not_table",
        lambda c: c.replace_in_config(
            '[destinations.files]\nplatform = "file"\ndirectory = "exports"\nformat = "meta"',
            "[destinations]\nfiles = 3",
        ),
        ("destinations.files",),
    ),
]

TOKEN_CONFIGS = {
    "meta": """
        [destinations.m]
        platform = "meta"
        ad_account_id = "act_1234"
        access_token_env = "{value}"
        """,
    "tiktok": """
        [destinations.t]
        platform = "tiktok"
        advertiser_id = "7000000000000000001"
        access_token_env = "{value}"
        """,
    "google": """
        [destinations.g]
        platform = "google"
        backend = "google_ads"
        customer_id = "1234567890"
        developer_token_env = "{value}"
        """,
}
TOKENS = {"meta": META_TOKEN, "tiktok": TIKTOK_TOKEN, "google": GOOGLE_DEV_TOKEN}
ENV_KEYS = {"meta": "access_token_env", "tiktok": "access_token_env", "google": "developer_token_env"}


@pytest.mark.parametrize("name,mutate,names", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_cases(case: Case, name: str, mutate: Callable[[Case], None], names: tuple[str, ...]) -> None:
    before = state_digest(case.state)
    mutate(case)
    result = run(case, "sync", "--config", str(case.config))
    message = assert_refused(result, str(case.config), *names)
    assert message.splitlines()[0].startswith("error:")
    assert state_digest(case.state) == before


def _token_destination(case: Case, platform: str, value: str) -> None:
    text = case.config.read_text(encoding="utf-8")
    case.config.write_text(
        text + textwrap.dedent(TOKEN_CONFIGS[platform].format(value=value)), encoding="utf-8"
    )


@pytest.mark.parametrize("platform", sorted(TOKENS))
def test_a_token_pasted_for_the_variable_name_is_refused_unseen(case: Case, platform: str) -> None:
    before = state_digest(case.state)
    _token_destination(case, platform, TOKENS[platform])
    result = run(case, "validate", "--config", str(case.config))
    assert_refused(result, ENV_KEYS[platform], secret=TOKENS[platform])
    assert state_digest(case.state) == before


@pytest.mark.parametrize("platform", sorted(TOKENS))
def test_a_token_with_whitespace_inside_is_refused_by_name_unseen(case: Case, platform: str) -> None:
    _token_destination(case, platform, "MY_TOKEN")
    token = TOKENS[platform][:10] + "\n" + TOKENS[platform][10:]
    result = run(case, "validate", "--config", str(case.config), env={"MY_TOKEN": token})
    assert_refused(result, ENV_KEYS[platform], "MY_TOKEN", secret=TOKENS[platform][10:])


@pytest.mark.parametrize("platform", sorted(TOKENS))
def test_a_token_with_a_trailing_newline_is_trimmed(case: Case, platform: str) -> None:
    from audiencesync.sync.config import load_config

    _token_destination(case, platform, "MY_TOKEN")
    config = load_config(case.config, {"MY_TOKEN": f"  {TOKENS[platform]}\n"})
    secrets = {d.name: d.secrets for d in config.destinations.values()}
    assert TOKENS[platform] in [v for s in secrets.values() for v in s.values()]
    assert all(v == v.strip() for s in secrets.values() for v in s.values())


def test_a_missing_config_file(case: Case) -> None:
    result = run(case, "sync", "--config", str(case.root / "nope.toml"))
    assert_one_line(assert_refused(result, "nope.toml"))


def test_a_config_path_that_is_a_directory(case: Case) -> None:
    (case.root / "conf.d").mkdir()
    result = run(case, "validate", "--config", str(case.root / "conf.d"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "conf.d" in result.output


def test_only_matches_nothing(case: Case) -> None:
    before = state_digest(case.state)
    result = run(case, "sync", "--config", str(case.config), "--only", "nosuch")
    assert_one_line(assert_refused(result, "--only nosuch"))
    assert state_digest(case.state) == before


# --- source -------------------------------------------------------------------------------------

CSV_SOURCE = (
    """
    state_path = "state.db"

    [source]
    kind = "{kind}"
    path = "{path}"
    id_column = "profile_id"
    stage_column = "stage"
    default_country = "US"

    [source.identifiers]
    email = "email"

    [audiences.vip]
    stage = "vip"
    """
    + FILE_DESTINATION.split("[[syncs]]")[0]
    + """
    [[syncs]]
    audience = "vip"
    destinations = ["files"]
    """
)

SOURCE_CASES: list[tuple[str, str, str, bytes | None, tuple[str, ...]]] = [
    # (id, kind, file name, content (None: make a directory), names in the message)
    ("csv_missing", "csv", "gone.csv", b"", ("gone.csv",)),
    ("csv_directory", "csv", "export.csv", None, ("export.csv", "directory")),
    ("jsonl_directory", "jsonl", "export.jsonl", None, ("export.jsonl", "directory")),
    ("sqlite_directory", "sqlite", "export.db", None, ("export.db", "directory")),
    ("csv_no_id_column", "csv", "a.csv", b"id,stage,email\n1,vip,a@example.com\n", ("a.csv", "profile_id")),
    ("csv_not_utf8", "csv", "b.csv", b"profile_id,stage,email\n1,vip,\xff\xfe@x.com\n", ("b.csv",)),
    ("jsonl_bad_json", "jsonl", "c.jsonl", b'{"profile_id": "1", "stage": "vip"}\n{not json\n', ("c.jsonl",)),
    ("jsonl_not_object", "jsonl", "d.jsonl", b'["profile_id", "1"]\n', ("d.jsonl",)),
    (
        "jsonl_not_utf8",
        "jsonl",
        "e.jsonl",
        b'{"profile_id": "1", "stage": "vip", "email": "\xff"}\n',
        ("e.jsonl",),
    ),
    ("sqlite_not_a_database", "sqlite", "f.db", b"this is not sqlite at all, just text" * 10, ("f.db",)),
]


@pytest.mark.parametrize("name,kind,file,content,names", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_source_cases(
    case: Case, name: str, kind: str, file: str, content: bytes | None, names: tuple[str, ...]
) -> None:
    before = state_digest(case.state)
    path = case.root / file
    if content is None:
        path.mkdir()
    elif name != "csv_missing":
        path.write_bytes(content)
    text = CSV_SOURCE.format(kind=kind, path=file)
    if kind == "sqlite":
        text = text.replace('path = "export.db"', 'path = "export.db"\n    table = "profiles"').replace(
            'path = "f.db"', 'path = "f.db"\n    table = "profiles"'
        )
    case.write_config(text)
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, *names))
    assert state_digest(case.state) == before


SQLITE_CASES = [
    ("missing_table", 'table = "profiles"', 'table = "profilez"', ("profilez",)),
    ("missing_identifier_column", 'email = "email"', 'email = "e_mail"', ("e_mail",)),
]


@pytest.mark.parametrize("name,old,new,names", SQLITE_CASES, ids=[c[0] for c in SQLITE_CASES])
def test_sqlite_source_cases(case: Case, name: str, old: str, new: str, names: tuple[str, ...]) -> None:
    before = state_digest(case.state)
    case.replace_in_config(old, new)
    result = run(case, "sync", "--config", str(case.config))
    assert_refused(result, *names)
    assert state_digest(case.state) == before


def test_a_stage_column_that_does_not_exist_is_refused_before_planning(case: Case) -> None:
    # The source check runs before any plan: a misnamed stage column is bad input (exit 2), named by
    # its key path with the columns that do exist, and state is left as it was.
    case.replace_in_config('stage_column = "stage"', 'stage_column = "stagez"')
    before = state_digest(case.state)
    result = run(case, "sync", "--config", str(case.config), "--json")
    assert_one_line(assert_refused(result, "source.stage_column", "stagez"))
    assert "did you mean 'stage'" in result.output
    assert state_digest(case.state) == before
    conn = sqlite3.connect(case.state)
    try:
        assert conn.execute("SELECT count(*) FROM outbox WHERE op = 'remove'").fetchone()[0] == 0
    finally:
        conn.close()


# --- state files --------------------------------------------------------------------------------


def _garbage(case: Case) -> None:
    case.state.write_bytes(os.urandom(8192))


def _truncated_header(case: Case) -> None:
    case.state.write_bytes(case.state.read_bytes()[:60])


def _truncated_pages(case: Case) -> None:
    case.state.write_bytes(case.state.read_bytes()[: 4096 * 3])


def _text(case: Case) -> None:
    case.state.write_text("members,outbox\n1,2\n", encoding="utf-8")


def _corrupt_middle(case: Case) -> None:
    raw = bytearray(case.state.read_bytes())
    raw[100 : 4096 * 4] = b"\x00" * (4096 * 4 - 100)
    case.state.write_bytes(bytes(raw))


def _newer_schema(case: Case) -> None:
    conn = sqlite3.connect(case.state)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    conn.commit()
    conn.close()


def _foreign_database(case: Case) -> None:
    case.state.unlink()
    shutil.copy(case.root / "profiles.db", case.state)


def _bad_key_file(case: Case) -> None:
    (case.root / "state.db.key").write_text("not a key\n", encoding="utf-8")


STATE_CASES: list[tuple[str, Callable[[Case], None], tuple[str, ...]]] = [
    ("garbage", _garbage, ("state.db", "corrupt")),
    ("truncated_header", _truncated_header, ("state.db", "truncated")),
    ("truncated_pages", _truncated_pages, ("state.db",)),
    ("text_file", _text, ("state.db",)),
    ("zeroed_pages", _corrupt_middle, ("state.db",)),
    ("newer_schema", _newer_schema, ("state.db", "999", "newer")),
    ("foreign_database", _foreign_database, ("state.db", "did not create")),
]


@pytest.mark.parametrize("name,damage,names", STATE_CASES, ids=[c[0] for c in STATE_CASES])
@pytest.mark.parametrize("command", ["sync", "dry-run", "runs", "lag"])
def test_state_cases(
    case: Case, name: str, damage: Callable[[Case], None], names: tuple[str, ...], command: str
) -> None:
    damage(case)
    before = state_digest(case.state)
    raw_before = case.state.read_bytes()
    args = ["sync", "--dry-run"] if command == "dry-run" else [command]
    result = run(case, *args, "--config", str(case.config))
    assert_one_line(assert_refused(result, *names))
    assert state_digest(case.state) == before
    assert case.state.read_bytes() == raw_before


def test_a_newer_schema_names_both_versions(case: Case) -> None:
    from audiencesync.state.db import MIGRATIONS

    _newer_schema(case)
    result = run(case, "sync", "--config", str(case.config))
    message = assert_refused(result, "999", f"({max(v for v, _, _ in MIGRATIONS)})")
    assert_one_line(message)


def test_a_key_file_that_is_not_a_key(case: Case) -> None:
    _bad_key_file(case)
    before = state_digest(case.state)
    assert advance(case.root / "profiles.db", share=0.2, seed=1).stage_moves
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, "state.db.key"))
    assert state_digest(case.state) == before


def test_a_state_path_that_is_a_directory(case: Case) -> None:
    case.replace_in_config('state_path = "state.db"', 'state_path = "statedir"')
    (case.root / "statedir").mkdir()
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, "statedir", "directory"))
    assert list((case.root / "statedir").iterdir()) == []


def test_a_state_path_under_a_file(case: Case) -> None:
    case.replace_in_config('state_path = "state.db"', 'state_path = "profiles.db/state.db"')
    before = (case.root / "profiles.db").read_bytes()
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, "profiles.db", "is a file"))
    assert (case.root / "profiles.db").read_bytes() == before


def test_a_locked_state_file(case: Case) -> None:
    assert advance(case.root / "profiles.db", share=0.2, seed=2).stage_moves
    before = state_digest(case.state)
    holder = sqlite3.connect(case.state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(
            case, "sync", "--config", str(case.config), env={"AUDIENCE_SYNC_STATE_BUSY_SECONDS": "0.2"}
        )
        assert_one_line(assert_refused(result, "state.db", "locked"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert state_digest(case.state) == before


def _require_root_mounts() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (read-only or full filesystems)")


@contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``, unmounted afterwards."""
    _require_root_mounts()
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs failed here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_state_directory(case: Case) -> None:
    assert advance(case.root / "profiles.db", share=0.2, seed=3).stage_moves
    with small_filesystem(case.root / "ro", "8m") as mount:
        shutil.copy(case.state, mount / "state.db")
        shutil.copy(case.root / "state.db.key", mount / "state.db.key") if (
            case.root / "state.db.key"
        ).exists() else None
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        case.replace_in_config('state_path = "state.db"', 'state_path = "ro/state.db"')
        before = (mount / "state.db").read_bytes()
        result = run(case, "sync", "--config", str(case.config))
        assert_one_line(assert_refused(result, "ro/state.db", "read-only"))
        assert (mount / "state.db").read_bytes() == before


def test_a_full_disk_stops_cleanly_and_the_next_run_succeeds(case: Case) -> None:
    case.replace_in_config('state_path = "state.db"', 'state_path = "small/state.db"')
    build_profiles(case.root / "profiles.db", 4000, seed=9)
    with small_filesystem(case.root / "small", "160k") as mount:
        result = run(case, "sync", "--config", str(case.config))
        assert_one_line(assert_refused(result, "small/state.db", "disk is full"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        again = run(case, "sync", "--config", str(case.config))
        assert again.exit_code == 0, again.output
        conn = sqlite3.connect(mount / "state.db")
        try:
            assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM members").fetchone()[0] > 0
        finally:
            conn.close()


# --- plan files ---------------------------------------------------------------------------------


@pytest.fixture
def planned(case: Case) -> tuple[Case, Path]:
    """The case with a saved plan of real changes (the source moved on since the sync)."""
    assert advance(case.root / "profiles.db", share=0.3, seed=4).stage_moves
    plan = case.root / "plan.jsonl"
    made = run(
        case,
        "sync",
        "--config",
        str(case.config),
        "--dry-run",
        "--allow-mass-remove",
        "--plan-out",
        str(plan),
    )
    assert made.exit_code == 0, made.output
    return case, plan


def _lines(plan: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in plan.read_text(encoding="utf-8").splitlines()]


def _rewrite(plan: Path, items: list[dict[str, object]], *, checksum: bool = True) -> None:
    """Write ``items`` back, with a recomputed trailer: an edit made by someone who knows the format."""
    body = "".join(json.dumps(item) + "\n" for item in items[:-1])
    trailer = {"checksum": hashlib.sha256(body.encode()).hexdigest()} if checksum else items[-1]
    plan.write_text(body + json.dumps(trailer) + "\n", encoding="utf-8")


def _first_op(items: list[dict[str, object]]) -> int:
    return next(i for i, item in enumerate(items) if "k" in item)


def _edit_op(field: str, value: object) -> Callable[[Path], None]:
    def edit(plan: Path) -> None:
        items = _lines(plan)
        items[_first_op(items)][field] = value
        _rewrite(plan, items)

    return edit


def _drop_op_field(field: str) -> Callable[[Path], None]:
    def edit(plan: Path) -> None:
        items = _lines(plan)
        del items[_first_op(items)][field]
        _rewrite(plan, items)

    return edit


def _edit_section(field: str, value: object) -> Callable[[Path], None]:
    def edit(plan: Path) -> None:
        items = _lines(plan)
        section = next(i for i, item in enumerate(items) if "target" in item)
        if value is None:
            del items[section][field]
        else:
            items[section][field] = value
        _rewrite(plan, items)

    return edit


def _edit_header(field: str, value: object) -> Callable[[Path], None]:
    def edit(plan: Path) -> None:
        items = _lines(plan)
        items[0][field] = value
        _rewrite(plan, items)

    return edit


def _foreign_remove(plan: Path) -> None:
    items = _lines(plan)
    op = dict(items[_first_op(items)])
    op.update(k="ab" * 16, op="remove", p=json.dumps({"email": "0" * 64}))
    items.insert(_first_op(items), op)
    _rewrite(plan, items)


def _unsigned_edit(plan: Path) -> None:
    text = plan.read_text(encoding="utf-8")
    plan.write_text(text.replace('"op": "add"', '"op": "remove"', 1), encoding="utf-8")


def _insert_line(line: str) -> Callable[[Path], None]:
    def edit(plan: Path) -> None:
        lines = plan.read_text(encoding="utf-8").splitlines(keepends=True)
        lines.insert(2, line)
        plan.write_text("".join(lines), encoding="utf-8")

    return edit


def _insert_item(item: object) -> Callable[[Path], None]:
    def edit(plan: Path) -> None:
        items: list[object] = list(_lines(plan))
        items.insert(2, item)
        body = "".join(json.dumps(i) + "\n" for i in items[:-1])
        plan.write_text(body + json.dumps({"checksum": hashlib.sha256(body.encode()).hexdigest()}) + "\n")

    return edit


PLAN_CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("not_json", lambda p: p.write_text("hello, world\n", encoding="utf-8"), ("bad JSON",)),
    ("empty", lambda p: p.write_bytes(b""), ("empty",)),
    ("binary", lambda p: p.write_bytes(os.urandom(300)), ("plan.jsonl",)),
    ("wrong_format", lambda p: p.write_text(json.dumps({"format": "other"}) + "\n"), ("not a plan",)),
    (
        "truncated_last_line",
        lambda p: p.write_text("".join(p.read_text().splitlines(True)[:-1])),
        ("truncated",),
    ),
    (
        "truncated_mid_line",
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        ("plan.jsonl",),
    ),
    ("truncated_to_header", lambda p: p.write_text(p.read_text().splitlines(True)[0]), ("truncated",)),
    ("edited_without_checksum", _unsigned_edit, ("checksum mismatch",)),
    ("edited_foreign_remove", _foreign_remove, ("never added",)),
    ("old_version", _edit_header("version", 1), ("version",)),
    ("other_config", _edit_header("config_sha256", "0" * 64), ("different config",)),
    ("section_no_target", _edit_section("target", None), ("line",)),
    ("section_no_state_version", _edit_section("state_version", None), ("state_version",)),
    ("section_state_version_text", _edit_section("state_version", "three"), ("state_version",)),
    ("section_no_max_batch", _edit_section("max_batch", None), ("max_batch",)),
    ("section_unknown_target", _edit_section("target", "nope@nowhere"), ("nope@nowhere",)),
    ("op_no_payload", _drop_op_field("p"), ("'p'",)),
    ("op_no_key", _drop_op_field("k"), ("line",)),
    ("op_no_op", _drop_op_field("op"), ("'op'",)),
    ("op_bad_op", _edit_op("op", "upsert"), ("add or remove",)),
    ("op_key_not_hex", _edit_op("k", "zz-not-hex"), ("hexadecimal",)),
    ("op_payload_number", _edit_op("p", 17), ("'p'",)),
    ("line_is_array", _insert_item([1, 2, 3]), ("JSON object",)),
    ("line_is_junk", _insert_line("{broken\n"), ("bad JSON",)),
    ("stale_state_version", _edit_section("state_version", 12345), ("moved on",)),
]


@pytest.mark.parametrize("name,edit,names", PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_plan_cases(
    planned: tuple[Case, Path], name: str, edit: Callable[[Path], None], names: tuple[str, ...]
) -> None:
    case, plan = planned
    before = state_digest(case.state)
    edit(plan)
    result = run(case, "sync", "--config", str(case.config), "--apply-plan", str(plan))
    assert_one_line(assert_refused(result, *names))
    assert state_digest(case.state) == before


def test_an_intact_plan_applies(planned: tuple[Case, Path]) -> None:
    case, plan = planned
    result = run(case, "sync", "--config", str(case.config), "--apply-plan", str(plan))
    assert result.exit_code == 0, result.output


def test_a_plan_made_before_the_config_changed(planned: tuple[Case, Path]) -> None:
    case, plan = planned
    before = state_digest(case.state)
    case.replace_in_config('default_country = "US"', 'default_country = "GB"')
    result = run(case, "sync", "--config", str(case.config), "--apply-plan", str(plan))
    assert_one_line(assert_refused(result, "different config"))
    assert state_digest(case.state) == before


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_a_plan_path_that_is_not_a_file(case: Case, where: str) -> None:
    before = state_digest(case.state)
    plan = case.root / "plan.jsonl"
    if where == "directory":
        plan.mkdir()
    result = run(case, "sync", "--config", str(case.config), "--apply-plan", str(plan))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "plan.jsonl" in result.output
    assert state_digest(case.state) == before


# --- identifiers and the breaker ---------------------------------------------------------------


def test_a_nul_byte_in_an_email_is_counted_invalid_and_never_sent(case: Case) -> None:
    conn = sqlite3.connect(case.root / "profiles.db")
    victim = conn.execute("SELECT profile_id, email FROM profiles WHERE stage = 'vip' LIMIT 1").fetchone()
    conn.execute("UPDATE profiles SET email = ? WHERE profile_id = ?", [victim[1] + "\x00x", victim[0]])
    conn.commit()
    conn.close()
    result = run(case, "sync", "--config", str(case.config), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    vip = next(t for t in json.loads(result.stdout)["targets"] if t["audience"] == "vip")
    assert vip["invalid"].get("email:email_control_character") == 1


def test_a_blanked_email_column_trips_the_breaker(case: Case) -> None:
    before = state_digest(case.state)
    conn = sqlite3.connect(case.root / "profiles.db")
    conn.execute("UPDATE profiles SET email = NULL")
    conn.commit()
    conn.close()
    result = run(case, "sync", "--config", str(case.config), "--json")
    targets = json.loads(result.stdout)["targets"]
    assert {t["status"] for t in targets} == {"breaker"}, result.output
    assert all("lose their email" in t["breaker"] for t in targets)
    conn = sqlite3.connect(case.state)
    try:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    finally:
        conn.close()
    assert before != state_digest(case.state)  # the refused run is recorded, nothing else


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
        conn = sqlite3.connect(case.state)
        members_before = conn.execute("SELECT count(*) FROM members").fetchone()[0]
        conn.close()
        result = run(case, "sync", "--config", str(case.config), "--json")
    # A platform that answers nonsense is a failed target (exit 1, documented), not a crash.
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    targets = json.loads(result.stdout)["targets"]
    # error (refused) or partial (transient: left queued for the next run); both exit 1.
    assert [t["status"] for t in targets] in (["error"], ["partial"])
    error = targets[0]["error"]
    assert error and "\n" not in error
    conn = sqlite3.connect(case.state)
    try:
        assert conn.execute("SELECT count(*) FROM members").fetchone()[0] == members_before
    finally:
        conn.close()


# --- a few as real processes ---------------------------------------------------------------------


@pytest.mark.parametrize("damage", [_garbage, _newer_schema], ids=["corrupt", "newer_schema"])
def test_as_a_subprocess(case: Case, damage: Callable[[Case], None]) -> None:
    damage(case)
    before = case.state.read_bytes()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("audience-sync")), "sync", "--config", str(case.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "state.db" in done.stderr
    assert case.state.read_bytes() == before


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
    conn = sqlite3.connect(case.state)
    members_before = conn.execute("SELECT count(*) FROM members").fetchone()[0]
    conn.close()
    result = run(case, "sync", "--config", str(case.config), "--json")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    targets = json.loads(result.stdout)["targets"]
    assert [t["status"] for t in targets] in (["error"], ["partial"])
    assert targets[0]["push"]["confirmed"] == 0
    conn = sqlite3.connect(case.state)
    try:
        assert conn.execute("SELECT count(*) FROM members").fetchone()[0] == members_before
    finally:
        conn.close()


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
