"""Identity: every normalization rule of every platform, in one pure module, and SHA-256 hashing.

Divergent copies of hashing rules are the top source of low match rates, so nothing else in the
project normalizes an identifier. Which rule each identifier kind follows is a platform's identity
profile, declared in its folder (``connectors/<platform>/identity.py``, citing the platform's
published guidance) and reached through the registry; this module implements each named rule
(``connectors.platform_spec.Rule``) once and applies the profile it is given. Meta wants phones as
digits without ``+`` and names stripped of punctuation; Google wants E.164 with ``+``, strips dots
and ``+tags`` from Gmail addresses only, and takes country and postcode unhashed; TikTok wants E.164,
cuts ``+tags`` from every email and hashes mobile ad ids.

An invalid value raises ``InvalidIdentifier`` with a short reason that never contains the value.
Nothing here caches values: identifiers are PII, and a cache would keep them alive in memory.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import phonenumbers
from audiencesync.connectors.contract import IDENTIFIER_KINDS
from audiencesync.connectors.platform_spec import IdentityProfile, Rule
from audiencesync.connectors.registry import PLATFORMS as REGISTERED
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

NORMALIZATION_VERSION = 3
"""Bump when any rule changes: state keeps a fingerprint per member, and a new version re-hashes all.
2: phones possible only locally rejected; dob strictly ISO; names keep combining marks; profile
country decides phone, zip and state; US state names matched without punctuation.
3: TikTok emails lose a ``+tag`` on every domain; control characters make any identifier invalid."""

PLATFORMS = tuple(name for name, spec in REGISTERED.items() if spec.identity is not None)
"""The platforms with identity rules of their own (``file`` rows follow the one their format names)."""
_SPLIT_DOB_KEYS = ("doby", "dobm", "dobd")
# What ProfileHasher does with a kind's value.
_HASH, _AS_IS, _PREHASHED, _SPLIT_DOB = range(4)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DOB = re.compile(r"(\d{4})-(\d{2})-(\d{2})|(\d{4})(\d{2})(\d{2})", re.ASCII)
_ASCII_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_US_ZIP = re.compile(r"\d{5}(?:-?\d{4})?", re.ASCII)
# The local part has no whitespace; the domain is labels separated by single dots, at least two.
_EMAIL_LOCAL = re.compile(r"[^\s@]+")
_EMAIL = re.compile(r"[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)+")
_GMAIL = frozenset({"gmail.com", "googlemail.com"})

# Trunk zero written inside an international number, "+44 (0)20 ...": never dialled from abroad.
_TRUNK_ZERO = re.compile(r"\(\s*0\s*\)")
_PHONE_SEPARATORS = str.maketrans("", "", " -.()/\t\u00a0")
_NANP_AREA_START = frozenset("23456789")
# Regions whose national numbers the NANP fast path may read: both parse with national prefix "1"
# and no transform rule (unlike, say, the Bahamas, which prepend an area code to 7-digit numbers).
_NANP_FAST_REGIONS = frozenset({"US", "CA"})

US_STATES: dict[str, str] = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "washingtondc": "dc", "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id",
    "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky",
    "louisiana": "la", "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi",
    "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne",
    "nevada": "nv", "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
}  # fmt: skip
"""US state names, folded (lowercase letters only), to their USPS codes: all 50 and DC."""

COUNTRY_NAMES: dict[str, str] = {
    "unitedstates": "US", "unitedstatesofamerica": "US", "usa": "US", "us": "US", "america": "US",
    "unitedkingdom": "GB", "uk": "GB", "greatbritain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northernireland": "GB", "germany": "DE", "deutschland": "DE",
    "france": "FR", "spain": "ES", "espana": "ES", "italy": "IT", "italia": "IT", "canada": "CA",
    "australia": "AU", "brazil": "BR", "brasil": "BR", "mexico": "MX", "netherlands": "NL",
    "thenetherlands": "NL", "nederland": "NL", "holland": "NL", "ireland": "IE", "eire": "IE",
    "japan": "JP", "india": "IN", "newzealand": "NZ", "sweden": "SE", "sverige": "SE",
    "norway": "NO", "norge": "NO", "denmark": "DK", "danmark": "DK", "poland": "PL", "polska": "PL",
    "portugal": "PT", "switzerland": "CH", "schweiz": "CH", "suisse": "CH", "austria": "AT",
    "osterreich": "AT", "belgium": "BE", "belgique": "BE", "belgie": "BE",
}  # fmt: skip
"""Country names people type, folded (lowercase, no accents, letters and digits only), to alpha-2."""

# Every region phonenumbers knows is an ISO 3166-1 alpha-2 code (plus XK, AC and TA, which people
# use too); the ISO territories without a telephone plan are added by hand.
ALPHA2 = frozenset(phonenumbers.SUPPORTED_REGIONS) | {"AQ", "BV", "GS", "HM", "PN", "TF", "UM"}
"""The ISO 3166-1 alpha-2 codes (uppercase) the normalization rules know."""


class InvalidIdentifier(ValueError):
    """A value that cannot be sent. ``reason`` is short, machine-friendly and never contains the
    value, so it can be logged and stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_hex(normalized: str) -> str:
    """SHA-256 of the UTF-8 bytes of ``normalized``, as 64 lowercase hex characters."""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def identity_profile(platform: str) -> IdentityProfile:
    """The identity profile ``platform``'s folder declares; ValueError for a platform without one."""
    spec = REGISTERED.get(platform)
    if spec is None or spec.identity is None:
        raise ValueError(f"unknown platform {platform!r}")
    return spec.identity


