"""Synthetic profile data for the demo: a SQLite profile database shaped like a real one.

Profiles carry emails (some Gmail addresses with dots and +tags), phones from several countries in
national and international formats, names with accents and punctuation, postcodes, every lifecycle
stage and in-flow tag, consent flags, stage-change timestamps, and a few per cent of invalid
identifiers, so that the demo's plan shows what a real one does. No real person is in it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from audiencesync.sync.config import IN_FLOW_TAGS, STAGES

FIRST = [
    "Zoë",
    "José",
    "Anne-Marie",
    "Łukasz",
    "Chloé",
    "Mary",
    "John",
    "Aoife",
    "Søren",
    "Renée",
    "Mohammed",
    "Ana",
    "Jürgen",
    "Priya",
    "Wei",
    "Olivia",
    "Noah",
    "Amélie",
    "Björn",
    "Lucía",
    "Kenji",
    "Fatima",
]
LAST = [
    "O'Brien",
    "García",
    "Müller",
    "Nguyễn",
    "Smith-Jones",
    "Dubois",
    "Rossi",
    "Kowalski",
    "Silva",
    "van der Berg",
    "Johnson",
    "Brown",
    "Fernández",
    "Schäfer",
    "Lefèvre",
    "Murphy",
    "Tanaka",
    "Khan",
]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.org", "googlemail.com", "web.de"]
STAGE_WEIGHTS = [15, 20, 15, 10, 20, 5, 15]
US_STATES = [
    ("California", "San Francisco", "941"),
    ("New York", "New York", "100"),
    ("TX", "Austin", "787"),
    ("Illinois", "Chicago", "606"),
    ("FL", "Miami", "331"),
    ("Massachusetts", "Boston", "021"),
]
COUNTRIES = ["US"] * 10 + ["GB"] * 3 + ["DE"] * 2 + ["FR"] * 2 + ["BR"] * 2 + ["AU"]
COUNTRY_NAMES = {
    "US": ["US", "United States", "USA", "us"],
    "GB": ["GB", "United Kingdom", "UK"],
    "DE": ["DE", "Germany", "Deutschland"],
    "FR": ["FR", "France"],
    "BR": ["BR", "Brasil"],
    "AU": ["AU", "Australia"],
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    profile_id TEXT PRIMARY KEY,
    email TEXT, phone TEXT, first_name TEXT, last_name TEXT,
    city TEXT, state TEXT, postcode TEXT, country TEXT,
    dob TEXT, gender TEXT, maid TEXT, external_id TEXT,
    stage TEXT NOT NULL, in_flows TEXT NOT NULL DEFAULT '[]',
    ads_consent INTEGER, stage_changed_at TEXT NOT NULL
)
"""


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _phone(rng: random.Random, country: str) -> str:
    n = rng.randrange(10**6)
    if country == "US":
        area = rng.choice(["415", "212", "312", "617", "305", "512"])
        return rng.choice(
            [f"({area}) {200 + n % 700}-{n % 10000:04d}", f"+1 {area}-{200 + n % 700}-{n % 10000:04d}"]
        )
    if country == "GB":
        return rng.choice([f"07700 9{n % 100000:05d}", f"+44 (0)20 7946 {n % 10000:04d}"])
    if country == "DE":
        return rng.choice([f"030 {n % 10**7:07d}", f"+49 151 {n % 10**8:08d}"])
    if country == "FR":
        return f"06 {n % 100:02d} {n // 100 % 100:02d} {n // 10000 % 100:02d} {rng.randrange(100):02d}"
    if country == "BR":
        return f"+55 11 9{n % 10000:04d}-{rng.randrange(10000):04d}"
    return f"0412 {n % 1000:03d} {rng.randrange(1000):03d}"


def _postcode(rng: random.Random, country: str, prefix: str) -> str:
    if country == "US":
        five = f"{prefix}{rng.randrange(100):02d}"
        return five if rng.random() < 0.8 else f"{five}-{rng.randrange(10000):04d}"
    return {
        "GB": rng.choice(["SW1A 1AA", "EC1A 1BB", "M1 1AE", "B33 8TH"]),
        "DE": f"{10115 + rng.randrange(900)}",
        "FR": f"750{rng.randrange(1, 21):02d}",
        "BR": f"01310-{rng.randrange(1000):03d}",
    }.get(country, f"{2000 + rng.randrange(100)}")


def _flows(rng: random.Random, stage: str) -> list[str]:
    flows = []
    if stage == "new_subscriber" and rng.random() < 0.5:
        flows.append("welcome")
    if rng.random() < 0.06:
        flows.append("added_to_cart")
    if rng.random() < 0.05:
        flows.append("abandoned_checkout")
    if stage == "new_customer" and rng.random() < 0.4:
        flows.append("post_purchase")
    return flows


