"""The reliability suite's switch: a small seeded sample by default (CI), everything with
``pytest tests/reliability --reliability-full`` or ``AUDIENCE_SYNC_RELIABILITY=full``."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.demo.profiles import build_profiles
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from bad_input_case import Case
from sample_configs import FILE_DESTINATION, SOURCE
from scenarios import Emulators, Figures


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-full",
        action="store_true",
        default=False,
        help="run the full reliability suite (>= 50 crash points, every fault mix); minutes, not seconds",
    )


@pytest.fixture(scope="session")
def full(request: pytest.FixtureRequest) -> bool:
    try:
        flag = bool(request.config.getoption("--reliability-full"))
    except ValueError:
        flag = False
    return flag or os.environ.get("AUDIENCE_SYNC_RELIABILITY") == "full"


@pytest.fixture(scope="session")
def emulators() -> Iterator[Emulators]:
    running = Emulators()
    yield running
    running.close()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    totals = Figures()
    yield totals
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(totals.line())
    else:
        print(totals.line())


@pytest.fixture(scope="session")
def synced_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad-input corpus's start: a folder with a 400-profile source synced once to a file
    destination."""
    root = tmp_path_factory.mktemp("synced")
    build_profiles(root / "profiles.db", 400, seed=5)
    (root / "audience-sync.toml").write_text(
        textwrap.dedent(SOURCE) + textwrap.dedent(FILE_DESTINATION), encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["sync", "--config", str(root / "audience-sync.toml")])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def case(synced_template: Path, tmp_path: Path) -> Case:
    """A private copy of the synced folder, for one bad-input case to damage."""
    root = tmp_path / "case"
    shutil.copytree(synced_template, root)
    return Case(root)