def platform_kinds(platform: str) -> frozenset[str]:
    """The canonical identifier kinds (``connectors.contract.IDENTIFIER_KINDS``) ``platform`` takes."""
    return identity_profile(platform).kinds


def is_hashed_on(platform: str, kind: str) -> bool:
    """False for the values a platform wants unhashed (Meta's MADID and EXTERN_ID, Google's country
    code and postal code); True otherwise."""
    return kind not in identity_profile(platform).unhashed


# --- helpers ------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Lowercase, accents removed, letters and digits only: for matching names against tables."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch))


def _letters_only(value: str) -> str:
    """Lowercase, NFC, without punctuation, spaces, symbols or controls (Meta's FN, LN, CT, ST).

    Letters, combining marks and digits stay: dropping marks would break scripts whose vowel signs
    have no precomposed form (Devanagari, Thai), and accents are part of the name Meta matches.
    """
    text = unicodedata.normalize("NFC", value.lower())
    if text.isascii():
        return _ASCII_NOT_ALNUM.sub("", text)
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LMN")


def _region(default_country: str | None) -> str | None:
    """The phonenumbers region for a configured default country; "UK" is read as GB."""
    if default_country is None:
        return None
    try:
        return _country_code(default_country)
    except InvalidIdentifier:
        raise ValueError(
            f"default_country must be an ISO 3166-1 alpha-2 code, not {default_country!r}"
        ) from None


def _country_code(value: str) -> str:
    """ISO 3166-1 alpha-2, uppercase, from a code or a common name."""
    text = value.strip()
    if len(text) == 2 and text.isascii():
        code = text.upper()
        if code in ALPHA2:
            return code
    named = COUNTRY_NAMES.get(_fold(text))
    if named is None:
        raise InvalidIdentifier("country_unknown")
    return named


# --- one function per rule: (value, region) -> normalized ----------------------------------------


def _email_reason(text: str) -> str:
    at = text.find("@")
    if at < 0:
        return "email_no_at"
    if text.find("@", at + 1) >= 0:
        return "email_many_at"
    if at == 0:
        return "email_no_local_part"
    if _EMAIL_LOCAL.fullmatch(text[:at]) is None:
        return "email_bad_local_part"
    return "email_bad_domain"


def _email(value: str, region: str | None) -> str:
    text = value.strip().lower()
    # One regex decides the common, valid case; the reason is worked out only for invalid values.
    if _EMAIL.fullmatch(text) is None:
        raise InvalidIdentifier(_email_reason(text))
    return text


def _email_gmail_canonical(value: str, region: str | None) -> str:
    text = _email(value, region)
    local, _, domain = text.partition("@")
    if domain not in _GMAIL:
        return text
    # Gmail ignores dots and +tags when delivering, and Google matches on the canonical form (Data
    # Manager formatting guide).
    local = local.split("+", 1)[0].replace(".", "")
    if not local:
        raise InvalidIdentifier("email_no_local_part")
    return f"{local}@{domain}"


