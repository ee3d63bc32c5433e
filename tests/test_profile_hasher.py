"""ProfileHasher: a profile's raw values in, the hashed identifiers a platform takes out, in a fixed
order, with every refused value counted."""

from __future__ import annotations

import pytest
from audiencesync.connectors.contract import IDENTIFIER_KINDS
from audiencesync.sync.identity import (
    HashedProfile,
    ProfileHasher,
    sha256_hex,
)

# --- ProfileHasher ------------------------------------------------------------------------------


def test_output_keys_canonical_order_and_meta_dob() -> None:
    kinds = ["dob", "external_id", "email", "country", "phone", "first_name"]
    meta = ProfileHasher("meta", kinds, "US")
    assert meta.output_keys() == (
        "email",
        "phone",
        "first_name",
        "country",
        "doby",
        "dobm",
        "dobd",
        "external_id",
    )
    google = ProfileHasher("google", kinds, "US")
    assert google.output_keys() == ("email", "phone", "first_name", "country")
    tiktok = ProfileHasher("tiktok", [*kinds, "maid"], "US")
    assert tiktok.output_keys() == ("email", "phone", "maid")


def test_meta_dob_expansion() -> None:
    profile = ProfileHasher("meta", ["email", "dob"], None)({"email": "a@b.co", "dob": "1990-05-17"})
    assert profile.identifiers == {
        "email": sha256_hex("a@b.co"),
        "doby": sha256_hex("1990"),
        "dobm": sha256_hex("05"),
        "dobd": sha256_hex("17"),
    }
    assert list(profile.identifiers) == ["email", "doby", "dobm", "dobd"]
    assert profile.invalid == []


def test_identifiers_follow_output_key_order() -> None:
    hasher = ProfileHasher("meta", ["country", "gender", "dob", "zip", "email"], "US")
    raw = {"country": "US", "gender": "m", "dob": "20000101", "zip": "94025", "email": "a@b.co"}
    assert tuple(hasher(raw).identifiers) == hasher.output_keys()


def test_every_identifier_invalid() -> None:
    hasher = ProfileHasher("meta", list(IDENTIFIER_KINDS), "US")
    raw = {
        "email": "nope", "phone": "12", "first_name": "!!", "last_name": "--", "zip": " ", "city": ".",
        "state": "()", "country": "Atlantis", "dob": "17/05/1990", "gender": "x", "maid": "abc",
        "external_id": None,
    }  # fmt: skip
    profile = hasher(raw)
    assert profile == HashedProfile({}, profile.invalid)
    assert profile.identifiers == {}
    # Blank and None values are missing, not invalid.
    assert profile.invalid == [
        ("email", "email_no_at"),
        ("phone", "phone_too_short"),
        ("first_name", "name_empty"),
        ("last_name", "name_empty"),
        ("city", "city_empty"),
        ("state", "state_empty"),
        ("country", "country_unknown"),
        ("dob", "dob_not_iso"),
        ("gender", "gender_unknown"),
        ("maid", "maid_not_uuid"),
    ]


def test_missing_values_and_ignored_kinds() -> None:
    hasher = ProfileHasher("google", ["email", "phone", "city", "gender"], "US")
    assert hasher.output_keys() == ("email", "phone")
    assert hasher({}) == HashedProfile({}, [])
    assert hasher({"email": "", "phone": None, "city": "Paris", "gender": "x"}) == HashedProfile({}, [])


def test_prehashed_pass_through_and_rejection() -> None:
    digest = sha256_hex("mary@example.com")
    hasher = ProfileHasher("tiktok", ["email", "phone"], "US", prehashed=frozenset({"email"}))
    profile = hasher({"email": f"  {digest.upper()} ", "phone": "+1 415 555 0100"})
    assert profile.identifiers == {"email": digest, "phone": sha256_hex("+14155550100")}
    rejected = hasher({"email": "mary@example.com", "phone": "+1 415 555 0100"})
    assert rejected.identifiers == {"phone": sha256_hex("+14155550100")}
    assert rejected.invalid == [("email", "not_sha256")]
    assert hasher({"email": digest[:-1] + "g"}).invalid == [("email", "not_sha256")]
    assert hasher({"email": digest + "0"}).invalid == [("email", "not_sha256")]


def test_prehashed_meta_dob_cannot_be_split() -> None:
    hasher = ProfileHasher("meta", ["dob"], None, prehashed=frozenset({"dob"}))
    assert hasher({"dob": sha256_hex("19900517")}) == HashedProfile(
        {}, [("dob", "prehashed_dob_unsplittable")]
    )


def test_hasher_rejects_unknown_kinds_and_bad_default_country() -> None:
    with pytest.raises(ValueError):
        ProfileHasher("meta", ["email", "fi"], None)
    with pytest.raises(ValueError):
        ProfileHasher("meta", ["email"], "XX")
    # Config takes any two letters; the one common non-ISO code is read as what it means.
    assert ProfileHasher("meta", ["phone"], "UK")({"phone": "020 7946 0958"}).identifiers == {
        "phone": sha256_hex("442079460958")
    }
    assert ProfileHasher("meta", ["phone"], "gb")({"phone": "020 7946 0958"}).identifiers == {
        "phone": sha256_hex("442079460958")
    }
