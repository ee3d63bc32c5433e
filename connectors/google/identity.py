"""How Google Customer Match wants each identifier: the Data Manager formatting guide
(developers.google.com/data-manager/api/devguides/concepts/formatting). Where Google's own sources
disagree (Gmail dots, inner spaces in names) the current guide is followed: docs/setup-google.md,
"Assumptions"."""

from __future__ import annotations

from audiencesync.connectors.platform_spec import IdentityProfile, Rule

IDENTITY = IdentityProfile(
    rules={
        # Dots and a +suffix dropped for gmail.com and googlemail.com only.
        "email": Rule.EMAIL_GMAIL_CANONICAL,
        "phone": Rule.PHONE_E164,
        # Trimmed and lowercased; inner spaces kept.
        "first_name": Rule.NAME_TRIMMED,
        "last_name": Rule.NAME_TRIMMED,
        "zip": Rule.ZIP_TRIMMED,
        "country": Rule.COUNTRY_UPPER,
    },
    # Customer Match takes contact info only; region code and postal code go unhashed.
    unhashed=frozenset({"country", "zip"}),
)
