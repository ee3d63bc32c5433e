"""Plan cost against the hashing floor, and peak memory.

Generates a SQLite source of N profiles with two identifiers each (email and phone), then measures in
one process:

- floor_s: reading the rows, normalizing and hashing them (the unavoidable work);
- first_plan_s: the first plan, against empty state;
- plan_s: a steady-state plan after ``--churn`` of the profiles changed (new, gone, new email);
- noop_plan_s: a plan when nothing changed;
- peak_rss_mb: the process's peak resident memory.

    python benchmarks/plan.py --members 1000000 --json
    python benchmarks/plan.py --sizes        # 100k and 1M; add --with-10m for 10M
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from audiencesync.connectors.contract import PushResult
from audiencesync.state.outbox import OutboxStore
from audiencesync.state.store import StateStore
from audiencesync.sync.config import load_config
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.plan import Planner
from audiencesync.sync.sources import read_audience
from profiles import generate  # the sibling module: benchmarks run as scripts from this folder


def churn(path: Path, members: int, share: float, seed: int = 2) -> None:
    """A third of the churn leaves, a third arrives, a third changes email."""
    rng = random.Random(seed)
    n = max(3, int(members * share)) // 3
    picked = rng.sample(range(members), 2 * n)
    conn = sqlite3.connect(path)
    conn.executemany(
        "UPDATE profiles SET stage = 'lapsed_customer' WHERE profile_id = ?",
        ((f"p{i:09d}",) for i in picked[:n]),
    )
    conn.executemany(
        "UPDATE profiles SET email = 'moved.' || profile_id || '@example.net' WHERE profile_id = ?",
        ((f"p{i:09d}",) for i in picked[n:]),
    )
    conn.executemany(
        "INSERT INTO profiles VALUES (?, ?, '+14155550100', 'vip')",
        ((f"n{i:09d}", f"new.{i}@example.com") for i in range(n)),
    )
    conn.commit()
    conn.close()


CONFIG = """
state_path = "state.db"
[source]
kind = "sqlite"
path = "profiles.db"
id_column = "profile_id"
stage_column = "stage"
default_country = "US"
[source.identifiers]
email = "email"
phone = "phone"
[audiences.all]
stage = "vip"
[destinations.files]
platform = "file"
directory = "exports"
[[syncs]]
audience = "all"
destinations = ["files"]
max_remove_share = 1.0
"""


def plan_and_confirm(config_path: Path, confirm: bool) -> tuple[float, int]:
    """Time one plan (committed to the outbox), then mark every change confirmed, untimed, as a
    platform would. Returns (seconds, changes planned)."""
    config = load_config(config_path, {})
    target = config.targets()[0]
    store = StateStore.open(config.state_path)
    try:
        row = store.ensure_target(target.key, "all", "files", "file")
        planner = Planner(store.db)
        started = time.perf_counter()
        [plan] = planner.plan_audience(
            config.source,
            read_audience(config.source, target.audience),
            [(target, row.id, row.state_version, 10_000, None)],
            allow_mass_remove=True,
        )
        planner.commit_plan(plan)
        elapsed = time.perf_counter() - started
        changes = plan.total_adds + plan.total_removes
        if confirm:
            outbox = OutboxStore(store.db)
            for op in ("remove", "add"):
                for batch in outbox.batches(row.id, op, 10_000):
                    outbox.apply_result(row.id, op, PushResult.all_confirmed(batch.changes), 0, time.time())
        planner.discard(plan)
        return elapsed, changes
    finally:
        store.close()


def floor(config_path: Path) -> float:
    config = load_config(config_path, {})
    src = config.source
    hasher = ProfileHasher("meta", list(src.identifiers), src.default_country, src.prehashed)
    started = time.perf_counter()
    for row in read_audience(src, config.audiences["all"]):
        hasher(row.raw)
    return time.perf_counter() - started


def run(members: int, share: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench.toml").write_text(textwrap.dedent(CONFIG))
        config = folder / "bench.toml"
        generate(folder / "profiles.db", members)
        floor_s = floor(config)
        first_s, _ = plan_and_confirm(config, confirm=True)
        churn(folder / "profiles.db", members, share)
        plan_s, changes = plan_and_confirm(config, confirm=True)
        noop_s, noop_changes = plan_and_confirm(config, confirm=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "members": members,
        "churn": share,
        "floor_s": round(floor_s, 3),
        "first_plan_s": round(first_s, 3),
        "plan_s": round(plan_s, 3),
        "noop_plan_s": round(noop_s, 3),
        "ratio": round(plan_s / floor_s, 3),
        "changes": changes,
        "noop_changes": noop_changes,
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, help="one size (default: --sizes)")
    parser.add_argument("--sizes", action="store_true", help="100k and 1M, each in its own process")
    parser.add_argument(
        "--with-10m", action="store_true", help="with --sizes, also 10M (minutes, several GB of disk)"
    )
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    args = parser.parse_args(argv)
    if args.members is None:
        import subprocess

        sizes = [100_000, 1_000_000] + ([10_000_000] if args.with_10m else [])
        for size in sizes:
            # Each size in a fresh process, so peak RSS is that size's own.
            cmd = [sys.executable, __file__, "--members", str(size), "--churn", str(args.churn)]
            subprocess.run(cmd + (["--json"] if args.json else []), check=True)
        return 0
    result = run(args.members, args.churn)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
