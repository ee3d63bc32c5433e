"""GoogleConnector end to end, for each backend: the real google-ads and google-ads-datamanager
clients against the Google emulator on a real socket, driven by the real runner over a config and a
sqlite source. After every run the emulator's list must equal the source's audience, compared as
the persons (sets of ``kind:value``) that ``ProfileHasher("google", ...)`` makes of the source rows.
The last tests drive the connector alone, for what its ``follow`` and ``read_back`` say."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from audiencesync.connectors.contract import AudienceSpec, Change, DestinationConfig
from audiencesync.connectors.errors import AudienceGone, ConfigurationRejected
from audiencesync.connectors.google import payload as gp
from audiencesync.connectors.google.connector import GoogleConnector
from audiencesync.connectors.google.emulator import GoogleEmulator
from audiencesync.state.store import StateStore
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import Target, load_config
from audiencesync.sync.demo.profiles import SCHEMA
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.runner import RunOptions, SyncRunner, TargetResult
from click.testing import CliRunner
from google.ads import datamanager_v1 as dm
from google.api_core import exceptions as core
from sample_configs import WriteConfig

BACKENDS = ("data_manager", "google_ads")
KINDS = ("email", "phone", "first_name", "last_name", "zip", "country")
ADDRESS = ("first_name", "last_name", "country", "zip")
FAST = {"backoff_initial": 0.005, "backoff_max": 0.05, "timeout_seconds": 10.0, "poll_interval": 0.05}


def destination_toml(endpoint: str, backend: str, max_wait: int = 5) -> str:
    return f"""
[destinations.google_main]
platform = "google"
backend = "{backend}"
customer_id = "1234567890"
login_customer_id = "9876543210"
endpoint = "{endpoint}"
max_wait_seconds = {max_wait}
accept_customer_match_terms = true  # the emulated advertiser accepts Google's Customer Match terms

