"""The bad-input corpus: saved plan files. What every case must end with is in bad_input_case.py."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from audiencesync.sync.demo.profiles import advance
from bad_input_case import Case, assert_one_line, assert_refused, run, state_digest

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
