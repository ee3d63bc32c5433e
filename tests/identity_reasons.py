"""What the identity tests share: the closed set of reasons the identity module may give, and a
shortcut to the reason a value is refused for."""

from __future__ import annotations

import re

import pytest
from audiencesync.connectors.contract import IDENTIFIER_KINDS
from audiencesync.sync.identity import InvalidIdentifier, normalize

HEX64 = re.compile(r"[0-9a-f]{64}")

# Every reason the module may give: a closed set, so none can carry a value.
KNOWN_REASONS = {
    "kind_not_taken",
    "email_no_at",
    "email_many_at",
    "email_no_local_part",
    "email_bad_local_part",
    "email_bad_domain",
    "phone_too_short",
    "phone_impossible",
    "name_empty",
    "city_empty",
    "state_empty",
    "zip_empty",
    "country_unknown",
    "dob_not_iso",
    "dob_impossible",
    "gender_unknown",
    "maid_not_uuid",
    "external_id_empty",
} | {f"{kind}_control_character" for kind in IDENTIFIER_KINDS}


def reason(platform: str, kind: str, value: str, default_country: str | None = None) -> str:
    with pytest.raises(InvalidIdentifier) as info:
        normalize(platform, kind, value, default_country)
    return info.value.reason