[[syncs]]
audience = "vip"
destinations = ["google_main"]
"""


# --- the source --------------------------------------------------------------------------------------


def profile(i: int, *, stage: str = "vip", email_tag: str = "") -> tuple[object, ...]:
    """A deterministic profile: every 20th denies ads consent, every 20th (+1) leaves it unknown,
    every 7th has no country (so no address), every 5th no phone."""
    consent = 0 if i % 20 == 0 else (None if i % 20 == 1 else 1)
    phone = None if i % 5 == 0 else f"+1 212 {200 + i % 700:03d} {i % 10_000:04d}"
    return (
        f"p{i:08d}",
        f"user{i}{email_tag}@example.com",
        phone,
        f"First{i % 501}",
        f"Last{i % 307}",
        "",
        "",
        f"{10_000 + i % 80_000:05d}",
        None if i % 7 == 0 else "US",
        None,
        None,
        None,
        None,
        stage,
        "[]",
        consent,
        "2026-01-01T00:00:00Z",
    )


def write_profiles(path: Path, rows: list[tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE IF EXISTS profiles")
        conn.execute(SCHEMA)
        conn.executemany(f"INSERT INTO profiles VALUES ({', '.join('?' * 17)})", rows)
        conn.commit()
    finally:
        conn.close()


def update_profiles(path: Path, sql: str, params: list[Any] | None = None) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params or [])
        conn.commit()
    finally:
        conn.close()


def person(identifiers: dict[str, str]) -> frozenset[str]:
    """What the connector sends of one member: email, phone, and the address only when complete."""
    keys = [k for k in ("email", "phone") if identifiers.get(k)]
    if all(identifiers.get(k) for k in ADDRESS):
        keys.extend(ADDRESS)
    return frozenset(f"{k}:{identifiers[k]}" for k in keys)


def expected(path: Path) -> set[frozenset[str]]:
    """The vip audience as Google should hold it: members who denied ads consent are left out of the
    plan, so they are never uploaded on either backend."""
    hasher = ProfileHasher("google", KINDS, "US")
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT email, phone, first_name, last_name, postcode, country FROM profiles "
            "WHERE stage = 'vip' AND (ads_consent IS NULL OR ads_consent != 0)"
        ).fetchall()
    finally:
        conn.close()
    out: set[frozenset[str]] = set()
    for row in rows:
        raw = dict(zip(KINDS, row, strict=True))
        ids = hasher(raw).identifiers
        found = person(ids)
        if found:
            out.add(found)
    return out


def email_hash(i: int, tag: str = "") -> str:
    return ProfileHasher("google", KINDS, "US")({"email": f"user{i}{tag}@example.com"}).identifiers["email"]


# --- harness -----------------------------------------------------------------------------------------


class Harness:
    """A config over a private source, and runs of the real runner with fresh connectors."""

    def __init__(self, tmp_path: Path, write_config: WriteConfig, emulator: GoogleEmulator, backend: str):
        self.db = tmp_path / "profiles.db"
        self.emulator = emulator
        self.backend = backend
        self.config_path = write_config(destination_toml(emulator.endpoint, backend))

    def run(self, *, allow_mass_remove: bool = False, **knobs: Any) -> TargetResult:
        """One ``sync`` of the vip target; each call is a fresh process as far as the connector and
        state are concerned (new connector, state file reopened)."""
        config = load_config(self.config_path, {})
        store = StateStore.open(config.state_path)
        made: list[GoogleConnector] = []

        def factory(target: Target) -> GoogleConnector:
            connector = GoogleConnector(target.destination, **{**FAST, **knobs})
            made.append(connector)
            return connector

        try:
            runner = SyncRunner(
                config,
                store,
                RunOptions(connector_factory=factory, lease_wait=0, allow_mass_remove=allow_mass_remove),
            )
            (result,) = runner.run()
        finally:
            store.close()
            for connector in made:
                connector.close()
        return result

    def list_id(self) -> str:
        config = load_config(self.config_path, {})
        store = StateStore.open(config.state_path)
        try:
            row = store.find_target("vip@google_main")
            assert row is not None and row.platform_audience_id
            return str(row.platform_audience_id)
        finally:
            store.close()

    def in_flight(self) -> int:
        conn = sqlite3.connect(self.db.parent / "state.db")
        try:
            return int(conn.execute("SELECT count(*) FROM outbox WHERE status = 'in_flight'").fetchone()[0])
        finally:
            conn.close()

    def assert_in_step(self) -> None:
        members = self.emulator.members(self.list_id())
        want = expected(self.db)
        assert len(members) == len(want)
        assert members == want


@pytest.fixture(params=BACKENDS)
def harness(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    write_config: WriteConfig,
    google_emulator: GoogleEmulator,
) -> Harness:
    return Harness(tmp_path, write_config, google_emulator, request.param)


# --- scenarios ---------------------------------------------------------------------------------------


def test_initial_sync_of_25000_members(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(25_000)])
    result = harness.run()
    assert result.status == "ok", result.error
    denied = sum(1 for i in range(25_000) if i % 20 == 0)
    assert result.plan.consent_denied == denied
    assert result.push.rejected == 0
    if harness.backend == "google_ads":
        # 3 batches of at most 10,000, each split into a granted and an unknown-consent job.
        assert harness.emulator.calls["CreateOfflineUserDataJob"] == 6
        assert result.push.requests == 6
    else:
        assert result.push.requests == 3
    # Every job settled within the run: confirmed, none left pending (counts add up).
    assert result.push.confirmed == 25_000 - denied and result.push.pending == 0
    assert result.push.settled == 25_000 - denied
    assert harness.in_flight() == 0
    harness.assert_in_step()
    assert result.platform_size == (len(expected(harness.db)),) * 2


def test_changes_then_removes(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(3_000)])
    assert harness.run().status == "ok"
    harness.assert_in_step()
    # Changes: 200 new emails, 300 leave the audience, 100 join.
    update_profiles(harness.db, "UPDATE profiles SET email = 'changed.' || email WHERE rowid % 15 = 2")
    update_profiles(harness.db, "UPDATE profiles SET stage = 'lapsed_customer' WHERE rowid % 10 = 3")
    conn = sqlite3.connect(harness.db)
    conn.executemany(
        f"INSERT INTO profiles VALUES ({', '.join('?' * 17)})", [profile(i) for i in range(3_000, 3_100)]
    )
    conn.commit()
    conn.close()
    result = harness.run()
    assert result.status == "ok", result.error
    assert result.plan.removes > 0 and result.plan.adds > 0
    harness.assert_in_step()
    # Removes: most of the audience leaves.
    update_profiles(harness.db, "UPDATE profiles SET stage = 'lapsed_customer' WHERE rowid % 4 != 0")
    result = harness.run(allow_mass_remove=True)
    assert result.status == "ok", result.error
    assert result.plan.removes > 1_000
    harness.assert_in_step()


def test_job_lifecycle_under_processing_delay_with_a_restart_mid_polling(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(2_000)])
    harness.emulator.faults.set({"processing_seconds": 1.0})
    first = harness.run(follow_wait_seconds=0.2)  # polls a few times, then "the process dies"
    assert first.status == "ok", first.error
    assert first.push.pending > 0 and first.push.settled == 0
    assert harness.in_flight() == first.push.pending
    assert harness.emulator.members(harness.list_id()) == set()
    # A new process, same state file: it resumes following the same request ids or jobs.
    calls_before = harness.emulator.calls.copy()
    second = harness.run(follow_wait_seconds=3.0)
    assert second.status == "ok", second.error
    assert second.push.settled == first.push.pending
    assert second.push.pending == 0 and harness.in_flight() == 0
    sent = "IngestAudienceMembers" if harness.backend == "data_manager" else "AddOfflineUserDataJobOperations"
    assert harness.emulator.calls[sent] == calls_before[sent]  # nothing was sent twice
    harness.assert_in_step()


def test_partial_failures_are_mapped_to_the_right_members(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(1_000)])
    bad = [3, 404, 777]  # all with consent granted
    harness.emulator.faults.set({"reject_identifiers": [email_hash(i) for i in bad]})
    result = harness.run()
    assert result.status == "ok", result.error
    reasons = dict(result.push.rejection_reasons)
    assert sum(reasons.values()) == len(bad)
    for reason in reasons:
        assert "@" not in reason and email_hash(3) not in reason
    conn = sqlite3.connect(harness.db.parent / "state.db")
    rejected_reasons = [r[0] for r in conn.execute("SELECT reason FROM rejections")]
    conn.close()
    assert len(rejected_reasons) == len(bad)
    members = harness.emulator.members(harness.list_id())
    bad_emails = {f"email:{email_hash(i)}" for i in bad}
    assert not any(p & bad_emails for p in members)
    assert members == {p for p in expected(harness.db) if not p & bad_emails}


def test_converges_under_30_percent_transient_errors(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(4_000)])
    if harness.backend == "google_ads":
        faults = {
            "concurrent_modification_rate": 0.1,
            "resource_temporarily_exhausted_rate": 0.1,
            "unavailable_rate": 0.1,
        }
    else:
        faults = {"resource_exhausted_rate": 0.1, "internal_rate": 0.1, "unavailable_rate": 0.1}
    harness.emulator.faults.set({**faults, "seed": 5})
    statuses = []
    for _ in range(12):
        result = harness.run(follow_wait_seconds=0)
        statuses.append(result.status)
        if result.status == "ok" and harness.in_flight() == 0 and result.plan.adds == 0:
            break
    harness.emulator.faults.set({k: 0.0 for k in faults})
    assert statuses[-1] == "ok", statuses
    harness.assert_in_step()
    # The faults did bite: more member-carrying RPCs reached the emulator than a clean run needs
    # (one ingest, or two jobs' AddOperations: granted and unknown consent).
    if harness.backend == "google_ads":
        assert (
            harness.emulator.calls["AddOfflineUserDataJobOperations"]
            + harness.emulator.calls["CreateOfflineUserDataJob"]
            > 4
        )
    else:
        assert harness.emulator.calls["IngestAudienceMembers"] > 1


def test_members_near_the_end_of_their_lifespan_are_uploaded_again(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(600)])
    first = harness.run()
    assert first.status == "ok" and first.plan.refreshes == 0
    # Age about half the confirmed uploads past lifespan (540 days) minus margin (30 days).
    conn = sqlite3.connect(harness.db.parent / "state.db")
    aged = conn.execute(
        "UPDATE members SET uploaded_at = uploaded_at - 520 * 86400 WHERE substr(hex(member_key), 1, 1) < '8'"
    ).rowcount
    conn.commit()
    conn.close()
    sent = "IngestAudienceMembers" if harness.backend == "data_manager" else "AddOfflineUserDataJobOperations"
    before = harness.emulator.calls[sent]
    second = harness.run()
    assert second.status == "ok", second.error
    assert second.plan.refreshes == aged > 0
    assert harness.emulator.calls[sent] > before
    assert second.push.settled == aged
    third = harness.run()
    assert third.plan.refreshes == 0  # the refreshed uploads are fresh again
    harness.assert_in_step()


def test_not_allowlisted_gives_its_own_message_and_a_nonzero_exit(
    tmp_path: Path, write_config: WriteConfig, google_emulator: GoogleEmulator
) -> None:
    write_profiles(tmp_path / "profiles.db", [profile(i) for i in range(50)])
    config = write_config(destination_toml(google_emulator.endpoint, "google_ads"))
    google_emulator.faults.set({"not_allowlisted": True})
    outcome = CliRunner().invoke(cli, ["sync", "--config", str(config), "--json"], catch_exceptions=False)
    assert outcome.exit_code != 0
    assert 'backend = \\"data_manager\\"' in outcome.output or 'backend = "data_manager"' in outcome.output
    assert "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in outcome.output


def test_the_same_config_on_data_manager_then_syncs(
    tmp_path: Path, write_config: WriteConfig, google_emulator: GoogleEmulator
) -> None:
    """Switching the backend is the fix the not-allowlisted message asks for: the state keeps the list
    id, which both APIs share."""
    db = tmp_path / "profiles.db"
    write_profiles(db, [profile(i) for i in range(500)])
    ads = Harness(tmp_path, write_config, google_emulator, "google_ads")
    assert ads.run().status == "ok"
    first_list = ads.list_id()
    update_profiles(db, "UPDATE profiles SET stage = 'lapsed_customer' WHERE rowid % 3 = 0")
    dm_side = Harness(tmp_path, write_config, google_emulator, "data_manager")
    result = dm_side.run(allow_mass_remove=True)
    assert result.status == "ok", result.error
    assert dm_side.list_id() == first_list
    dm_side.assert_in_step()


# --- what follow and read_back say, connector alone ----------------------------------------------------


def direct_connector(emulator: GoogleEmulator, backend: str) -> GoogleConnector:
    settings = {
        "platform": "google",
        "backend": backend,
        "customer_id": "1234567890",
        "endpoint": emulator.endpoint,
        "max_wait_seconds": 5,
        "accept_customer_match_terms": True,
    }
    dest = DestinationConfig("google_main", "google", settings, {}, "audience-sync: ", Path("."))
    return GoogleConnector(dest, **FAST)


def email_changes(*indexes: int) -> list[Change]:
    return [Change(f"m{i}".encode(), {"email": email_hash(i)}, consent=True) for i in indexes]


VIP = AudienceSpec("vip@google_main", "audience-sync: vip", "", ("email",))


def test_ads_a_low_match_rate_shows_in_follow_and_read_back(google_emulator: GoogleEmulator) -> None:
    google_emulator.faults.set({"match_rate_percentage": 5})
    with closing(direct_connector(google_emulator, "google_ads")) as google:
        list_id = google.ensure_audience(VIP)
        (job,) = google.add(list_id, email_changes(1, 2, 3), None).pending
        status = google.follow(list_id, [job])[job]
        assert status.state == "confirmed"
        assert (
            status.detail
            == "SUCCESS match rate MATCH_RANGE_LESS_THAN_20 (few or none of the uploaded people matched)"
        )
        back = google.read_back(list_id)
    assert back.state == f"OPEN; last job {status.detail}"
    assert back.detail["last_job"] == {
        "job": job,
        "state": "confirmed",
        "detail": status.detail,
        "rejected": 0,
    }
    assert back.detail["match_rate_percentage"] == 5


def test_ads_refusals_at_upload_show_in_follow_and_an_unrun_job_in_read_back(
    google_emulator: GoogleEmulator,
) -> None:
    with closing(direct_connector(google_emulator, "google_ads")) as google:
        list_id = google.ensure_audience(VIP)
        google_emulator.faults.set({"reject_identifiers": [email_hash(2)]})
        (partly,) = google.add(list_id, email_changes(1, 2, 3), None).pending
        # A newer job whose every operation is refused: never run, so no handle reports it.
        google_emulator.faults.set({"reject_identifiers": [email_hash(4), email_hash(5)]})
        refused = google.add(list_id, email_changes(4, 5), None)
        assert refused.pending == {} and set(refused.rejected) == {b"m4", b"m5"}
        unrun = google_emulator.snapshot()["jobs"][-1]
        assert unrun["status"] == "PENDING" and google_emulator.calls["RunOfflineUserDataJob"] == 1
        status = google.follow(list_id, [partly])[partly]
        back = google.read_back(list_id)
    assert status.state == "confirmed" and status.rejected_count == 1
    assert status.detail == "SUCCESS match rate MATCH_RANGE_61_TO_70; 1 of 3 operations refused at upload"
    # The older job's answer does not hide the newer job that uploaded nothing.
    assert back.state == "OPEN; last job not run: all 2 operations refused at upload"
    assert back.detail["last_job"] == {
        "job": unrun["resource_name"],
        "state": "failed",
        "detail": "not run: all 2 operations refused at upload",
        "rejected": 2,
    }
    assert back.size_lower == back.size_upper == 2


def test_data_manager_a_low_match_rate_shows_in_follow_and_read_back(google_emulator: GoogleEmulator) -> None:
    google_emulator.faults.set({"match_rate_percentage": 5})
    with closing(direct_connector(google_emulator, "data_manager")) as google:
        list_id = google.ensure_audience(VIP)
        (request_id,) = google.add(list_id, email_changes(1, 2, 3), None).pending
        status = google.follow(list_id, [request_id])[request_id]
        back = google.read_back(list_id)
    assert status.state == "confirmed"
    assert status.detail == (
        "SUCCESS match rate MATCH_RATE_RANGE_LESS_THAN_20 (few or none of the uploaded people matched)"
    )
    assert back.state == f"OPEN; last request {status.detail}"
    assert back.detail["last_request"] == {"state": "confirmed", "detail": status.detail, "rejected": 0}


def test_data_manager_a_1000_member_add_to_a_missing_list_takes_one_request_and_rejects_no_one(
    google_emulator: GoogleEmulator,
) -> None:
    """Data Manager fails fast on a request-level error (INVALID_USER_LIST_ID, understand-errors page):
    the connector stops with Google's reason and request id instead of bisecting 1,000 members."""
    with (
        closing(direct_connector(google_emulator, "data_manager")) as google,
        pytest.raises(AudienceGone) as caught,
    ):
        google.add("4242", email_changes(*range(1_000)), None)
    assert caught.value.code == "INVALID_USER_LIST_ID"
    assert caught.value.request_id
    assert google_emulator.calls["IngestAudienceMembers"] == 1
    assert google_emulator.snapshot()["requests"] == []


