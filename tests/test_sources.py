"""Sources stream rows and name the file and row of anything they cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.errors import SourceError
from audiencesync.sync.source_scan import read_scan
from audiencesync.sync.sources import (
    parse_consent,
    parse_tags,
    parse_timestamp,
    read_audience,
    read_audience_batches,
)


def source(path: Path, kind: str) -> SourceConfig:
    return SourceConfig(
        kind=kind,
        path=path,
        table="profiles",
        id_column="id",
        stage_column="stage",
        in_flow_column="flows",
        changed_at_column="changed",
        consent_column="consent",
        default_country="US",
        identifiers={"email": "email"},
        prehashed=frozenset(),
    )


CHECKOUT = AudienceConfig("in_checkout", in_flow="abandoned_checkout")
LAPSED = AudienceConfig("lapsed", stage="lapsed_customer")


def test_csv_rows_are_filtered_by_stage_and_flow(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "id,email,stage,flows,consent,changed\n"
        "1,a@x.com,lapsed_customer,,yes,2026-01-01T00:00:00Z\n"
        '2,b@x.com,vip,"welcome,abandoned_checkout",0,\n'
        "3,c@x.com,lapsed_customer,added_to_cart,,1700000000\n"
    )
    lapsed = list(read_audience(source(path, "csv"), LAPSED))
    assert [r.profile_id for r in lapsed] == ["1", "3"]
    assert lapsed[0].consent is True and lapsed[0].changed_at == 1767225600.0
    assert lapsed[1].changed_at == 1700000000.0
    assert [r.profile_id for r in read_audience(source(path, "csv"), CHECKOUT)] == ["2"]


def test_jsonl_tags_may_be_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"id": 1, "email": "a@x.com", "stage": "vip", "flows": ["abandoned_checkout"]},
        {"id": 2, "stage": "vip", "flows": "[]"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = list(read_audience(source(path, "jsonl"), CHECKOUT))
    assert [(r.profile_id, r.raw["email"]) for r in got] == [("1", "a@x.com")]


def test_an_unreadable_csv_row_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,email,stage,flows,consent,changed\n1,a@x.com,vip,,,\n2,b@x.com,vip,,,,extra,fields\n")
    with pytest.raises(SourceError) as caught:
        list(read_audience(source(path, "csv"), AudienceConfig("vip", stage="vip")))
    assert str(caught.value) == f"{path} line 3: more fields than the header has"


def test_a_csv_without_a_mapped_column_says_which(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,mail,stage\n1,a@x.com,vip\n")
    with pytest.raises(SourceError, match="header: no column\\(s\\) email"):
        list(read_audience(source(path, "csv"), LAPSED))


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "stage": "vip"}\n{"id": 2, "stage": \n')
    with pytest.raises(SourceError, match=r"p.jsonl line 2: not valid JSON"):
        list(read_audience(source(path, "jsonl"), AudienceConfig("vip", stage="vip")))


def test_a_row_without_an_id_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"email": "a@x.com", "stage": "vip"}\n')
    with pytest.raises(SourceError, match="row 1: column 'id' is empty or missing"):
        list(read_audience(source(path, "jsonl"), AudienceConfig("vip", stage="vip")))


def test_parsers() -> None:
    assert parse_tags('["a", "b"]') == {"a", "b"} == parse_tags("a, b")
    assert parse_tags(None) == set()
    assert (
        parse_consent("granted") is True and parse_consent("DENIED") is False and parse_consent("?") is None
    )
    assert parse_timestamp("2026-01-01T00:00:00") == 1767225600.0
    assert parse_timestamp("not a time") is None


def _checkout_csv(tmp_path: Path) -> Path:
    path = tmp_path / "p.csv"
    path.write_text(
        "id,email,stage,flows,consent,changed\n"
        "1,a@x.com,lapsed_customer,,yes,2026-01-01T00:00:00Z\n"
        '2,b@x.com,vip,"welcome,abandoned_checkout",0,\n'
        '3,,lapsed_customer,"abandoned_checkout_old",,1700000000\n'
        '4,d@x.com,lapsed_customer,"abandoned_checkout",granted,1700000001\n'
    )
    return path


@pytest.mark.parametrize("audience", [LAPSED, CHECKOUT])
def test_column_batches_hold_exactly_the_rows_read_audience_streams(
    tmp_path: Path, audience: AudienceConfig
) -> None:
    config = source(_checkout_csv(tmp_path), "csv")
    batched = [row for batch in read_audience_batches(config, audience) for row in batch.rows()]
    assert batched == list(read_audience(config, audience))


def test_one_scan_marks_each_row_with_the_audiences_it_is_in(tmp_path: Path) -> None:
    config = source(_checkout_csv(tmp_path), "csv")
    rows = [row for batch in read_scan(config, [LAPSED, CHECKOUT]) for row in batch.rows()]
    # Bit 1: lapsed; bit 2: in the checkout flow (an exact tag: "abandoned_checkout_old" is not it).
    assert {r.profile_id: r.member_of for r in rows} == {"1": 1, "2": 2, "3": 1, "4": 3}
    assert {r.profile_id: r.raw["email"] for r in rows}["3"] is None


def test_a_scan_of_changes_reads_rows_changed_since_in_an_audience_or_not(tmp_path: Path) -> None:
    config = source(_checkout_csv(tmp_path), "csv")
    rows = [
        row for batch in read_scan(config, [CHECKOUT], changed_since=1700000001.0) for row in batch.rows()
    ]
    # Row 2 has no change time: it is read every time. Row 3 changed before; row 1 is not in the
    # audience but changed since, so it is read (it may have left).
    assert {r.profile_id: r.member_of for r in rows} == {"1": 0, "2": 1, "4": 1}
