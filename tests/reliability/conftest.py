"""The reliability suite's switch: a small seeded sample by default (CI), everything with
``pytest tests/reliability --reliability-full`` or ``AUDIENCE_SYNC_RELIABILITY=full``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