def test_data_manager_an_ingest_without_accepted_terms_is_refused_by_the_emulator(
    google_emulator: GoogleEmulator,
) -> None:
    with closing(direct_connector(google_emulator, "data_manager")) as google:
        list_id = google.ensure_audience(VIP)
        backend: Any = google._backend
        request = gp.dm_ingest_request(gp.dm_destination("1234567890", None, list_id), email_changes(1))
        for status in (
            dm.TermsOfServiceStatus.TERMS_OF_SERVICE_STATUS_UNSPECIFIED,
            dm.TermsOfServiceStatus.REJECTED,
        ):
            request.terms_of_service.customer_match_terms_of_service_status = status
            with pytest.raises(core.InvalidArgument) as caught:
                backend._ingest.ingest_audience_members(request=request)
            error = gp.dm_error(caught.value)
            assert error.reason == "TERMS_AND_CONDITIONS_NOT_SIGNED"
            assert error.members == {}  # request-level: no member is at fault
    assert google_emulator.members(list_id) == set()


@pytest.mark.parametrize("version", ["v26", "v24"])
def test_ads_backend_speaks_the_configured_api_version(google_emulator: GoogleEmulator, version: str) -> None:
    """The Ads client, its types and its failure decoding follow api_version; the emulator serves each."""
    settings = {
        "platform": "google",
        "backend": "google_ads",
        "customer_id": "1234567890",
        "endpoint": google_emulator.endpoint,
        "max_wait_seconds": 5,
        "api_version": version,
    }
    dest = DestinationConfig("google_main", "google", settings, {}, "audience-sync: ", Path("."))
    with closing(GoogleConnector(dest, **FAST)) as google:
        list_id = google.ensure_audience(VIP)
        (job,) = google.add(list_id, email_changes(1, 2), None).pending
        assert google.follow(list_id, [job])[job].state == "confirmed"
        assert google_emulator.members(list_id) == {frozenset({f"email:{email_hash(i)}"}) for i in (1, 2)}
        # A GoogleAdsFailure is read from the configured version's trailing metadata key.
        google_emulator.faults.set({"not_allowlisted": True})
        with pytest.raises(ConfigurationRejected, match="data_manager"):
            google.add(list_id, email_changes(3), None)
    backend: Any = google._backend
    assert type(backend._jobs).__module__.startswith(f"google.ads.googleads.{version}.")