def _email_no_plus_tag(value: str, region: str | None) -> str:
    # TikTok's help centre, "List of supported IDs and formats for a customer file": remove a "+"
    # and everything after it up to "@", on every domain; dots stay (the current page dropped the
    # older "remove dots" line).
    local, _, domain = _email(value, region).partition("@")
    local = local.split("+", 1)[0]
    if not local:
        raise InvalidIdentifier("email_no_local_part")
    return f"{local}@{domain}"


def _phone_fast(compact: str, region: str | None) -> str | None:
    """E.164 for the commonest shapes, decided without phonenumbers; None means "ask phonenumbers".

    Only North American numbers take this path: with country code 1 and an area code starting 2-9,
    phonenumbers strips no national prefix and finds every 10-digit number possible, so the result
    is "+1" and the ten digits. ``tests/test_identity.py`` checks the equivalence.
    """
    if compact[0] == "+":
        if len(compact) == 12 and compact[1] == "1" and compact[2] in _NANP_AREA_START:
            digits = compact[1:]
            if digits.isascii() and digits.isdigit():
                return compact
        return None
    if not (compact.isascii() and compact.isdigit()):
        return None
    if len(compact) == 10 and region in _NANP_FAST_REGIONS and compact[0] in _NANP_AREA_START:
        return "+1" + compact
    # An 11-digit "1..." is the national prefix plus ten digits for US/CA, and the same number read
    # internationally when there is no default country; other regions may read it nationally.
    if (
        len(compact) == 11
        and (region is None or region in _NANP_FAST_REGIONS)
        and compact[0] == "1"
        and compact[1] in _NANP_AREA_START
    ):
        return "+" + compact
    return None


def _possible_e164(number: str, region: str | None) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except NumberParseException:
        return None
    # Possible, not valid: the platforms match unassigned-looking numbers too (Meta's 555 example).
    # A number possible only locally lacks its area code, so its E.164 form would be wrong.
    if phonenumbers.is_possible_number_with_reason(parsed) != ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)


def _phone_e164(value: str, region: str | None) -> str:
    text = value.strip()
    if "(" in text:
        text = _TRUNK_ZERO.sub("", text)
    # Spaces and hyphens are most of the punctuation seen; replace() is several times cheaper than
    # translate(), which is kept for the rest.
    compact = text.replace(" ", "").replace("-", "")
    if not compact.lstrip("+").isdigit():
        compact = compact.translate(_PHONE_SEPARATORS)
    if compact.startswith("00"):
        # The international call prefix of most of the world; no national number starts with it.
        compact = "+" + compact[2:]
        text = compact
    if len(compact) < 3:
        raise InvalidIdentifier("phone_too_short")
    fast = _phone_fast(compact, region)
    if fast is not None:
        return fast
    if compact[0] == "+":
        e164 = _possible_e164(text, None)
    else:
        e164 = _possible_e164(text, region) if region is not None else None
        # A bare digit string that already carries its country code (Meta's own example,
        # 15559876543) is read as international when it is not possible as a national number of
        # the default country. A leading 0 is a trunk prefix, and no country code starts with 0.
        if e164 is None and compact.isascii() and compact.isdigit() and compact[0] != "0":
            e164 = _possible_e164("+" + compact, None)
    if e164 is None:
        raise InvalidIdentifier("phone_impossible")
    return e164


def _phone_e164_digits(value: str, region: str | None) -> str:
    return _phone_e164(value, region)[1:]


def _name_letters_only(value: str, region: str | None) -> str:
    text = _letters_only(value)
    if not text:
        raise InvalidIdentifier("name_empty")
    return text


def _name_trimmed(value: str, region: str | None) -> str:
    text = unicodedata.normalize("NFC", value.strip().lower())
    if not text:
        raise InvalidIdentifier("name_empty")
    return text


def _city(value: str, region: str | None) -> str:
    text = _letters_only(value)
    if not text:
        raise InvalidIdentifier("city_empty")
    return text


def _state(value: str, region: str | None) -> str:
    text = _letters_only(value)
    if not text:
        raise InvalidIdentifier("state_empty")
    # Full names map to codes only for US (or unknown-country) profiles: elsewhere the region is
    # matched as written. Two-letter codes come out the same either way.
    if region is None or region == "US":
        return US_STATES.get(_fold(value), text)
    return text


