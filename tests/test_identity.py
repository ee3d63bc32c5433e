"""The identity module against the platforms' own vectors and the mistakes peers make; the other
keys, the hasher and the properties are in test_identity_keys.py, test_profile_hasher.py and
test_identity_properties.py."""

from __future__ import annotations

import pytest
from audiencesync.sync.identity import (
    PLATFORMS,
    ProfileHasher,
    is_hashed_on,
    normalize,
    sha256_hex,
)
from identity_reasons import reason

# --- the reference vectors ----------------------------------------------------------------------

# (platform, kind, input, default country, normalized, sha256). Meta's rows are the examples of its
# Marketing API customer-list docs and of the facebook-business SDK's tests; Google's come from the
# Data Manager client tests (googleads/data-manager-python) and follow the formatting guide
# (developers.google.com/data-manager/api/devguides/concepts/formatting). TikTok publishes no
# vectors; its rules (ads.tiktok.com/help/article/list-of-supported-ids-and-formats-for-a-customer-file:
# email as Meta's, phone E.164 with "+" as Google's) make the same inputs hash the same, so those rows
# are carried over for TikTok.
VECTORS = [
    ("meta", "email", "mary@example.com", None, "mary@example.com",
     "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"),
    ("meta", "phone", "15559876543", None, "15559876543",
     "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e"),
    ("meta", "phone", "15559876543", "US", "15559876543",
     "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e"),
    ("meta", "phone", "15559876543", "GB", "15559876543",
     "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e"),
    ("google", "email", "  ALEXZ@example.com   ", None, "alexz@example.com",
     "509e933019bb285a134a9334b8bb679dff79d0ce023d529af4bd744d47b4fd8a"),
    ("google", "phone", "+1 800-555-0100", None, "+18005550100",
     "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"),
    ("google", "phone", "+1 800-555-0100", "DE", "+18005550100",
     "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"),
    ("google", "first_name", "  GivenName  ", None, "givenname",
     "128a07bfe2df877c52076e60d7774cf5baaa046c5a6c48daf30ff43ecca2f814"),
    ("google", "last_name", "  FamilyName ", None, "familyname",
     "77762c287e61ce065bee5c15464012c6fbe088398b8057627d5577249430d574"),
    ("google", "email", "test@abc.com", None, "test@abc.com",
     "d3142c8f9c9129484daf28df80cc5c955791efed5e69afabb603bc8cb9ffd419"),
    ("tiktok", "email", "mary@example.com", None, "mary@example.com",
     "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"),
    ("tiktok", "email", "  ALEXZ@example.com   ", None, "alexz@example.com",
     "509e933019bb285a134a9334b8bb679dff79d0ce023d529af4bd744d47b4fd8a"),
    ("tiktok", "email", "test@abc.com", None, "test@abc.com",
     "d3142c8f9c9129484daf28df80cc5c955791efed5e69afabb603bc8cb9ffd419"),
    ("tiktok", "phone", "+1 800-555-0100", None, "+18005550100",
     "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"),
]  # fmt: skip


@pytest.mark.parametrize(("platform", "kind", "value", "country", "normalized", "digest"), VECTORS)
def test_reference_vectors(
    platform: str, kind: str, value: str, country: str | None, normalized: str, digest: str
) -> None:
    assert normalize(platform, kind, value, country) == normalized
    assert sha256_hex(normalized) == digest
    kinds = [kind, "country"] if country else [kind]
    raw = {kind: value, "country": country}
    assert ProfileHasher(platform, kinds, None)(raw).identifiers[kind] == digest


def test_meta_sdk_trim_vector_hashes_but_is_no_email() -> None:
    # Meta's SDK test trims and lowercases "  test  " to "test"; the same reference says an email
    # without a domain is rejected before hashing, so only the hash of the trimmed form is pinned.
    assert sha256_hex("  TEST  ".strip().lower()) == (
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    assert reason("meta", "email", "  test  ") == "email_no_at"
    assert normalize("meta", "email", "  TEST@Example.com  ") == "test@example.com"


# --- the mistakes peers make -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["United States", "united states", "USA", "U.S.", "US", "us", "U.S.A."])
def test_united_states_is_us_never_un(value: str) -> None:
    assert normalize("meta", "country", value) == "us"
    assert normalize("google", "country", value) == "US"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("United Kingdom", "GB"), ("UK", "GB"), ("Great Britain", "GB"), ("Deutschland", "DE"),
        ("Germany", "DE"), ("France", "FR"), ("España", "ES"), ("Spain", "ES"), ("Italia", "IT"),
        ("Italy", "IT"), ("Canada", "CA"), ("Australia", "AU"), ("Brasil", "BR"), ("Brazil", "BR"),
        ("México", "MX"), ("Mexico", "MX"), ("Nederland", "NL"), ("Netherlands", "NL"),
        ("Ireland", "IE"), ("Japan", "JP"), ("India", "IN"), (" fr ", "FR"), ("nz", "NZ"),
    ],
)  # fmt: skip
def test_country_names_and_codes(value: str, code: str) -> None:
    assert normalize("google", "country", value) == code
    assert normalize("meta", "country", value) == code.lower()