def _email(rng: random.Random, first: str, last: str, i: int) -> str:
    roll = rng.random()
    if roll < 0.01:
        return f"{_ascii(first)}.{_ascii(last)}(at)gmail.com"  # invalid: no @
    if roll < 0.015:
        return f"{_ascii(first)}@"  # invalid: no domain
    if roll < 0.03:
        return ""
    domain = rng.choice(DOMAINS)
    local = f"{_ascii(first)}.{_ascii(last)}{i}"
    if domain in ("gmail.com", "googlemail.com") and rng.random() < 0.2:
        local += "+shop"
    text = f"{local}@{domain}"
    if rng.random() < 0.1:
        text = f"  {text.title()} "
    return text


def _profile(rng: random.Random, i: int, now: float) -> tuple[object, ...]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    country = rng.choice(COUNTRIES)
    state, city, prefix = (
        rng.choice(US_STATES)
        if country == "US"
        else ("", rng.choice(["London", "Berlin", "Paris", "São Paulo", "Sydney"]), "")
    )
    stage = rng.choices(STAGES, STAGE_WEIGHTS)[0]
    phone = _phone(rng, country) if rng.random() < 0.75 else None
    if phone and rng.random() < 0.02:
        phone = rng.choice(["12345", "n/a", "000"])  # invalid phones
    consent_roll = rng.random()
    consent = 1 if consent_roll < 0.9 else (0 if consent_roll < 0.95 else None)
    dob = (
        f"{rng.randrange(1950, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        if rng.random() < 0.6
        else None
    )
    maid = None
    if rng.random() < 0.3:
        maid = "-".join(f"{rng.getrandbits(b * 4):0{b}x}" for b in (8, 4, 4, 4, 12))
    return (
        f"p{i:08d}",
        _email(rng, first, last, i),
        phone,
        first if rng.random() < 0.95 else f" {first.upper()} ",
        last,
        city,
        state,
        _postcode(rng, country, prefix or "100"),
        rng.choice(COUNTRY_NAMES[country]),
        dob,
        rng.choice(["F", "M", "female", "male", None]),
        maid,
        f"cust_{i}",
        stage,
        json.dumps(_flows(rng, stage)),
        consent,
        _iso(now - rng.uniform(3600, 90 * 86400)),
    )


def build_profiles(path: Path, profiles: int = 10_000, seed: int = 7) -> int:
    """(Re)create the demo profile database at ``path`` with ``profiles`` synthetic profiles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    rng = random.Random(seed)
    now = time.time()
    conn = sqlite3.connect(tmp)
    try:
        conn.execute(SCHEMA)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        for start in range(0, profiles, 50_000):
            rows = [_profile(rng, i, now) for i in range(start, min(profiles, start + 50_000))]
            conn.executemany(f"INSERT INTO profiles VALUES ({', '.join('?' * 17)})", rows)
        conn.execute("CREATE INDEX profiles_stage ON profiles (stage)")
        conn.commit()
    finally:
        conn.close()
    tmp.replace(path)
    return profiles


@dataclass(frozen=True)
class Advance:
    stage_moves: int
    flow_exits: int
    flow_entries: int
    email_changes: int


def advance(path: Path, share: float = 0.03, seed: int | None = None) -> Advance:
    """Move a share of profiles between stages and flows and change a few emails, as a day of real
    activity would, so the next sync has real changes to make."""
    rng = random.Random(seed)
    now = _iso(time.time())
    conn = sqlite3.connect(path)
    try:
        ids = [r[0] for r in conn.execute("SELECT profile_id FROM profiles")]
        moved = rng.sample(ids, int(len(ids) * share))
        for pid in moved:
            conn.execute(
                "UPDATE profiles SET stage = ?, stage_changed_at = ? WHERE profile_id = ?",
                [rng.choices(STAGES, STAGE_WEIGHTS)[0], now, pid],
            )
        exits = entries = 0
        for tag in IN_FLOW_TAGS:
            inside = [
                (pid, flows)
                for pid, flows in conn.execute(
                    "SELECT profile_id, in_flows FROM profiles WHERE in_flows LIKE ?", [f'%"{tag}"%']
                )
            ]
            for pid, flows in rng.sample(inside, len(inside) // 10):
                conn.execute(
                    "UPDATE profiles SET in_flows = ?, stage_changed_at = ? WHERE profile_id = ?",
                    [json.dumps([f for f in json.loads(flows) if f != tag]), now, pid],
                )
                exits += 1
            for pid in rng.sample(ids, max(1, len(inside) // 10)):
                (flows,) = conn.execute(
                    "SELECT in_flows FROM profiles WHERE profile_id = ?", [pid]
                ).fetchone()
                current = json.loads(flows)
                if tag not in current:
                    conn.execute(
                        "UPDATE profiles SET in_flows = ?, stage_changed_at = ? WHERE profile_id = ?",
                        [json.dumps([*current, tag]), now, pid],
                    )
                    entries += 1
        changed = rng.sample(ids, max(1, len(ids) // 200))
        for pid in changed:
            conn.execute(
                "UPDATE profiles SET email = 'new.' || ? || '@example.net', stage_changed_at = ? WHERE profile_id = ?",
                [pid, now, pid],
            )
        conn.commit()
    finally:
        conn.close()
    return Advance(len(moved), exits, entries, len(changed))
