"""Shared fixtures: small configs written to temporary folders, and the synthetic demo database."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from audiencesync.sync.demo import build_profiles
from sample_configs import FILE_DESTINATION, SOURCE, WriteConfig


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