@pytest.mark.parametrize("value", ["Narnia", "", "X", "ZZ", "unitedstatez"])
def test_unknown_country(value: str) -> None:
    assert reason("meta", "country", value) == "country_unknown"


def test_google_country_and_zip_are_sent_raw() -> None:
    hasher = ProfileHasher("google", ["email", "zip", "country"], None)
    profile = hasher({"email": "a@b.co", "zip": "  94025 ", "country": "United States"})
    assert profile.identifiers == {"email": sha256_hex("a@b.co"), "zip": "94025", "country": "US"}


def test_accents_kept_in_names() -> None:
    assert normalize("meta", "first_name", "Zoë-Anne O'Brien") == "zoëanneobrien"
    assert normalize("meta", "last_name", "Müller-Lüdenscheidt") == "müllerlüdenscheidt"
    assert normalize("meta", "first_name", "Émilie") == "émilie"
    # Decomposed input (e + combining diaeresis) comes out composed, so both spellings hash the same.
    assert normalize("meta", "first_name", "Zoe\u0308") == normalize("meta", "first_name", "Zoë")
    assert normalize("google", "first_name", "Zoe\u0308 Anne") == "zoë anne"
    # Vowel signs of scripts without precomposed forms are letters' marks, not punctuation.
    assert normalize("meta", "first_name", "प्रिया") == "प्रिया"


def test_google_names_keep_inner_spaces_and_punctuation() -> None:
    assert normalize("google", "last_name", "  O'Brien-Smith ") == "o'brien-smith"
    assert normalize("google", "first_name", " Mary Ann ") == "mary ann"
    assert normalize("meta", "first_name", " Mary Ann ") == "maryann"


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("94025", None, "94025"),
        ("94025-1234", None, "94025"),
        ("940251234", None, "94025"),
        ("94025 1234", "US", "94025"),
        ("94025-12", "US", "94025"),
        ("SW1A 1AA", None, "sw1a1aa"),
        ("SW1A 1AA", "GB", "sw1a1aa"),
        ("M1 1AE", "GB", "m11ae"),
        ("K1A 0B1", "CA", "k1a0b1"),
        ("110001", None, "110001"),
        ("110001", "IN", "110001"),
        ("01310-100", "BR", "01310-100"),
        ("75008", "FR", "75008"),
    ],
)
def test_meta_zip(value: str, country: str | None, expected: str) -> None:
    assert normalize("meta", "zip", value, country) == expected


def test_zip_plus4_cut_by_profile_country() -> None:
    hasher = ProfileHasher("meta", ["zip", "country"], "GB")
    assert hasher({"zip": "94025 1234", "country": "USA"}).identifiers["zip"] == sha256_hex("94025")
    # Without the profile's country, the default (GB) keeps a non-US shape whole.
    assert hasher({"zip": "SW1A 1AA"}).identifiers["zip"] == sha256_hex("sw1a1aa")


def test_google_zip_trimmed_only() -> None:
    assert normalize("google", "zip", "  SW1A 1AA ") == "SW1A 1AA"
    assert normalize("google", "zip", " 94025-1234 ") == "94025-1234"
    assert not is_hashed_on("google", "zip")


@pytest.mark.parametrize(
    ("value", "country", "meta", "e164"),
    [
        ("+44 (0)20 7946 0958", None, "442079460958", "+442079460958"),
        ("+44 (0) 20 7946 0958", "US", "442079460958", "+442079460958"),
        ("0044 (0)20 7946 0958", None, "442079460958", "+442079460958"),
        ("0044 20 7946 0958", "US", "442079460958", "+442079460958"),
        ("020 7946 0958", "GB", "442079460958", "+442079460958"),
        ("(0)20 7946 0958", "GB", "442079460958", "+442079460958"),
        ("+49 (0)30 901820", None, "4930901820", "+4930901820"),
        ("030 901820", "DE", "4930901820", "+4930901820"),
        # Italy's leading 0 is part of the number, not a trunk prefix.
        ("+39 06 6982 1234", None, "390669821234", "+390669821234"),
        ("(415) 555-0100", "US", "14155550100", "+14155550100"),
        ("415.555.0100", "CA", "14155550100", "+14155550100"),
        ("1-415-555-0100", "US", "14155550100", "+14155550100"),
        ("+1 415 555 0100", "GB", "14155550100", "+14155550100"),
        ("011 44 20 7946 0958", "US", "442079460958", "+442079460958"),
        ("44 20 7946 0958", "US", "442079460958", "+442079460958"),
        ("07911 123456", "GB", "447911123456", "+447911123456"),
    ],
)
def test_phones(value: str, country: str | None, meta: str, e164: str) -> None:
    assert normalize("meta", "phone", value, country) == meta
    assert normalize("google", "phone", value, country) == e164
    assert normalize("tiktok", "phone", value, country) == e164


