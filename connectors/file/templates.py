"""The customer-list templates a file destination writes: each platform's column headers, by
identifier key (its ``format`` names one)."""

from __future__ import annotations

# Column headers of each platform's customer-list template, by identifier key.
HEADERS: dict[str, dict[str, str]] = {
    "meta": {
        "email": "email",
        "phone": "phone",
        "first_name": "fn",
        "last_name": "ln",
        "zip": "zip",
        "city": "ct",
        "state": "st",
        "country": "country",
        "doby": "doby",
        "dobm": "dobm",
        "dobd": "dobd",
        "gender": "gen",
        "maid": "madid",
        "external_id": "extern_id",
    },
    "google": {
        "email": "Email",
        "phone": "Phone",
        "first_name": "First Name",
        "last_name": "Last Name",
        "country": "Country",
        "zip": "Zip",
    },
    "tiktok": {"email": "EMAIL_SHA256", "phone": "PHONE_SHA256", "maid": "GAID_SHA256"},
}
