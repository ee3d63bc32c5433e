"""Plan cost against the hashing floor, one scan for many audiences, incremental plans, peak memory.

Generates a SQLite source of N profiles with two identifiers each (email and phone), then measures in
one process, planning as ``sync`` does (``audiencesync.sync.incremental.plan_scan``):

- floor_s: reading the rows, normalizing and hashing them (the unavoidable work of a first sync);
- first_plan_s: the first plan, against empty state;
- plan_s, ratio: a steady-state plan after ``--churn`` of the profiles changed (new, gone, new
  email), and its share of the floor;
- noop_plan_s, noop_ratio: a plan when nothing changed, and its share of the floor;
- audiences_plan_s, one_audience_plan_s, audiences_ratio: ``--audiences`` audiences over the source
  (each a tenth of it, by id) planned from one scan, against one audience of all of it, no changes;
- incremental_plan_s: an incremental plan after ``--changed`` rows changed, on a source of
  ``--incremental-members`` profiles (default: ``--members``);
- peak_rss_mb: the process's peak resident memory.

    python benchmarks/plan.py --members 1000000 --json
    python benchmarks/plan.py --members 100000 --incremental-members 10000000 --json
    python benchmarks/plan.py --sizes        # 100k and 1M; add --with-10m for 10M
"""

from __future__ import annotations

import argparse
import json
import platform
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
from audiencesync.sync.incremental import plan_scan
from audiencesync.sync.plan import Planner, TargetPlan, TargetSpec
from audiencesync.sync.sources import read_audience_batches
from profiles import CHANGED_AT, generate  # the sibling module: benchmarks run as scripts from this folder


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
        "INSERT INTO profiles VALUES (?, ?, '+14155550100', 'vip', ?)",
        ((f"n{i:09d}", f"new.{i}@example.com", CHANGED_AT) for i in range(n)),
    )
    conn.commit()
    conn.close()


def change_rows(path: Path, members: int, changed: int, seed: int = 3) -> None:
    """``changed`` profiles get a new email and a change time an hour after the rest."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.executemany(
        "UPDATE profiles SET email = 'changed.' || profile_id || '@example.org', updated_at = ? "
        "WHERE profile_id = ?",
        ((CHANGED_AT + 3600, f"p{i:09d}") for i in rng.sample(range(members), changed)),
    )
    conn.commit()
    conn.close()


SOURCE = """
state_path = "state.db"
[source]
kind = "sqlite"
path = "profiles.db"
id_column = "profile_id"
stage_column = "stage"
default_country = "US"
{source_extra}
[source.identifiers]
email = "email"
phone = "phone"
[destinations.files]
platform = "file"
directory = "exports"
"""
ONE_AUDIENCE = """
[audiences.all]
stage = "vip"
[[syncs]]
audience = "all"
destinations = ["files"]
max_remove_share = 1.0
"""
INCREMENTAL = 'changed_at_column = "updated_at"\nincremental = true'


def tenth(k: int) -> str:
    return f"""
