"""Sources stream rows and name the file and row of anything they cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.errors import SourceError
from audiencesync.sync.sources import parse_consent, parse_tags, parse_timestamp, read_audience


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