def _zip_trimmed(value: str, region: str | None) -> str:
    text = value.strip()
    if not text:
        raise InvalidIdentifier("zip_empty")
    return text


def _zip_us_five(value: str, region: str | None) -> str:
    compact = "".join(_zip_trimmed(value, region).lower().split())
    # Meta matches US ZIP codes on their first five digits only; ZIP+4 would never match. Without a
    # known country only US shapes are cut (a 6-digit Indian PIN must stay whole).
    if region is None or region == "US":
        head = compact[:5]
        if _US_ZIP.fullmatch(compact) or (region == "US" and head.isascii() and head.isdigit()):
            return head
    return compact


def _country_upper(value: str, region: str | None) -> str:
    return _country_code(value)


def _country_lower(value: str, region: str | None) -> str:
    return _country_code(value).lower()


def _dob(value: str, region: str | None) -> str:
    # 17/05/1990 and 05/17/1990 cannot be told apart, so only ISO forms are accepted.
    match = _DOB.fullmatch(value.strip())
    if match is None:
        raise InvalidIdentifier("dob_not_iso")
    y, m, d = (g for g in match.groups() if g is not None)
    try:
        datetime.date(int(y), int(m), int(d))
    except ValueError:
        raise InvalidIdentifier("dob_impossible") from None
    return f"{y}{m}{d}"


def _gender(value: str, region: str | None) -> str:
    text = value.strip().lower()
    if text in ("m", "male"):
        return "m"
    if text in ("f", "female"):
        return "f"
    raise InvalidIdentifier("gender_unknown")


def _maid(value: str, region: str | None) -> str:
    text = value.strip().lower()
    if _UUID.fullmatch(text) is None:
        raise InvalidIdentifier("maid_not_uuid")
    return text


def _external_id(value: str, region: str | None) -> str:
    text = value.strip()
    if not text:
        raise InvalidIdentifier("external_id_empty")
    return text


_Normalizer = Callable[[str, str | None], str]
_RULES: dict[Rule, _Normalizer] = {
    Rule.EMAIL: _email,
    Rule.EMAIL_GMAIL_CANONICAL: _email_gmail_canonical,
    Rule.EMAIL_NO_PLUS_TAG: _email_no_plus_tag,
    Rule.PHONE_E164: _phone_e164,
    Rule.PHONE_E164_DIGITS: _phone_e164_digits,
    Rule.NAME_LETTERS_ONLY: _name_letters_only,
    Rule.NAME_TRIMMED: _name_trimmed,
    Rule.CITY: _city,
    Rule.STATE: _state,
    Rule.ZIP_US_FIVE: _zip_us_five,
    Rule.ZIP_TRIMMED: _zip_trimmed,
    Rule.COUNTRY_LOWER: _country_lower,
    Rule.COUNTRY_UPPER: _country_upper,
    Rule.DOB: _dob,
    Rule.DOB_SPLIT: _dob,
    Rule.GENDER: _gender,
    Rule.MAID: _maid,
    Rule.EXTERNAL_ID: _external_id,
}


# C0 and C1 control characters and DEL. Inside a value they are never part of a real identifier (a
# NUL from a C export, an escape from a terminal paste) and would otherwise be hashed as if they were:
# the platform cannot match such a hash, so the value is invalid rather than silently unmatched.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _has_control(value: str) -> bool:
    """True when ``value`` holds a control character other than surrounding whitespace."""
    return _CONTROL.search(value) is not None and _CONTROL.search(value.strip()) is not None


def normalize(platform: str, kind: str, value: str, default_country: str | None = None) -> str:
    """``value`` normalized by ``platform``'s published rules for identifier ``kind``.

    ``default_country`` (alpha-2) reads national phone numbers and decides the US-only rules for
    zip and state. Meta's dob comes out as ``YYYYMMDD``. Raises ``InvalidIdentifier`` for a value
    that cannot be sent, or for a kind the platform does not take (reason ``kind_not_taken``), and
    ``ValueError`` for an unknown platform, kind or default country.
    """
    rules = identity_profile(platform).rules
    if kind not in IDENTIFIER_KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}")
    rule = rules.get(kind)
    if rule is None:
        raise InvalidIdentifier("kind_not_taken")
    if _has_control(value):
        raise InvalidIdentifier(f"{kind}_control_character")
    return _RULES[rule](value, _region(default_country))


