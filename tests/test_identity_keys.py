"""Meta's other keys (state, city, birth date, gender, mobile advertiser ID, external ID) and which
kinds each platform takes and hashes."""

from __future__ import annotations

import pytest
from audiencesync.connectors.contract import IDENTIFIER_KINDS
from audiencesync.sync.identity import (
    NORMALIZATION_VERSION,
    PLATFORMS,
    ProfileHasher,
    is_hashed_on,
    normalize,
    platform_kinds,
    sha256_hex,
)
from identity_reasons import reason

# --- the other Meta keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("New York", None, "ny"),
        ("new-york", "US", "ny"),
        ("District of Columbia", "US", "dc"),
        ("Washington, D.C.", "US", "dc"),
        ("Washington", "US", "wa"),
        ("CA", "US", "ca"),
        (" tx ", None, "tx"),
        ("Bayern", "DE", "bayern"),
        ("Île-de-France", "FR", "îledefrance"),
        ("New York", "GB", "newyork"),
        ("ON", "CA", "on"),
    ],
)
def test_meta_state(value: str, country: str | None, expected: str) -> None:
    assert normalize("meta", "state", value, country) == expected


def test_all_us_states_and_dc() -> None:
    from audiencesync.sync.identity import US_STATES

    assert len(set(US_STATES.values())) == 51
    assert normalize("meta", "state", "West Virginia") == "wv"
    assert normalize("meta", "state", "RHODE ISLAND") == "ri"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("San Francisco", "sanfrancisco"), ("St. Louis", "stlouis"), ("Zürich", "zürich"), ("  NYC ", "nyc")],
)
def test_meta_city(value: str, expected: str) -> None:
    assert normalize("meta", "city", value) == expected


@pytest.mark.parametrize(("value", "expected"), [("1990-05-17", "19900517"), (" 19900517 ", "19900517")])
def test_dob(value: str, expected: str) -> None:
    assert normalize("meta", "dob", value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("17/05/1990", "dob_not_iso"),
        ("05/17/1990", "dob_not_iso"),
        ("1990-5-17", "dob_not_iso"),
        ("1990-0517", "dob_not_iso"),
        ("1990-02-30", "dob_impossible"),
        ("19901317", "dob_impossible"),
    ],
)
def test_bad_dob(value: str, why: str) -> None:
    assert reason("meta", "dob", value) == why


@pytest.mark.parametrize(("value", "expected"), [("M", "m"), ("male", "m"), (" Female ", "f"), ("f", "f")])
def test_gender(value: str, expected: str) -> None:
    assert normalize("meta", "gender", value) == expected


@pytest.mark.parametrize("value", ["x", "unknown", "", "mf"])
def test_bad_gender(value: str) -> None:
    assert reason("meta", "gender", value) == "gender_unknown"


def test_maid() -> None:
    value = " AECE52E7-03EE-455A-B3C4-E57283966239 "
    assert normalize("meta", "maid", value) == "aece52e7-03ee-455a-b3c4-e57283966239"
    assert not is_hashed_on("meta", "maid")
    assert is_hashed_on("tiktok", "maid")
    tiktok = ProfileHasher("tiktok", ["maid"], None)({"maid": value})
    assert tiktok.identifiers == {"maid": sha256_hex("aece52e7-03ee-455a-b3c4-e57283966239")}
    meta = ProfileHasher("meta", ["maid"], None)({"maid": value})
    assert meta.identifiers == {"maid": "aece52e7-03ee-455a-b3c4-e57283966239"}
    assert reason("tiktok", "maid", "not-a-uuid") == "maid_not_uuid"
    assert reason("meta", "maid", "AECE52E703EE455AB3C4E57283966239") == "maid_not_uuid"


def test_external_id_raw_on_meta() -> None:
    assert normalize("meta", "external_id", "  CRM-0042 ") == "CRM-0042"
    assert not is_hashed_on("meta", "external_id")
    assert reason("meta", "external_id", "   ") == "external_id_empty"


# --- the platform tables ------------------------------------------------------------------------


def test_platform_kinds() -> None:
    assert platform_kinds("meta") == frozenset(IDENTIFIER_KINDS)
    assert platform_kinds("google") == {"email", "phone", "first_name", "last_name", "zip", "country"}
    assert platform_kinds("tiktok") == {"email", "phone", "maid"}
    with pytest.raises(ValueError):
        platform_kinds("snapchat")


def test_is_hashed_on() -> None:
    raw = {(p, k) for p in PLATFORMS for k in IDENTIFIER_KINDS if not is_hashed_on(p, k)}
    assert raw == {("meta", "maid"), ("meta", "external_id"), ("google", "country"), ("google", "zip")}


def test_every_meta_kind_normalizes() -> None:
    samples = {
        "email": "a@b.co", "phone": "+1 415 555 0100", "first_name": "A", "last_name": "B",
        "zip": "94025", "city": "Paris", "state": "CA", "country": "FR", "dob": "2000-01-01",
        "gender": "F", "maid": "aece52e7-03ee-455a-b3c4-e57283966239", "external_id": "x1",
    }  # fmt: skip
    assert set(samples) == set(IDENTIFIER_KINDS)
    for kind, value in samples.items():
        assert normalize("meta", kind, value)


def test_kinds_a_platform_does_not_take() -> None:
    assert reason("google", "city", "Paris") == "kind_not_taken"
    assert reason("tiktok", "first_name", "Ann") == "kind_not_taken"
    with pytest.raises(ValueError):
        normalize("meta", "shoe_size", "42")
    with pytest.raises(ValueError):
        normalize("meta", "phone", "4155550100", "XX")


def test_normalization_version_is_an_int() -> None:
    assert isinstance(NORMALIZATION_VERSION, int) and NORMALIZATION_VERSION >= 1
