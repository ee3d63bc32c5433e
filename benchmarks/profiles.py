"""The synthetic profile source both benchmarks read: N profiles in one stage, each with an email
(mixed case, so normalization has work to do), a valid US phone and a change time (indexed, as a
source planned incrementally should have it)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

CHANGED_AT = 1_800_000_000.0
"""The latest generated profile's change time (epoch seconds); each earlier one changed a second
before the next."""


def generate(path: Path, members: int, seed: int = 1) -> None:
    """Write a SQLite profile table of ``members`` rows (ids ``p000000000``...) at ``path``."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(
        "CREATE TABLE profiles (profile_id TEXT PRIMARY KEY, email TEXT, phone TEXT, stage TEXT, updated_at REAL)"
    )
    conn.executemany(
        "INSERT INTO profiles VALUES (?, ?, ?, 'vip', ?)",
        (
            (
                f"p{i:09d}",
                f"Person.{i}@Example.com",
                f"+1 415 {rng.randrange(200, 999)} {rng.randrange(10000):04d}",
                CHANGED_AT - (members - 1 - i),
            )
            for i in range(members)
        ),
    )
    conn.execute("CREATE INDEX profiles_updated_at ON profiles (updated_at)")
    conn.commit()
    conn.close()