@dataclass(frozen=True)
class HashedProfile:
    """One profile's identifiers, ready for one platform."""

    identifiers: dict[str, str]
    """Key -> platform-ready value: SHA-256 hex, or the normalized value where the platform wants it raw."""
    invalid: list[tuple[str, str]]
    """(kind, reason) for each value that was present but invalid."""


class ProfileHasher:
    """Normalizes and hashes one profile's identifiers for one platform.

    The profile's own country (when present and valid, even if it is not sent) stands in for
    ``default_country`` when reading its phone, zip and state.
    """

    def __init__(
        self,
        platform: str,
        kinds: Sequence[str],
        default_country: str | None,
        prehashed: frozenset[str] = frozenset(),
    ) -> None:
        profile = identity_profile(platform)
        unknown = sorted(set(kinds) - set(IDENTIFIER_KINDS))
        if unknown:
            raise ValueError(f"unknown identifier kinds {unknown}")
        self.platform = platform
        self.default_country = _region(default_country)
        self.prehashed = prehashed
        # Canonical order, not config order: Meta's schema is built from it and must stay the same
        # for the life of an audience.
        self.kinds = tuple(k for k in IDENTIFIER_KINDS if k in profile.rules and k in kinds)
        self._split_dob = profile.rules.get("dob") is Rule.DOB_SPLIT
        # One rule and one mode per step, decided once, so the per-profile loop tests a small int
        # and nothing else.
        self._steps = tuple(
            (kind, _RULES[profile.rules[kind]], self._mode(kind, profile)) for kind in self.kinds
        )

    def _mode(self, kind: str, profile: IdentityProfile) -> int:
        if kind in self.prehashed:
            return _PREHASHED
        if kind == "dob" and self._split_dob:
            return _SPLIT_DOB
        return _AS_IS if kind in profile.unhashed else _HASH

    def output_keys(self) -> tuple[str, ...]:
        """Keys this hasher can emit, in a fixed order: the configured kinds the platform takes, with
        Meta's dob as the three keys ``doby``, ``dobm``, ``dobd``."""
        keys: list[str] = []
        for kind in self.kinds:
            keys.extend(_SPLIT_DOB_KEYS if kind == "dob" and self._split_dob else (kind,))
        return tuple(keys)

    def _region_of(self, raw: Mapping[str, str | None]) -> str | None:
        value = raw.get("country")
        if value and "country" not in self.prehashed:
            try:
                return _country_code(value)
            except InvalidIdentifier:
                pass
        return self.default_country

    def __call__(self, raw: Mapping[str, str | None]) -> HashedProfile:
        """Normalize and hash ``raw`` (kind -> raw source value; None or blank is missing). Kinds the
        platform does not take are ignored; a pre-hashed kind passes through, lowercased, only when
        it is 64 hex characters."""
        out: dict[str, str] = {}
        invalid: list[tuple[str, str]] = []
        region = self._region_of(raw) if "country" in raw else self.default_country
        sha256 = hashlib.sha256
        for kind, fn, mode in self._steps:
            value = raw.get(kind)
            if value is None:
                continue
            if mode == _PREHASHED:
                text = value.strip().lower()
                if not text:
                    continue
                if _HEX64.fullmatch(text) is None:
                    invalid.append((kind, "not_sha256"))
                elif kind == "dob" and self._split_dob:
                    # One hash of a whole date cannot become Meta's three date-part hashes.
                    invalid.append((kind, "prehashed_dob_unsplittable"))
                else:
                    out[kind] = text
                continue
            if _has_control(value):
                invalid.append((kind, f"{kind}_control_character"))
                continue
            try:
                normalized = fn(value, region)
            except InvalidIdentifier as exc:
                # A blank value is missing, not invalid; testing after the fact keeps the common
                # path free of an extra strip.
                if value.strip():
                    invalid.append((kind, exc.reason))
                continue
            if mode == _HASH:
                out[kind] = sha256(normalized.encode("utf-8")).hexdigest()
            elif mode == _AS_IS:
                out[kind] = normalized
            else:
                out["doby"] = sha256_hex(normalized[:4])
                out["dobm"] = sha256_hex(normalized[4:6])
                out["dobd"] = sha256_hex(normalized[6:])
        return HashedProfile(out, invalid)
