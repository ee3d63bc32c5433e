"""The status page in a real browser (headless Chromium): at a desktop width (1024 px) and a phone
width (375 px), every target's SLO state is on screen and coloured, and no Python ``None``, ``nan``
or repr leaks into the text. A screenshot of each width is kept with the test's files; set
AUDIENCE_SYNC_UPDATE_SCREENSHOT=1 to refresh docs/status-page.png from the desktop one."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner
from sample_configs import WriteConfig, file_syncs

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "status-page.png"

TWO_SLOS = file_syncs("lapsed", "in_checkout", "vip", max_lag="1h")


def _browser_or_skip() -> Any:
    """Playwright's sync API, driving Debian's Chromium. Under CI a missing browser fails the test."""
    missing = None
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        missing = "Debian's chromium is not installed (.ci/run installs it)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "the playwright package is not installed (pip install -e '.[test]')"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}; the browser test must run under CI")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture
def status_page(write_config: WriteConfig, demo_db: Path, tmp_path: Path) -> Path:
    config = write_config(TWO_SLOS)
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "--config", str(config)]).exit_code == 0
    assert runner.invoke(cli, ["demo", "advance", "--config", str(config), "--seed", "3"]).exit_code == 0
    assert runner.invoke(cli, ["sync", "--config", str(config)]).exit_code == 0
    # As if in_checkout last synced two hours ago (breached) and vip 50 minutes ago (at risk).
    with sqlite3.connect(tmp_path / "state.db") as db:
        for key, age in (("in_checkout@files", 7200), ("vip@files", 3000)):
            db.execute("UPDATE targets SET last_success_at = last_success_at - ? WHERE key = ?", [age, key])
    page = tmp_path / "status.html"
    result = runner.invoke(cli, ["lag", "--config", str(config), "--html", str(page)])
    assert result.exit_code in (0, 4), result.output
    return page


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
        )
        try:
            yield context
        finally:
            context.close()


# Read in the page: each SLO badge's box and colour, the main table's overflow, the visible text.
PROBE = """() => {
  const badges = [...document.querySelectorAll('#lag-table [data-slo]')].map(b => {
    const r = b.getBoundingClientRect();
    return {state: b.dataset.slo, text: b.innerText, left: r.left, right: r.right, top: r.top,
            width: r.width, background: getComputedStyle(b).backgroundColor};
  });
  const wrap = document.querySelector('#lag-table').parentElement;
  return {badges, text: document.body.innerText, width: window.innerWidth,
          overflow: wrap.scrollWidth - wrap.clientWidth,
          pageOverflow: document.documentElement.scrollWidth - window.innerWidth};
}"""

LEAKS = re.compile(r"\bNone\b|\bnan\b|\bNaN\b|\binf\b|<[a-z_.]+ object at|\w+\(\w+=|\{'|\['")


@pytest.mark.parametrize("width", [1024, 375])
def test_the_status_page_shows_every_slo_state_on_screen_and_coloured(
    browser: Any, status_page: Path, tmp_path: Path, width: int
) -> None:
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(status_page.as_uri())
    seen = page.evaluate(PROBE)
    page.screenshot(path=str(tmp_path / f"status-{width}.png"), full_page=True)
    if width == 1024 and os.environ.get("AUDIENCE_SYNC_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(DOCS_SHOT), full_page=False)

    assert seen["width"] == width
    states = {b["state"]: b for b in seen["badges"]}
    assert set(states) == {"ok", "at_risk", "breach"}, states
    for badge in seen["badges"]:
        assert badge["width"] > 0 and badge["left"] >= 0 and badge["right"] <= width, badge
        assert badge["background"] not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), badge
    assert states["ok"]["text"] == "ok" and states["breach"]["text"] == "breached"
    assert states["at_risk"]["text"] == "at risk"
    assert len({b["background"] for b in states.values()}) == 3
    # The whole table fits: nothing to scroll sideways at either width.
    assert seen["overflow"] <= 0 and seen["pageOverflow"] <= 0, seen
    for name in ("lapsed → files (file)", "in_checkout → files (file)", "vip → files (file)"):
        assert name in seen["text"]
    assert not LEAKS.search(seen["text"]), LEAKS.search(seen["text"])
    assert (tmp_path / f"status-{width}.png").stat().st_size > 10_000
