"""Config errors: every problem reported at once, each naming its key; exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config, parse_duration
from audiencesync.sync.errors import ConfigError
from audiencesync.sync.identity import ProfileHasher
from click.testing import CliRunner
from sample_configs import FILE_DESTINATION, SOURCE, WriteConfig

META = """
[destinations.meta_main]
platform = "meta"
ad_account_id = "act_123"
access_token_env = "AS_TEST_META_TOKEN"

[[syncs]]
audience = "lapsed"
destinations = ["meta_main"]
"""


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {})
    return caught.value.problems


def test_the_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parent.parent / "config.example.toml", {})
    assert {t.key for t in config.targets()} >= {
        "lapsed@meta_main",
        "vip@meta_main",
        "lapsed@tiktok_main",
        "in_checkout@meta_main",
    }


def test_malformed_toml_names_the_file_and_the_line(write_config: WriteConfig) -> None:
    path = write_config("[destinations.files\nplatform = 'file'")
    [problem] = problems(path)
    assert "not valid TOML" in problem and "line" in problem


def test_unknown_keys_are_errors_with_their_path(write_config: WriteConfig) -> None:
    path = write_config(FILE_DESTINATION.replace('format = "meta"', 'format = "meta"\nformt = "google"'))
    assert problems(path) == ["destinations.files.formt: unknown key for platform file"]


def test_a_typo_in_a_sync_key_is_reported(write_config: WriteConfig) -> None:
    path = write_config(
        FILE_DESTINATION.replace('audience = "vip"', 'audience = "vip"\nschedul = "* * * * *"')
    )
    assert any(p.startswith("syncs[2].schedul: unknown key") for p in problems(path))


def test_every_problem_is_reported_at_once(write_config: WriteConfig) -> None:
    # Stage names are the source's own (validate checks them against the data), so the bad stage
    # here is an empty one.
    bad = SOURCE.replace('stage = "vip"', 'stage = ""').replace('kind = "sqlite"', 'kind = "xls"')
    path = write_config(
        FILE_DESTINATION.replace('mode = "mirror"', "").replace(
            '[[syncs]]\naudience = "vip"', '[[syncs]]\naudience = "vip"\nmode = "sometimes"'
        ),
        source=bad,
    )
    found = problems(path)
    assert any(p.startswith("source.kind:") for p in found)
    assert any(p.startswith("audiences.vip.stage: must be a non-empty string") for p in found)
    assert any(p.startswith("syncs[2].mode:") for p in found)


def test_a_missing_secret_environment_variable_names_the_key_and_variable(write_config: WriteConfig) -> None:
    path = write_config(META)
    [problem] = problems(path, {})
    assert (
        problem
        == "destinations.meta_main.access_token_env: environment variable AS_TEST_META_TOKEN is not set"
    )


def test_the_secret_is_read_from_the_environment(write_config: WriteConfig) -> None:
    config = load_config(write_config(META), {"AS_TEST_META_TOKEN": "tok"})
    assert config.destinations["meta_main"].secrets == {"access_token": "tok"}


def test_a_loopback_endpoint_needs_no_secret(write_config: WriteConfig) -> None:
    config = load_config(
        write_config(META.replace('platform = "meta"', 'platform = "meta"\nendpoint = "http://127.0.0.1:9"')),
        {},
    )
    assert config.destinations["meta_main"].is_emulated


def test_a_literal_secret_in_the_file_is_refused(write_config: WriteConfig) -> None:
    path = write_config(
        META.replace('access_token_env = "AS_TEST_META_TOKEN"', 'access_token = "EAAB-secret"')
    )
    found = problems(path, {})
    assert any(
        p.startswith("destinations.meta_main.access_token: secrets are never read from the config file")
        for p in found
    )
    assert all("EAAB-secret" not in p for p in found)


def test_an_env_key_holding_a_secret_instead_of_a_name_is_refused(write_config: WriteConfig) -> None:
    path = write_config(META.replace('"AS_TEST_META_TOKEN"', '"EAAB secret value!"'))
    assert any(
        p.startswith("destinations.meta_main.access_token_env: must name an environment variable")
        for p in problems(path)
    )


def test_sync_references_are_checked(write_config: WriteConfig) -> None:
    path = write_config(
        '[destinations.files]\nplatform = "file"\ndirectory = "x"\n[[syncs]]\naudience = "winback"\n'
        'destinations = ["filez"]\nmax_lag = "soon"\n'
    )
    found = problems(path)
    assert "syncs[0].audience: names no [audiences.winback]" in found
    assert "syncs[0].destinations: names no [destinations.filez]" in found
    assert any(p.startswith("syncs[0].max_lag: not a duration") for p in found)


def test_bad_cron_and_google_customer_id_are_reported(write_config: WriteConfig) -> None:
    path = write_config(
        '[destinations.g]\nplatform = "google"\ncustomer_id = "123-456-7890"\nendpoint = "127.0.0.1:1"\n'
        '[[syncs]]\naudience = "vip"\ndestinations = ["g"]\nschedule = "every hour"\n'
    )
    found = problems(path)
    assert "destinations.g.customer_id: must be 10 digits without dashes" in found
    assert any(p.startswith("syncs[0].schedule: must be a 5-field cron expression") for p in found)


def test_an_audience_needs_a_definition(write_config: WriteConfig) -> None:
    path = write_config(FILE_DESTINATION + '\n[audiences.empty]\ndescription = "nothing"\n')
    assert (
        "audiences.empty: needs stage, in_flow, flag or where (any together), a dbt model, or query"
        in problems(path)
    )


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(ValueError):
        parse_duration("2 hours")


def test_validate_exits_2_and_lists_the_problems(write_config: WriteConfig) -> None:
    path = write_config(FILE_DESTINATION.replace('format = "meta"', 'format = "myspace"'))
    result = CliRunner().invoke(cli, ["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert "destinations.files.format: must be one of meta, google, tiktok" in result.output


def test_validate_says_ok_for_a_good_config(write_config: WriteConfig, demo_db: Path) -> None:
    # validate opens the source, so the good config has its profile database beside it.
    result = CliRunner().invoke(cli, ["validate", "--config", str(write_config())])
    assert result.exit_code == 0, result.output
    assert "ok (3 audiences, 1 destinations, 3 sync targets)" in result.output
    assert "source " in result.output and "3000 rows" in result.output


def test_validate_offline_says_ok_without_the_source(write_config: WriteConfig) -> None:
    result = CliRunner().invoke(cli, ["validate", "--offline", "--config", str(write_config())])
    assert result.exit_code == 0, result.output
    assert "ok (3 audiences, 1 destinations, 3 sync targets)" in result.output


def test_a_missing_config_file_says_where_it_looked(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml" in result.output and "file not found" in result.output


@pytest.mark.parametrize("code", ["XX", "ZZ", "USA", "1A"])
def test_a_default_country_the_identity_rules_do_not_know_is_a_config_error(
    write_config: WriteConfig, code: str
) -> None:
    path = write_config(source=SOURCE.replace('default_country = "US"', f'default_country = "{code}"'))
    assert problems(path) == [
        f"source.default_country: '{code}' is not an ISO 3166-1 alpha-2 country code (such as US or GB)"
    ]


@pytest.mark.parametrize(("code", "kept"), [("gb", "GB"), ("UK", "UK"), ("de", "DE")])
def test_a_known_default_country_is_accepted_as_identity_reads_it(
    write_config: WriteConfig, code: str, kept: str
) -> None:
    path = write_config(source=SOURCE.replace('default_country = "US"', f'default_country = "{code}"'))
    config = load_config(path, {})
    assert config.source.default_country == kept
    ProfileHasher("meta", list(config.source.identifiers), config.source.default_country, frozenset())


def test_hash_with_an_unknown_country_is_a_usage_error_not_a_traceback() -> None:
    result = CliRunner().invoke(
        cli, ["hash", "--platform", "meta", "--field", "phone", "--country", "XX", "555 123 4567"]
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Invalid value for '--country': 'XX' is not an ISO 3166-1 alpha-2 country code" in result.stderr
    assert "Traceback" not in result.output


def test_hash_reads_a_national_phone_with_a_known_country() -> None:
    result = CliRunner().invoke(
        cli, ["hash", "--platform", "meta", "--field", "phone", "--country", "uk", "020 7946 0018"]
    )
    assert result.exit_code == 0, result.output
    assert "'442079460018'" in result.output


def two_destinations(platform: str, first: str, second: str, *, pins: str = "") -> str:
    """Two destinations of ``platform`` (each body's own keys), both syncing lapsed; vip goes only to
    the first."""
    common = {
        "tiktok": 'platform = "tiktok"\naccess_token_env = "AS_TEST_TIKTOK_TOKEN"\n',
        "meta": 'platform = "meta"\naccess_token_env = "AS_TEST_META_TOKEN"\n',
        "google": 'platform = "google"\naccept_customer_match_terms = true\n',
    }[platform]
    loopback = 'endpoint = "http://127.0.0.1:8802"\n'
    return (
        f"[destinations.one]\n{common}{loopback}{first}\n"
        f"[destinations.two]\n{common}{second if 'endpoint' in second else loopback + second}\n"
        f'[[syncs]]\naudience = "lapsed"\ndestinations = ["one", "two"]\n{pins}\n'
        '[[syncs]]\naudience = "vip"\ndestinations = ["one"]\n'
    )


@pytest.mark.parametrize(
    ("platform", "first", "second", "key"),
    [
        ("tiktok", 'advertiser_id = "700"\n', 'advertiser_id = "700"\n', "advertiser_id"),
        ("meta", 'ad_account_id = "act_42"\n', 'ad_account_id = "42"\n', "ad_account_id"),
        ("google", 'customer_id = "1234567890"\n', 'customer_id = "1234567890"\n', "customer_id"),
    ],
)
def test_two_destinations_that_would_share_one_platform_audience_are_refused(
    write_config: WriteConfig, platform: str, first: str, second: str, key: str
) -> None:
    found = problems(write_config(two_destinations(platform, first, second)))
    assert found == [
        f"destinations.two: lapsed@two and lapsed@one would share the {platform} audience "
        f"'audience-sync: lapsed': destinations one and two have the same {key} and name_prefix. "
        "Give one its own name_prefix (or pin both to one audience with audience_ids, if sharing it is meant)"
    ]


def test_validate_names_both_destinations_that_would_share_an_audience(write_config: WriteConfig) -> None:
    path = write_config(two_destinations("tiktok", 'advertiser_id = "700"\n', 'advertiser_id = "700"\n'))
    result = CliRunner().invoke(cli, ["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert "destinations.two: lapsed@two and lapsed@one would share the tiktok audience" in result.stderr


@pytest.mark.parametrize(
    ("second", "pins"),
    [
        ('advertiser_id = "701"\n', ""),
        ('advertiser_id = "700"\nname_prefix = "eu: "\n', ""),
        ('advertiser_id = "700"\nendpoint = "http://127.0.0.1:9902"\n', ""),
        ('advertiser_id = "700"\n', 'audience_ids = { two = "7001" }\n'),
    ],
    ids=["other advertiser", "own prefix", "other endpoint", "pinned"],
)
def test_destinations_on_one_account_are_fine_when_their_audiences_differ(
    write_config: WriteConfig, second: str, pins: str
) -> None:
    path = write_config(two_destinations("tiktok", 'advertiser_id = "700"\n', second, pins=pins))
    assert len(load_config(path, {}).targets()) == 3
