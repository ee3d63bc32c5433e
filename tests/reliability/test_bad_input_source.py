"""The bad-input corpus: the source, its rows and identifiers, and the breaker. What every case must
end with is in bad_input_case.py."""

from __future__ import annotations

import json
import sqlite3

import pytest
from bad_input_case import Case, assert_one_line, assert_refused, run, state_digest
from sample_configs import FILE_DESTINATION

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
