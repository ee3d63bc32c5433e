"""How Meta wants each identifier: the normalization table of Meta's custom-audience docs and the
facebook-business SDK (``CustomAudienceMixin``), whose vectors tests/test_identity.py checks."""

from __future__ import annotations

from audiencesync.connectors.platform_spec import IdentityProfile, Rule

IDENTITY = IdentityProfile(
    rules={
        # EMAIL: trim and lowercase only; Gmail dots are kept for Meta.
        "email": Rule.EMAIL,
        # PHONE: country code and number, digits only, no "+".
        "phone": Rule.PHONE_E164_DIGITS,
        # FN, LN, CT, ST: lowercase without punctuation or spaces; non-ASCII letters kept.
        "first_name": Rule.NAME_LETTERS_ONLY,
        "last_name": Rule.NAME_LETTERS_ONLY,
        # ZIP: US codes on their first five digits only.
        "zip": Rule.ZIP_US_FIVE,
        "city": Rule.CITY,
        "state": Rule.STATE,
        "country": Rule.COUNTRY_LOWER,
        # DOB goes as Meta's three keys DOBY, DOBM, DOBD.
        "dob": Rule.DOB_SPLIT,
        "gender": Rule.GENDER,
        "maid": Rule.MAID,
        "external_id": Rule.EXTERNAL_ID,
    },
    # EXTERN_ID is never hashed; MADID goes raw as Meta's single-key path and the peers send it
    # (the sources disagree: docs/setup-meta.md, "Assumptions").
    unhashed=frozenset({"maid", "external_id"}),
)