@pytest.mark.parametrize(
    ("value", "country"),
    [
        ("555-1234", "US"),  # possible only locally: no area code
        ("12345", "US"),
        ("n/a", "US"),
        ("000", None),
        ("4155550100", None),  # national digits with no country to read them by
        ("020 7946 0958", None),
        ("+1 555", None),
        ("+999 1234 5678", None),
    ],
)
def test_impossible_phones(value: str, country: str | None) -> None:
    assert reason("meta", "phone", value, country) in {"phone_impossible", "phone_too_short"}


def test_phone_profile_country_beats_default() -> None:
    hasher = ProfileHasher("google", ["phone", "country"], "US")
    assert hasher({"phone": "020 7946 0958", "country": "United Kingdom"}).identifiers["phone"] == sha256_hex(
        "+442079460958"
    )
    # An unusable profile country falls back to the default and is itself reported.
    profile = hasher({"phone": "(415) 555-0100", "country": "Atlantis"})
    assert profile.identifiers == {"phone": sha256_hex("+14155550100")}
    assert profile.invalid == [("country", "country_unknown")]


def test_tiktok_reads_phone_by_profile_country_it_does_not_send() -> None:
    hasher = ProfileHasher("tiktok", ["phone", "country"], "US")
    assert hasher.output_keys() == ("phone",)
    profile = hasher({"phone": "030 901820", "country": "DE"})
    assert profile.identifiers == {"phone": sha256_hex("+4930901820")}


@pytest.mark.parametrize(
    ("value", "google"),
    [
        ("John.Smith+ads@Gmail.com", "johnsmith@gmail.com"),
        ("j.o.h.n@googlemail.com", "john@googlemail.com"),
        ("john+a+b@gmail.com", "john@gmail.com"),
        ("john.smith+ads@example.com", "john.smith+ads@example.com"),
        ("john.smith@gmail.co.uk", "john.smith@gmail.co.uk"),
    ],
)
def test_gmail_rewriting_only_for_google(value: str, google: str) -> None:
    assert normalize("google", "email", value) == google
    assert normalize("meta", "email", value) == value.lower()


# TikTok's help centre ("List of supported IDs and formats for a customer file"): cut a "+tag" up to
# "@" on every domain, keep the dots.
@pytest.mark.parametrize(
    ("value", "tiktok"),
    [
        ("John.Smith+ads@Gmail.com", "john.smith@gmail.com"),
        ("j.o.h.n@googlemail.com", "j.o.h.n@googlemail.com"),
        ("john+a+b@gmail.com", "john@gmail.com"),
        ("john.smith+ads@example.com", "john.smith@example.com"),
        ("  Mary+News@Example.CO.UK ", "mary@example.co.uk"),
        ("plain@example.com", "plain@example.com"),
    ],
)
def test_tiktok_cuts_plus_tags_on_every_domain_and_keeps_dots(value: str, tiktok: str) -> None:
    assert normalize("tiktok", "email", value) == tiktok


def test_a_tiktok_email_that_is_only_a_plus_tag_has_no_local_part() -> None:
    assert reason("tiktok", "email", "+tag@example.com") == "email_no_local_part"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("no-at.example.com", "email_no_at"),
        ("a@b@c.com", "email_many_at"),
        ("@example.com", "email_no_local_part"),
        ("a b@example.com", "email_bad_local_part"),
        ("a@localhost", "email_bad_domain"),
        ("a@", "email_bad_domain"),
        ("a@example..com", "email_bad_domain"),
        ("a@.com", "email_bad_domain"),
        ("a@example.", "email_bad_domain"),
    ],
)
def test_invalid_emails(value: str, why: str) -> None:
    for platform in PLATFORMS:
        assert reason(platform, "email", value) == why


def test_gmail_local_part_of_only_dots_and_tag_is_invalid_for_google() -> None:
    assert reason("google", "email", ".+x@gmail.com") == "email_no_local_part"
    assert normalize("meta", "email", ".+x@gmail.com") == ".+x@gmail.com"
