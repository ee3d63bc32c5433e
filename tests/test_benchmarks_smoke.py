"""CI smoke runs of the benchmarks at tiny sizes, as subprocesses (as `make bench` runs them): they
start, print the documented JSON, push with the fewest requests and plan nothing when nothing changed.
No timing is asserted: CI machines are too noisy for that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
MEMBERS = 2_000


def _run(script: str, *args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("platform", ["meta", "tiktok", "google"])
def test_push_benchmark_uses_the_fewest_requests_and_a_noop_run_sends_none(platform: str) -> None:
    results = _run("push.py", "--changes", str(MEMBERS), "--platform", platform)
    assert results, "the push benchmark printed nothing"
    for result in results:
        assert str(result["platform"]).startswith(platform)
        assert result["changes"] == MEMBERS
        assert "skipped" not in result, result
        assert {"requests", "expected_requests", "members_per_s", "push_s"} <= set(result)
        assert result["status"] == "ok", result
        # Google's jobs finish later: its members may still be pending after the push.
        assert result["confirmed"] + result["pending"] == MEMBERS
        assert result["requests"] == result["expected_requests"] >= 1
        assert result["noop_changes"] == 0 and result["noop_requests"] == 0


def test_plan_benchmark_prints_its_keys_and_a_noop_plan_plans_nothing() -> None:
    [result] = _run("plan.py", "--members", str(MEMBERS))
    keys = {"members", "churn", "floor_s", "first_plan_s", "plan_s", "noop_plan_s", "ratio", "peak_rss_mb"}
    assert keys <= set(result)
    assert result["members"] == MEMBERS
    assert result["noop_changes"] == 0
