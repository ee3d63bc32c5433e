"""The crash and fault scenarios of the reliability suite, and the figures they add up to.

Every scenario syncs a seeded demo source to one platform emulator under test (destination ``main``),
changes the source, breaks a run (a SIGKILLed child process, or a fault mix on the emulator), changes
the source again, and then makes one clean run. The oracle is a second destination on the same
emulator (``ref``) that first syncs in that clean run, from empty state: after it, the audience under
test must hold exactly the members the fresh one holds.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import Connector
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Target, load_config
from audiencesync.sync.demo.profiles import advance, build_profiles
from audiencesync.sync.runner import RunOptions, SyncRunner, TargetResult
from crash_driver import POINTS, KillingConnector, fast_connector
from sample_configs import SOURCE_TABLE, STAGE_AND_FLOW_AUDIENCES

PLATFORMS = ("meta", "tiktok", "google_dm", "google_ads")
AUDIENCES = ("lapsed", "in_checkout")
DRIVER = Path(__file__).with_name("crash_driver.py")
PROFILES = 900
MAX_BATCH = 40

SOURCE = (
    SOURCE_TABLE
    + STAGE_AND_FLOW_AUDIENCES
    + """
# The breaker guards against a broken source; here two source changes with a broken run between
# them may legitimately remove more than a fifth of a small in-flow audience.
[[syncs]]
audience = "lapsed"
destinations = ["main", "ref"]
max_remove_share = 0.9

[[syncs]]
audience = "in_checkout"
destinations = ["main", "ref"]
max_remove_share = 0.9
"""
)

# A fault mix is a set of emulator switches at a transient rate (30 %, as the issue measured).
FAULT_MIXES: dict[str, list[dict[str, Any]]] = {
    "meta": [
        {"server_error_rate": 0.3},
        {"throttle_rate": 0.3},
        {"drop_rate": 0.3},
        {"lost_answer_rate": 0.3},
        {"html_rate": 0.15, "server_error_rate": 0.15},
        {"reject_row_rate": 0.3},
    ],
    "tiktok": [
        {"server_error_rate": 0.3},
        {"rate_limit_rate": 0.3},
        {"http_error_rate": 0.3},
        {"lost_answer_rate": 0.3},
        {"drop_rate": 0.3},
    ],
    "google_dm": [
        {"unavailable_rate": 0.3},
        {"internal_rate": 0.3},
        {"lost_answer_rate": 0.3},
        {"partial_success_rate": 0.3},
    ],
    "google_ads": [
        {"unavailable_rate": 0.3},
        {"concurrent_modification_rate": 0.3},
        {"lost_answer_rate": 0.3},
        {"job_fail_rate": 0.3},
    ],
}


@dataclass
class Figures:
    """What the suite prints, and the README's reliability section quotes."""

    scenarios: int = 0
    crash_points: int = 0
    """Scheduled kills that landed (the child died of SIGKILL)."""
    fault_mixes: int = 0
    faults_injected: int = 0
    """Requests the emulators answered with a fault (or applied and left unanswered)."""
    lost: int = 0
    """Members the source wants that the platform does not hold after the clean run."""
    stale: int = 0
    """Members the platform holds after the clean run that the source no longer wants."""
    unintended_removes: int = 0
    """Members synced before the break, still wanted, missing after the clean run."""
    stuck: int = 0
    """Targets whose clean run did not end ok, or left changes in the outbox or unsettled."""
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"reliability: {self.scenarios} scenarios, {self.crash_points} crash points (SIGKILL), "
            f"{self.fault_mixes} fault mixes, {self.faults_injected} faults injected; "
            f"lost {self.lost}, stale {self.stale}, unintended removes {self.unintended_removes}, "
            f"stuck targets {self.stuck}"
        )


