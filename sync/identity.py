"""Identity: every normalization rule of every platform, in one pure module, and SHA-256 hashing.

Divergent copies of hashing rules are the top source of low match rates, so nothing else in the
project normalizes an identifier. The rules follow each platform's published guidance (see
``shared/reference``): Meta wants phones as digits without ``+`` and names stripped of punctuation;
Google wants E.164 with ``+``, strips dots and ``+tags`` from Gmail addresses only, and takes country
and postcode unhashed; TikTok wants E.164 and hashes mobile ad ids.

An invalid value raises ``InvalidIdentifier`` with a short reason that never contains the value.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import phonenumbers

from audiencesync.connectors.contract import IDENTIFIER_KINDS

PLATFORMS = ("meta", "google", "tiktok")
NORMALIZATION_VERSION = 1
"""Bump when any rule changes: state keeps a fingerprint per member, and a new version re-hashes all."""

_PLATFORM_KINDS: dict[str, frozenset[str]] = {
    "meta": frozenset(IDENTIFIER_KINDS),
    "google": frozenset({"email", "phone", "first_name", "last_name", "zip", "country"}),
    "tiktok": frozenset({"email", "phone", "maid"}),
}
# Values a platform takes as they are (normalized, never hashed).
_RAW: dict[str, frozenset[str]] = {
    "meta": frozenset({"maid", "external_id"}),
    "google": frozenset({"country", "zip"}),
    "tiktok": frozenset(),
}

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\D+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DOB = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_EMAIL_DOMAIN = re.compile(r"[^\s@]+\.[^\s@]+")
_GMAIL = frozenset({"gmail.com", "googlemail.com"})

US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "district of columbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il", "indiana": "in",
    "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la", "maine": "me", "maryland": "md",
    "massachusetts": "ma", "michigan": "mi", "minnesota": "mn", "mississippi": "ms", "missouri": "mo",
    "montana": "mt", "nebraska": "ne", "nevada": "nv", "new hampshire": "nh", "new jersey": "nj",
    "new mexico": "nm", "new york": "ny", "north carolina": "nc", "north dakota": "nd", "ohio": "oh",
    "oklahoma": "ok", "oregon": "or", "pennsylvania": "pa", "rhode island": "ri",
    "south carolina": "sc", "south dakota": "sd", "tennessee": "tn", "texas": "tx", "utah": "ut",
    "vermont": "vt", "virginia": "va", "washington": "wa", "west virginia": "wv", "wisconsin": "wi",
    "wyoming": "wy",
}  # fmt: skip
_US_CODES = frozenset(US_STATES.values())

# Country names people type, folded (lowercase, no accents, no punctuation or spaces) -> alpha-2.
COUNTRY_NAMES = {
    "unitedstates": "US", "unitedstatesofamerica": "US", "usa": "US", "us": "US", "america": "US",
    "unitedkingdom": "GB", "uk": "GB", "greatbritain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "britain": "GB", "germany": "DE", "deutschland": "DE", "france": "FR",
    "spain": "ES", "espana": "ES", "italy": "IT", "italia": "IT", "canada": "CA", "australia": "AU",
    "brazil": "BR", "brasil": "BR", "mexico": "MX", "netherlands": "NL", "nederland": "NL",
    "holland": "NL", "ireland": "IE", "japan": "JP", "india": "IN", "newzealand": "NZ",
    "sweden": "SE", "norway": "NO", "denmark": "DK", "poland": "PL", "portugal": "PT",
    "switzerland": "CH", "austria": "AT", "belgium": "BE",
}  # fmt: skip
_ALPHA2 = frozenset(phonenumbers.SUPPORTED_REGIONS) - {"001"}


class InvalidIdentifier(ValueError):
    """A value that cannot be sent. ``reason`` is short and never contains the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_hex(normalized: str) -> str:
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def platform_kinds(platform: str) -> frozenset[str]:
    """The canonical identifier kinds ``platform`` takes."""
    return _PLATFORM_KINDS[platform]