[audiences.tenth_{k}]
stage = "vip"
where = "substr(profile_id, -1) = '{k % 10}'"
[[syncs]]
audience = "tenth_{k}"
destinations = ["files"]
max_remove_share = 1.0
"""


def write_config(folder: Path, name: str, audiences: str, source_extra: str = "") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(SOURCE.format(source_extra=source_extra)) + textwrap.dedent(audiences))
    return path


def plan_and_confirm(config_path: Path, confirm: bool) -> tuple[float, int]:
    """Time one plan of every target (committed to the outbox), then mark every change confirmed,
    untimed, as a platform would. Returns (seconds, changes planned)."""
    config = load_config(config_path, {})
    targets = config.targets()
    store = StateStore.open(config.state_path)
    try:
        specs: list[list[TargetSpec]] = []
        for target in targets:
            row = store.ensure_target(target.key, target.audience.name, "files", "file")
            specs.append([(target, row.id, row.state_version, 10_000, None)])
        planner = Planner(store.db)
        started = time.perf_counter()
        plans: list[TargetPlan] = plan_scan(planner, config.source, specs, allow_mass_remove=True)
        for plan in plans:
            planner.commit_plan(plan)
        elapsed = time.perf_counter() - started
        changes = sum(plan.total_adds + plan.total_removes for plan in plans)
        if confirm:
            outbox = OutboxStore(store.db)
            for plan in plans:
                assert plan.target_id is not None
                for op in ("remove", "add"):
                    for batch in outbox.batches(plan.target_id, op, 10_000):
                        outbox.apply_result(
                            plan.target_id, op, PushResult.all_confirmed(batch.changes), 0, time.time()
                        )
        for plan in plans:
            planner.discard(plan)
        return elapsed, changes
    finally:
        store.close()


def floor(config_path: Path) -> float:
    config = load_config(config_path, {})
    src = config.source
    hasher = ProfileHasher("meta", list(src.identifiers), src.default_country, src.prehashed)
    started = time.perf_counter()
    for batch in read_audience_batches(src, config.audiences["all"]):
        for i in range(len(batch)):
            hasher(batch.raw(i))
    return time.perf_counter() - started


def run_full(folder: Path, members: int, share: float) -> dict[str, object]:
    config = write_config(folder, "bench.toml", ONE_AUDIENCE)
    generate(folder / "profiles.db", members)
    floor_s = floor(config)
    first_s, _ = plan_and_confirm(config, confirm=True)
    churn(folder / "profiles.db", members, share)
    plan_s, changes = plan_and_confirm(config, confirm=True)
    noop_s, noop_changes = plan_and_confirm(config, confirm=False)
    return {
        "floor_s": round(floor_s, 3),
        "first_plan_s": round(first_s, 3),
        "plan_s": round(plan_s, 3),
        "noop_plan_s": round(noop_s, 3),
        "ratio": round(plan_s / floor_s, 3),
        "noop_ratio": round(noop_s / floor_s, 3),
        "changes": changes,
        "noop_changes": noop_changes,
    }


def run_audiences(folder: Path, audiences: int) -> dict[str, object]:
    """Against the churned source of ``run_full``: each configuration planned once to settle its
    state, then timed with nothing changed."""
    many = write_config(folder, "many.toml", "".join(tenth(k) for k in range(audiences)))
    many.write_text(many.read_text().replace('"state.db"', '"state-many.db"'))
    plan_and_confirm(many, confirm=True)
    many_s, many_changes = plan_and_confirm(many, confirm=False)
    one_s, _ = plan_and_confirm(folder / "bench.toml", confirm=False)
    return {
        "audiences": audiences,
        "audiences_plan_s": round(many_s, 3),
        "one_audience_plan_s": round(one_s, 3),
        "audiences_ratio": round(many_s / one_s, 3),
        "audiences_changes": many_changes,
    }


def run_incremental(folder: Path, members: int, changed: int, reuse: bool) -> dict[str, object]:
    """A full plan to set the watermark (untimed), then ``changed`` rows change and the next plan,
    incremental, is timed."""
    if not reuse:
        generate(folder / "profiles.db", members)
    config = write_config(folder, "incremental.toml", ONE_AUDIENCE, INCREMENTAL)
    config.write_text(config.read_text().replace('"state.db"', '"state-incremental.db"'))
    plan_and_confirm(config, confirm=True)
    change_rows(folder / "profiles.db", members, changed)
    incremental_s, incremental_changes = plan_and_confirm(config, confirm=True)
    return {
        "incremental_members": members,
        "changed_rows": changed,
        "incremental_plan_s": round(incremental_s, 3),
        "incremental_changes": incremental_changes,
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {"members": args.members, "churn": args.churn}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        if not args.incremental_only:
            result |= run_full(folder, args.members, args.churn)
            if args.audiences > 1:
                result |= run_audiences(folder, args.audiences)
        inc_members = args.incremental_members or args.members
        if args.changed:
            # The churned source serves when it is there and the size asked for: its rows are all
            # in the past.
            reuse = not args.incremental_only and inc_members == args.members
            inc_folder = folder if reuse else folder / "incremental"
            inc_folder.mkdir(exist_ok=True)
            result |= run_incremental(inc_folder, inc_members, args.changed, reuse=reuse)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mb"] = round(peak_kb / 1024, 1)
    result["machine"] = (
        f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, help="one size (default: --sizes)")
    parser.add_argument("--sizes", action="store_true", help="100k and 1M, each in its own process")
    parser.add_argument(
        "--with-10m", action="store_true", help="with --sizes, also 10M (an hour, several GB of disk)"
    )
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--audiences", type=int, default=10, help="audiences over one scan (1: skip)")
    parser.add_argument(
        "--changed", type=int, default=1000, help="rows changed for the incremental plan (0: skip)"
    )
    parser.add_argument("--incremental-members", type=int, help="source size for the incremental plan")
    parser.add_argument(
        "--incremental-only",
        action="store_true",
        help="only the incremental plan (its first full plan untimed)",
    )
    parser.add_argument("--tmp", help="folder for the generated files (default: the system's)")
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
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
