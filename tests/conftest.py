"""Shared fixtures: small configs written to temporary folders, and the synthetic demo database."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from alert_hook import Hook
from audiencesync.sync.demo.profiles import build_profiles
from hypothesis import settings
from sample_configs import FILE_DESTINATION, SOURCE, WriteConfig

# Hypothesis's per-example deadline is a timing check, and on a loaded 2-core CI machine it fails
# properties that hold: speed is measured by benchmarks/, never by tests.
settings.register_profile("audience-sync", deadline=None)
settings.load_profile("audience-sync")

if TYPE_CHECKING:
    from audiencesync.connectors.google.emulator import GoogleEmulator


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a config file into tmp_path: the standard source and audiences plus ``extra`` TOML."""

    def write(
        extra: str = FILE_DESTINATION, *, source: str = SOURCE, name: str = "audience-sync.toml"
    ) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source) + textwrap.dedent(extra), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def demo_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-profile demo database, built once per test session."""
    path = tmp_path_factory.mktemp("demo") / "profiles.db"
    build_profiles(path, 3_000, seed=11)
    return path


@pytest.fixture
def demo_db(tmp_path: Path, demo_db_template: Path) -> Path:
    """A private copy of the demo database at tmp_path/profiles.db (tests may advance it)."""
    target = tmp_path / "profiles.db"
    target.write_bytes(demo_db_template.read_bytes())
    return target


@pytest.fixture(scope="module")
def google_emulator_server() -> Iterator[GoogleEmulator]:
    """One Google emulator per test module, on free ports; stopped when the module is done. Tests
    take ``google_emulator``, which empties it first."""
    # Imported here: the Google clients take about 2 s to import, which sessions without a Google
    # test should not pay.
    from audiencesync.connectors.google.emulator import start_emulator

    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
def google_emulator(google_emulator_server: GoogleEmulator) -> GoogleEmulator:
    """The module's running Google emulator, reset for this test: no lists, jobs, requests or call
    counts, every fault switch at its default (and RPCs still sleeping on ``slow_seconds`` for an
    earlier test cancelled, so they cannot touch this one)."""
    google_emulator_server.reset()
    return google_emulator_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (tests/postgres_server.py): its SQLAlchemy URL.
    Skipped when PostgreSQL is not installed, except under CI, where that is a failure (.ci/run
    installs it)."""
    from postgres_server import find_bindir, postgres_server

    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (apt-get install -y postgresql); CI runs these tests")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    with postgres_server(bindir) as url:
        yield url


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    """A webhook receiver on loopback, its URL in $TEST_ALERT_HOOK (the alert tests' ``webhook_url_env``)."""
    server = Hook()
    monkeypatch.setenv("TEST_ALERT_HOOK", server.url)
    yield server
    server.close()