class Emulators:
    """One emulator per platform for a whole suite; scenarios keep apart by audience name prefix."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._running: dict[str, Any] = {}

    def get(self, platform: str) -> Any:
        kind = "google" if platform.startswith("google") else platform
        if kind not in self._running:
            if kind == "meta":
                from audiencesync.connectors.meta.emulator import start_emulator as meta_start

                emulator: Any = meta_start()
            elif kind == "tiktok":
                from audiencesync.connectors.tiktok.emulator import start_emulator as tiktok_start

                emulator = tiktok_start()
            else:
                from audiencesync.connectors.google.emulator import start_emulator as google_start

                emulator = google_start()
            self._stack.callback(emulator.stop)
            self._running[kind] = emulator
            clear_faults(emulator)
        return self._running[kind]

    def close(self) -> None:
        self._stack.close()


def clear_faults(emulator: Any) -> None:
    """Every fault switch off. Google's per-minute quota is a switch too: the suite's many scenarios
    share one emulator, as many projects would not share one quota, so it is lifted."""
    emulator.faults.reset()
    if "quota_per_minute" in emulator.faults.as_dict():
        emulator.faults.set({"quota_per_minute": 1_000_000})


def destination_toml(platform: str, emulator: Any, name: str, prefix: str) -> str:
    if platform == "meta":
        body = f'platform = "meta"\nad_account_id = "act_1234567890"\naccess_token_env = "META_TEST_TOKEN"\nendpoint = "{emulator.url}"\n'
    elif platform == "tiktok":
        body = f'platform = "tiktok"\nadvertiser_id = "7000000000000000000"\naccess_token_env = "TIKTOK_TEST_TOKEN"\nendpoint = "{emulator.url}"\n'
    else:
        backend = "data_manager" if platform == "google_dm" else "google_ads"
        body = (
            f'platform = "google"\nbackend = "{backend}"\ncustomer_id = "1234567890"\n'
            f'login_customer_id = "9876543210"\nendpoint = "{emulator.endpoint}"\n'
            "accept_customer_match_terms = true\n"
        )
    return f'[destinations.{name}]\n{body}max_wait_seconds = 2\nname_prefix = "{prefix}"\n\n'


def audience_members(emulator: Any, name: str) -> set[str]:
    """The members of the emulator's audience called ``name``, each as comparable JSON."""
    snapshot = emulator.snapshot()
    for audience in snapshot["audiences"]:
        if audience["name"] == name:
            return {json.dumps(m, sort_keys=True) for m in audience["members"]}
    return set()


@contextmanager
def _store(config_path: Path) -> Iterator[tuple[Any, StateStore]]:
    config = load_config(config_path, {})
    store = StateStore.open(config.state_path)
    try:
        yield config, store
    finally:
        store.close()


def sync_in_process(
    config_path: Path, targets: tuple[str, ...], max_batch: int = MAX_BATCH
) -> list[TargetResult]:
    def build(target: Target) -> Connector:
        return KillingConnector(fast_connector(target.destination), "none", 0, max_batch)

    with _store(config_path) as (config, store):
        return SyncRunner(config, store, RunOptions(targets=targets, connector_factory=build)).run()


CRASH_MAX_BATCH = 4
"""Batches of a killed run: small, so a run has many moments between batches to be killed at."""


