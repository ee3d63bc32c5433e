"""Properties of the identity module that must hold for any input, control characters included."""

from __future__ import annotations

import string

import phonenumbers
from audiencesync.connectors.contract import IDENTIFIER_KINDS
from audiencesync.sync.identity import (
    PLATFORMS,
    InvalidIdentifier,
    ProfileHasher,
    normalize,
    platform_kinds,
    sha256_hex,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from identity_reasons import HEX64, KNOWN_REASONS, reason

# --- properties ---------------------------------------------------------------------------------

LOCAL_CHARS = string.ascii_letters + string.digits + "._+-"
emails = st.builds(
    lambda local, label, tld: f"{local}@{label}.{tld}",
    st.text(LOCAL_CHARS, min_size=1, max_size=20),
    st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=15),
    st.sampled_from(["com", "co.uk", "de", "IO", "example"]),
)
blank = st.text(" \t\n\u00a0", max_size=3)


@given(email=emails, pre=blank, post=blank, data=st.data())
def test_email_case_and_whitespace_variants_hash_the_same(
    email: str, pre: str, post: str, data: st.DataObject
) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(email), max_size=len(email)))
    variant = pre + "".join(c.swapcase() if f else c for c, f in zip(email, flips, strict=True)) + post
    for platform in PLATFORMS:
        try:
            expected = sha256_hex(normalize(platform, "email", email))
        except InvalidIdentifier as exc:
            assert reason(platform, "email", variant) == exc.reason
            continue
        assert sha256_hex(normalize(platform, "email", variant)) == expected


# Kinds whose normalized form is itself a valid input that normalizes to the same value.
@given(
    platform=st.sampled_from(PLATFORMS),
    kind=st.sampled_from(IDENTIFIER_KINDS),
    value=st.one_of(
        st.text(max_size=30),
        emails,
        st.from_regex(r"\+?[0-9 ()-]{6,18}", fullmatch=True),
        st.from_regex(r"\d{5}(-\d{4})?|\d{4}-\d{2}-\d{2}|\d{8}", fullmatch=True),
        st.sampled_from(["United States", "España", "New York", "Zoë-Anne O'Brien", "Male", "SW1A 1AA"]),
    ),
    country=st.sampled_from([None, "US", "GB", "DE", "FR", "IN"]),
)
@settings(max_examples=400)
def test_normalization_is_idempotent(platform: str, kind: str, value: str, country: str | None) -> None:
    assume(kind in platform_kinds(platform))
    try:
        once = normalize(platform, kind, value, country)
    except InvalidIdentifier:
        return
    # Meta phones come out without "+"; read again they are international only without a default
    # country (with one, a national reading comes first, as the rule says).
    again_country = None if kind == "phone" and platform == "meta" else country
    assert normalize(platform, kind, once, again_country) == once


@given(value=st.text(max_size=40))
def test_hashes_are_64_lowercase_hex(value: str) -> None:
    assert HEX64.fullmatch(sha256_hex(value))


@given(
    platform=st.sampled_from(PLATFORMS),
    kind=st.sampled_from(IDENTIFIER_KINDS),
    prefix=st.text(max_size=12),
    marker=st.text(string.ascii_letters + string.digits, min_size=6, max_size=10),
    suffix=st.text(max_size=12),
    country=st.sampled_from([None, "US", "GB"]),
)
def test_reasons_never_contain_the_value(
    platform: str, kind: str, prefix: str, marker: str, suffix: str, country: str | None
) -> None:
    value = prefix + marker + suffix
    try:
        normalize(platform, kind, value, country)
    except InvalidIdentifier as exc:
        assert exc.reason in KNOWN_REASONS
        assert marker.lower() not in exc.reason.lower()
        assert marker.lower() not in str(exc).lower()
        assert all(marker.lower() not in str(arg).lower() for arg in exc.args)


@given(
    area=st.from_regex(r"[2-9]\d{2}", fullmatch=True),
    rest=st.from_regex(r"\d{7}", fullmatch=True),
    shape=st.sampled_from(
        ["+1 {a} {b} {c}", "+1{a}{b}{c}", "1-{a}-{b}-{c}", "({a}) {b}-{c}", "{a}.{b}.{c}", "1{a}{b}{c}"]
    ),
    country=st.sampled_from([None, "US", "CA", "GB", "DE", "CN", "BS"]),
)
def test_north_american_fast_path_agrees_with_phonenumbers(
    area: str, rest: str, shape: str, country: str | None
) -> None:
    value = shape.format(a=area, b=rest[:3], c=rest[3:])
    try:
        parsed = phonenumbers.parse(value, country)
        possible = (
            phonenumbers.is_possible_number_with_reason(parsed) == phonenumbers.ValidationResult.IS_POSSIBLE
        )
        expected = (
            phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) if possible else None
        )
    except phonenumbers.NumberParseException:
        expected = None
    try:
        got: str | None = normalize("google", "phone", value, country)
    except InvalidIdentifier:
        got = None
    if expected is not None:
        assert got == expected
    elif got is not None:
        # phonenumbers alone cannot read it; the module may only have read the digits with a "+".
        digits = "".join(c for c in value if c.isdigit())
        assert got == phonenumbers.format_number(
            phonenumbers.parse("+" + digits), phonenumbers.PhoneNumberFormat.E164
        )


# --- control characters --------------------------------------------------------------------------

_CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]


@given(
    platform=st.sampled_from(sorted(PLATFORMS)),
    kind=st.sampled_from(["email", "phone", "first_name", "last_name", "zip", "external_id"]),
    value=st.sampled_from(["jane.doe@example.com", "+1 415 555 0100", "Jane", "94107", "crm-123"]),
    control=st.sampled_from(_CONTROLS),
    at=st.integers(min_value=1, max_value=3),
)
def test_a_control_character_inside_any_value_makes_it_invalid_and_it_is_never_sent(
    platform: str, kind: str, value: str, control: str, at: int
) -> None:
    assume(kind in platform_kinds(platform))
    dirty = value[:at] + control + value[at:]
    hashed = ProfileHasher(platform, [kind], "US")({kind: dirty})
    assert kind not in hashed.identifiers
    assert (kind, f"{kind}_control_character") in hashed.invalid
    assert reason(platform, kind, dirty, "US") == f"{kind}_control_character"


@given(
    value=st.sampled_from(["jane.doe@example.com", "Jane"]), ends=st.sampled_from([" ", "\n", "\t", "\r\n"])
)
def test_surrounding_whitespace_is_not_a_control_character(value: str, ends: str) -> None:
    kind = "email" if "@" in value else "first_name"
    hashed = ProfileHasher("meta", [kind], "US")({kind: ends + value + ends})
    assert hashed.invalid == [] and kind in hashed.identifiers
