"""Properties of the diff, for all inputs: applying each plan to the platform gives the source's
membership; mirror mode never removes what it did not add; add_only never removes; a crash at any
point followed by a rerun converges."""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from audiencesync.connectors.contract import (
    IDENTIFIER_KINDS,
    AudienceSpec,
    Capabilities,
    Change,
    HandleStatus,
    PlatformStatus,
    PushResult,
    SessionInfo,
)
from audiencesync.state.store import StateStore
from audiencesync.sync.config import load_config
from audiencesync.sync.identity import normalize, sha256_hex
from audiencesync.sync.runner import RunOptions, SyncRunner
from audiencesync.sync.source_load import payload_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class Crash(Exception):
    pass


class InMemoryPlatform:
    """A platform that keeps membership as a set of identifier payloads and can crash on demand."""

    def __init__(self, max_batch: int = 3) -> None:
        self.members: set[str] = set()
        self.removed: list[str] = []
        self.max_batch = max_batch
        self.crash_after: int | None = None
        self.calls = 0

    def capabilities(self) -> Capabilities:
        return Capabilities(
            max_batch=self.max_batch, identifier_kinds=frozenset({"email"}), uses_sessions=True
        )

    def ensure_audience(self, spec: AudienceSpec) -> str:
        return "aud-1"

    def _tick(self) -> None:
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise Crash()

    def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        self._tick()
        self.members.update(json.dumps(dict(c.identifiers), sort_keys=True) for c in batch)
        return PushResult.all_confirmed(batch)

    def remove(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        self._tick()
        for c in batch:
            payload = json.dumps(dict(c.identifiers), sort_keys=True)
            self.removed.append(payload)
            self.members.discard(payload)
        return PushResult.all_confirmed(batch)

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, HandleStatus]:
        return {}

    def read_back(self, audience_id: str) -> PlatformStatus:
        return PlatformStatus(size_lower=len(self.members), size_upper=len(self.members), ready=True)

    def refresh_due_seconds(self) -> float | None:
        return None

    def close(self) -> None:
        pass


def expected(snapshot: Mapping[str, str]) -> set[str]:
    return {json.dumps({"email": sha256_hex(normalize("meta", "email", e))}) for e in snapshot.values()}


EMAILS = st.sampled_from([f"user{i}@example.com" for i in range(12)] + ["  USER1@Example.com "])
SNAPSHOT = st.dictionaries(st.sampled_from([f"p{i}" for i in range(15)]), EMAILS, max_size=15)


def setup(tmp: Path, mode: str) -> tuple[Path, Path]:
    source = tmp / "profiles.jsonl"
    config = tmp / "audience-sync.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            state_path = "state.db"
            [source]
            kind = "jsonl"
            path = "profiles.jsonl"
            id_column = "id"
            stage_column = "stage"
            [source.identifiers]
            email = "email"
            [audiences.all]
            stage = "vip"
            [destinations.mem]
            platform = "file"
            directory = "unused"
            [[syncs]]
            audience = "all"
            destinations = ["mem"]
            mode = "{mode}"
            max_remove_share = 1.0
            """
        )
    )
    return source, config


def write_source(path: Path, snapshot: Mapping[str, str]) -> None:
    path.write_text(
        "".join(json.dumps({"id": k, "email": v, "stage": "vip"}) + "\n" for k, v in snapshot.items())
    )


def run(config_path: Path, platform: InMemoryPlatform) -> None:
    config = load_config(config_path, {})
    store = StateStore.open(config.state_path)
    try:
        options = RunOptions(connector_factory=lambda _t: platform, allow_mass_remove=True)
        SyncRunner(config, store, options).run()
    finally:
        store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(snapshots=st.lists(SNAPSHOT, min_size=1, max_size=5))
def test_mirror_converges_to_the_source_after_every_run(tmp_path_factory, snapshots) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("mirror")
    source, config = setup(tmp, "mirror")
    platform = InMemoryPlatform()
    foreign = json.dumps({"email": "f" * 64})
    platform.members.add(foreign)  # on the platform, but never added by this tool
    for snapshot in snapshots:
        write_source(source, snapshot)
        run(config, platform)
        assert platform.members - {foreign} == expected(snapshot)
        assert foreign in platform.members, "mirror removed a member it did not add"


@settings(max_examples=30, deadline=None)
@given(snapshots=st.lists(SNAPSHOT, min_size=1, max_size=4))
def test_add_only_never_removes(tmp_path_factory, snapshots) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("addonly")
    source, config = setup(tmp, "add_only")
    platform = InMemoryPlatform()
    seen: set[str] = set()
    for snapshot in snapshots:
        write_source(source, snapshot)
        run(config, platform)
        seen |= expected(snapshot)
        assert platform.removed == []
        assert expected(snapshot) <= platform.members <= seen


@settings(max_examples=40, deadline=None)
@given(first=SNAPSHOT, second=SNAPSHOT, crash_after=st.integers(min_value=0, max_value=6))
def test_a_rerun_after_a_crash_at_any_point_converges(tmp_path_factory, first, second, crash_after) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("crash")
    source, config = setup(tmp, "mirror")
    platform = InMemoryPlatform()
    write_source(source, first)
    run(config, platform)
    write_source(source, second)
    platform.crash_after, platform.calls = crash_after, 0
    with contextlib.suppress(Crash):
        run(config, platform)
    platform.crash_after = None
    run(config, platform)
    assert platform.members == expected(second)


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([f"p{i}" for i in range(6)]), EMAILS), max_size=12))
def test_a_profile_listed_twice_is_synced_once_with_its_last_row(tmp_path_factory, rows) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("dupes")
    source, config = setup(tmp, "mirror")
    platform = InMemoryPlatform()
    source.write_text("".join(json.dumps({"id": k, "email": v, "stage": "vip"}) + "\n" for k, v in rows))
    run(config, platform)
    assert platform.members == expected(dict(rows))


@settings(max_examples=30, deadline=None)
@given(
    snapshots=st.lists(
        st.dictionaries(
            st.sampled_from([f"p{i}" for i in range(6)]),
            st.tuples(EMAILS, st.sampled_from([True, False, None])),
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_profile_that_denies_ads_consent_is_never_on_the_platform(tmp_path_factory, snapshots) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("consent")
    source, config = setup(tmp, "mirror")
    config.write_text(
        config.read_text().replace(
            'stage_column = "stage"', 'stage_column = "stage"\nconsent_column = "consent"'
        )
    )
    platform = InMemoryPlatform()
    for snapshot in snapshots:
        source.write_text(
            "".join(
                json.dumps({"id": k, "email": e, "stage": "vip", "consent": c}) + "\n"
                for k, (e, c) in snapshot.items()
            )
        )
        run(config, platform)
        consenting = {k: e for k, (e, c) in snapshot.items() if c is not False}
        assert platform.members == expected(consenting)


@given(identifiers=st.dictionaries(st.sampled_from(IDENTIFIER_KINDS), st.text(max_size=70), max_size=8))
def test_the_payload_is_exactly_the_json_encoding_state_compares_against(identifiers: dict[str, str]) -> None:
    assert payload_json(identifiers) == json.dumps(identifiers, sort_keys=True, separators=(",", ":"))
