"""Meta's API version: the default follows the pinned SDK, ``validate`` warns in a version's last 90
days and refuses it once Meta's end date has passed (the table itself: ``test_versions.py``)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from audiencesync.connectors.versions import DEFAULT_VERSIONS, VERSIONS, VersionStatus, check_version
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.errors import ConfigError
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sample_configs import WriteConfig

V25_END = date(2027, 2, 23)  # Meta's Marketing API changelog


def test_metas_default_is_the_version_the_installed_sdk_is_built_for() -> None:
    from facebook_business.apiconfig import ads_api_config

    assert DEFAULT_VERSIONS["meta"] == ads_api_config["API_VERSION"]
    assert check_version("meta", DEFAULT_VERSIONS["meta"], date(2026, 12, 2)).status is VersionStatus.OK


@pytest.mark.parametrize(
    ("today", "state"),
    [
        (V25_END - timedelta(days=91), VersionStatus.OK),
        (V25_END - timedelta(days=90), VersionStatus.WARN),
        (V25_END - timedelta(days=1), VersionStatus.WARN),
        (V25_END, VersionStatus.REFUSED),
        (V25_END + timedelta(days=400), VersionStatus.REFUSED),
    ],
)
def test_v25_warns_in_its_last_90_days_and_is_refused_from_its_end_date(
    today: date, state: VersionStatus
) -> None:
    check = check_version("meta", "v25.0", today)
    assert check.status is state and check.end == V25_END
    if state is not VersionStatus.OK:
        assert "2027-02-23" in check.message and "v26.0" in check.message


def test_an_old_unlisted_version_is_refused_and_v27_passes() -> None:
    assert check_version("meta", "v19.0", date(2026, 12, 2)).refused
    assert check_version("meta", "v27.0", date(2030, 1, 1)).status is VersionStatus.OK


@given(
    version=st.sampled_from(sorted(v for v, info in VERSIONS["meta"].items() if info.end)),
    offset=st.integers(-2_000, 2_000),
)
def test_the_state_follows_the_distance_to_the_end_date(version: str, offset: int) -> None:
    end = VERSIONS["meta"][version].end
    assert end is not None
    check = check_version("meta", version, end + timedelta(days=offset))
    assert check.refused == (offset >= 0)
    assert (check.status is VersionStatus.WARN) == (-90 <= offset < 0)


META = """
[destinations.meta_main]
platform = "meta"
ad_account_id = "act_1"
access_token_env = "META_TOKEN"
endpoint = "http://127.0.0.1:9"
{version}

[[syncs]]
audience = "vip"
destinations = ["meta_main"]
"""


def config_with(write_config: WriteConfig, version: str | None) -> Path:
    return write_config(META.format(version=f'api_version = "{version}"' if version else ""))


def test_check_versions_warns_then_refuses_naming_the_key(write_config: WriteConfig) -> None:
    path = config_with(write_config, "v25.0")
    (warning,) = load_config(path, {}, today=date(2027, 1, 1)).warnings
    assert warning.startswith("destinations.meta_main.api_version: v25.0 stops working on 2027-02-23")
    assert warning.endswith("move to v26.0")
    assert load_config(path, {}, today=date(2026, 10, 1)).warnings == ()
    with pytest.raises(ConfigError) as refused:
        load_config(path, {}, today=V25_END)
    (problem,) = refused.value.problems
    assert problem.startswith("destinations.meta_main.api_version: v25.0 stopped working on 2027-02-23")
    assert problem.endswith("use v26.0")


def test_an_unset_api_version_is_the_default_and_passes(write_config: WriteConfig) -> None:
    config = load_config(config_with(write_config, None), {}, today=date(2026, 12, 2))
    assert config.destinations["meta_main"].settings["api_version"] == DEFAULT_VERSIONS["meta"]
    assert config.warnings == ()


def test_validate_refuses_an_ended_version_with_exit_2(write_config: WriteConfig, demo_db: Path) -> None:
    # v24.0's Marketing API end date (2026-11-10) has passed for good.
    result = CliRunner().invoke(cli, ["validate", "--config", str(config_with(write_config, "v24.0"))])
    assert result.exit_code == 2
    assert "destinations.meta_main.api_version: v24.0 stopped working on 2026-11-10" in result.output
    ok = CliRunner().invoke(cli, ["validate", "--config", str(config_with(write_config, None))])
    assert ok.exit_code == 0, ok.output