def is_hashed_on(platform: str, kind: str) -> bool:
    """False for the values a platform wants unhashed (Meta's MADID and EXTERN_ID, Google's country
    code and postal code)."""
    return kind not in _RAW[platform]


def _fold(text: str) -> str:
    """Lowercase, accents removed, letters and digits only: for matching names against tables."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch))


def normalize_country(value: str) -> str:
    """ISO 3166-1 alpha-2, uppercase."""
    text = value.strip()
    if len(text) == 2 and text.upper() in _ALPHA2:
        return text.upper()
    code = COUNTRY_NAMES.get(_fold(text))
    if code is None:
        raise InvalidIdentifier("country_unknown")
    return code


def _email(platform: str, value: str) -> str:
    text = value.strip().lower()
    if text.count("@") != 1:
        raise InvalidIdentifier("email_no_at")
    local, domain = text.split("@")
    if not local or any(ch.isspace() for ch in text):
        raise InvalidIdentifier("email_bad_local_part")
    if not _EMAIL_DOMAIN.fullmatch(domain):
        raise InvalidIdentifier("email_bad_domain")
    if platform == "google" and domain in _GMAIL:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            raise InvalidIdentifier("email_bad_local_part")
    return f"{local}@{domain}"


def _phone_e164(value: str, default_country: str | None) -> str:
    text = value.strip()
    digits = _DIGITS.sub("", text)
    if len(digits) < 6:
        raise InvalidIdentifier("phone_too_short")
    # "(0)" is a trunk prefix written inside an international number (+44 (0)20 ...): drop it.
    text = text.replace("(0)", "")
    if text.startswith("00"):
        text = "+" + text[2:]
    candidates: list[tuple[str, str | None]] = []
    if text.startswith("+"):
        candidates.append((text, None))
    else:
        if default_country:
            candidates.append((text, default_country.upper()))
        # A bare digit string that already carries its country code (Meta's own example,
        # 15559876543) is read as international when it is not possible as a national number.
        candidates.append(("+" + digits, None))
    for number, region in candidates:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        # Possible, not valid: the platforms match unassigned-looking numbers too (555 numbers).
        if phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidIdentifier("phone_impossible")


def _zip(platform: str, value: str, country: str | None) -> str:
    text = value.strip()
    if not text:
        raise InvalidIdentifier("zip_empty")
    if platform == "google":
        return text
    compact = "".join(text.lower().split())
    # Meta matches US ZIP codes on their first five digits only (ZIP+4 would never match).
    if country in (None, "US") and re.fullmatch(r"\d{5}(-?\d{4})?", compact):
        return compact[:5]
    return compact


def _state(value: str, country: str | None) -> str:
    folded = _NOT_WORD.sub("", value.strip().lower())
    if not folded:
        raise InvalidIdentifier("state_empty")
    if country in (None, "US"):
        spaced = " ".join(value.strip().lower().replace(".", "").split())
        if spaced in US_STATES:
            return US_STATES[spaced]
        if folded in _US_CODES:
            return folded
    return folded


def _name(platform: str, value: str) -> str:
    text = unicodedata.normalize("NFC", value.strip().lower())
    if platform == "meta":
        text = _NOT_WORD.sub("", text)
    if not text:
        raise InvalidIdentifier("name_empty")
    return text


def normalize(
    platform: str, kind: str, value: str, default_country: str | None = None, country: str | None = None
) -> str:
    """``value`` normalized by ``platform``'s published rules for ``kind``.

    ``country`` is the profile's own country (alpha-2) when known; it decides national phone numbers
    and postcode shapes before ``default_country`` does. Raises ``InvalidIdentifier``.
    """
    if platform not in _PLATFORM_KINDS:
        raise ValueError(f"unknown platform {platform!r}")
    home = country or (default_country.upper() if default_country else None)
    if kind == "email":
        return _email(platform, value)
    if kind == "phone":
        e164 = _phone_e164(value, home)
        return e164[1:] if platform == "meta" else e164
    if kind in ("first_name", "last_name"):
        return _name(platform, value)
    if kind == "city":
        city = _NOT_WORD.sub("", unicodedata.normalize("NFC", value.strip().lower()))
        if not city:
            raise InvalidIdentifier("city_empty")
        return city
    if kind == "state":
        return _state(value, home)
    if kind == "zip":
        return _zip(platform, value, home)
    if kind == "country":
        code = normalize_country(value)
        return code if platform == "google" else code.lower()
    if kind == "dob":
        match = _DOB.fullmatch(value.strip())
        if not match or not (1 <= int(match.group(2)) <= 12 and 1 <= int(match.group(3)) <= 31):
            raise InvalidIdentifier("dob_not_iso")
        return f"{match.group(1)}{match.group(2)}{match.group(3)}"
    if kind == "gender":
        text = value.strip().lower()
        if text in ("m", "male"):
            return "m"
        if text in ("f", "female"):
            return "f"
        raise InvalidIdentifier("gender_unknown")
    if kind == "maid":
        text = value.strip().lower()
        if not _UUID.fullmatch(text):
            raise InvalidIdentifier("maid_not_uuid")
        return text
    if kind == "external_id":
        text = value.strip()
        if not text:
            raise InvalidIdentifier("external_id_empty")
        return text
    raise ValueError(f"unknown identifier kind {kind!r}")


@dataclass(frozen=True)
class HashedProfile:
    identifiers: dict[str, str]
    """Key -> platform-ready value: SHA-256 hex, or the normalized value where the platform wants it raw."""
    invalid: list[tuple[str, str]]
    """(kind, reason) for each value that was present but invalid."""


class ProfileHasher:
    """Normalizes and hashes one profile's identifiers for one platform."""

    def __init__(
        self,
        platform: str,
        kinds: Sequence[str],
        default_country: str | None,
        prehashed: frozenset[str] = frozenset(),
    ) -> None:
        self.platform = platform
        takes = platform_kinds(platform)
        # Country first: the profile's own country decides how its phone and postcode read.
        ordered = sorted((k for k in kinds if k in takes), key=lambda k: (k != "country", IDENTIFIER_KINDS.index(k)))
        self.kinds = tuple(ordered)
        self.default_country = default_country.upper() if default_country else None
        self.prehashed = prehashed

    def output_keys(self) -> tuple[str, ...]:
        """Keys this hasher can emit, in a fixed order (Meta's dob becomes doby, dobm, dobd)."""
        keys: list[str] = []
        for kind in IDENTIFIER_KINDS:
            if kind not in self.kinds:
                continue
            keys.extend(("doby", "dobm", "dobd") if kind == "dob" and self.platform == "meta" else (kind,))
        return tuple(keys)

    def __call__(self, raw: Mapping[str, str | None]) -> HashedProfile:
        out: dict[str, str] = {}
        invalid: list[tuple[str, str]] = []
        country: str | None = None
        platform = self.platform
        for kind in self.kinds:
            value = raw.get(kind)
            if value is None or not str(value).strip():
                continue
            if kind in self.prehashed:
                text = str(value).strip()
                if _HEX64.fullmatch(text):
                    out[kind] = text.lower()
                else:
                    invalid.append((kind, "not_sha256"))
                continue
            try:
                normalized = normalize(platform, kind, str(value), self.default_country, country)
            except InvalidIdentifier as exc:
                invalid.append((kind, exc.reason))
                continue
            if kind == "country":
                country = normalized.upper()
            if kind == "dob" and platform == "meta":
                out["doby"] = sha256_hex(normalized[:4])
                out["dobm"] = sha256_hex(normalized[4:6])
                out["dobd"] = sha256_hex(normalized[6:])
            elif kind == "dob":
                continue
            elif is_hashed_on(platform, kind):
                out[kind] = sha256_hex(normalized)
            else:
                out[kind] = normalized
        return HashedProfile(out, invalid)