def sync_killed(config_path: Path, point: str, at: int, targets: tuple[str, ...]) -> bool:
    """A sync in a child process, SIGKILLed at the ``at``-th ``point``; True when the kill landed."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(config_path), point, str(at), str(CRASH_MAX_BATCH), *targets],
        cwd=config_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode not in (0, 1, -9):
        raise AssertionError(f"crash driver failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode == -9


class Scenario:
    """One platform, one seed, in its own directory."""

    def __init__(
        self, root: Path, emulators: Emulators, platform: str, seed: int, profiles: int = PROFILES
    ) -> None:
        self.platform = platform
        self.seed = seed
        self.emulator = emulators.get(platform)
        self.dir = root / f"{platform}-{seed}"
        self.dir.mkdir(parents=True)
        build_profiles(self.dir / "profiles.db", profiles, seed=seed)
        self.main_prefix, self.ref_prefix = f"m{seed}-{platform} ", f"r{seed}-{platform} "
        self.config = self.dir / "audience-sync.toml"
        self.config.write_text(
            textwrap.dedent(SOURCE)
            + destination_toml(platform, self.emulator, "main", self.main_prefix)
            + destination_toml(platform, self.emulator, "ref", self.ref_prefix),
            encoding="utf-8",
        )
        self.main = tuple(f"{a}@main" for a in AUDIENCES)
        self.ref = tuple(f"{a}@ref" for a in AUDIENCES)

    def change_source(self, salt: int) -> None:
        advance(self.dir / "profiles.db", share=0.06, seed=self.seed * 1000 + salt)

    def platform_members(self, prefix: str) -> dict[str, set[str]]:
        return {a: audience_members(self.emulator, f"{prefix}{a}") for a in AUDIENCES}

    def check(self, figures: Figures, before: dict[str, set[str]], label: str) -> None:
        """One clean run of the target under test and of the fresh reference, then the comparison."""
        results = sync_in_process(self.config, self.main + self.ref)
        main, ref = self.platform_members(self.main_prefix), self.platform_members(self.ref_prefix)
        figures.scenarios += 1
        for audience in AUDIENCES:
            lost, stale = ref[audience] - main[audience], main[audience] - ref[audience]
            unintended = (before.get(audience, set()) & ref[audience]) - main[audience]
            figures.lost += len(lost)
            figures.stale += len(stale)
            figures.unintended_removes += len(unintended)
            if lost or stale:
                figures.failures.append(f"{label} {audience}: {len(lost)} lost, {len(stale)} stale")
        with _store(self.config) as (_config, store):
            for r in results:
                if r.plan.key not in self.main:
                    continue
                row = store.find_target(r.plan.key)
                assert row is not None
                left = store.db.execute(
                    "SELECT count(*) FROM outbox WHERE target_id = ?", [row.id]
                ).fetchone()[0]
                unsettled = store.db.execute(
                    "SELECT count(*) FROM members WHERE target_id = ? AND confirmation != 'synced'", [row.id]
                ).fetchone()[0]
                if r.status != "ok" or left or unsettled:
                    figures.stuck += 1
                    figures.failures.append(
                        f"{label} {r.plan.key}: {r.status} {r.error or ''} ({left} queued, {unsettled} unsettled)"
                    )


def crash_schedule(seed: int, count: int) -> list[tuple[str, str, int]]:
    """``count`` seeded (platform, point, occurrence) triples, every platform and point covered
    before any repeats; polling only where there is polling (Google)."""
    rng = random.Random(seed)
    cells = [(p, point) for p in PLATFORMS for point in POINTS if point != "poll" or p.startswith("google")]
    out: list[tuple[str, str, int]] = []
    while len(out) < count:
        rng.shuffle(cells)
        for platform, point in cells[: count - len(out)]:
            at = 1 if point in ("plan", "poll") else rng.randint(1, 6)
            out.append((platform, point, at))
    return out


def run_crash_point(
    root: Path, emulators: Emulators, figures: Figures, index: int, platform: str, point: str, at: int
) -> None:
    scenario = Scenario(root, emulators, platform, seed=1000 + index)
    sync_in_process(scenario.config, scenario.main)
    before = scenario.platform_members(scenario.main_prefix)
    scenario.change_source(1)
    if sync_killed(scenario.config, point, at, scenario.main):
        figures.crash_points += 1
    scenario.change_source(2)
    scenario.check(figures, before, f"crash {platform}/{point}#{at}")


def run_fault_mix(
    root: Path, emulators: Emulators, figures: Figures, index: int, platform: str, mix: dict[str, Any]
) -> None:
    scenario = Scenario(root, emulators, platform, seed=5000 + index)
    sync_in_process(scenario.config, scenario.main)
    before = scenario.platform_members(scenario.main_prefix)
    scenario.change_source(1)
    counts_before = _fault_count(scenario.emulator)
    scenario.emulator.faults.set({**mix, "seed": index})
    try:
        sync_in_process(scenario.config, scenario.main)
        scenario.change_source(2)
        sync_in_process(scenario.config, scenario.main)
    finally:
        clear_faults(scenario.emulator)
    figures.fault_mixes += 1
    figures.faults_injected += _fault_count(scenario.emulator) - counts_before
    scenario.check(figures, before, f"faults {platform} {mix}")


def _fault_count(emulator: Any) -> int:
    return int(getattr(emulator.faults, "fired", 0))
