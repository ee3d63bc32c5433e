"""How TikTok wants each identifier: its help centre's "List of supported IDs and formats for a
customer file" (ads.tiktok.com/help/article/list-of-supported-ids-and-formats-for-a-customer-file).
Where TikTok's pages disagree (the ``+`` of a phone) the choice is in docs/setup-tiktok.md,
"Assumptions"."""

from __future__ import annotations

from audiencesync.connectors.platform_spec import IdentityProfile, Rule

IDENTITY = IdentityProfile(
    rules={
        # A "+" and everything after it up to "@" removed, on every domain; dots stay.
        "email": Rule.EMAIL_NO_PLUS_TAG,
        "phone": Rule.PHONE_E164,
        # IDFA or GAID, trimmed and lowercased, then hashed.
        "maid": Rule.MAID,
    },
)
