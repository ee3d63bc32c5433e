"""The bad-input corpus: the config file, its tokens and the CLI's options. What every case must end
with is in bad_input_case.py."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest
from bad_input_case import (
    GOOGLE_DEV_TOKEN,
    META_TOKEN,
    TIKTOK_TOKEN,
    Case,
    assert_one_line,
    assert_refused,
    run,
    state_digest,
)

# --- config -------------------------------------------------------------------------------------

CONFIG_CASES: list[tuple[str, Callable[[Case], None], tuple[str, ...]]] = [
    ("not_toml", lambda c: c.config.write_text("this is = = not toml [", encoding="utf-8"), ()),
    ("not_utf8", lambda c: c.config.write_bytes(b'state_path = "\xff\xfe"\n'), ()),
    ("no_source", lambda c: c.replace_in_config("[source]", "[sauce]"), ("source",)),
    ("bad_source_kind", lambda c: c.replace_in_config('kind = "sqlite"', 'kind = "excel"'), ("source.kind",)),
    ("unknown_identifier", lambda c: c.replace_in_config('zip = "postcode"', 'zipp = "postcode"'), ("zipp",)),
    (
        "bad_country",
        lambda c: c.replace_in_config('default_country = "US"', 'default_country = "XX"'),
        ("source.default_country",),
    ),
    (
        "state_path_number",
        lambda c: c.replace_in_config('state_path = "state.db"', "state_path = 7"),
        ("state_path",),
    ),
    ("no_platform", lambda c: c.replace_in_config('platform = "file"', ""), ("destinations.files.platform",)),
    (
        "unknown_platform",
        lambda c: c.replace_in_config('platform = "file"', 'platform = "myspace"'),
        ("destinations.files.platform",),
    ),
    (
        "unknown_sync_audience",
        lambda c: c.replace_in_config('audience = "vip"', 'audience = "vipp"'),
        ("vipp",),
    ),
    (
        "unknown_sync_destination",
        lambda c: c.replace_in_config('destinations = ["files"]', 'destinations = ["nowhere"]'),
        ("nowhere",),
    ),
    (
        "no_syncs",
        lambda c: c.config.write_text(c.config.read_text().split("[[syncs]]")[0], encoding="utf-8"),
        ("syncs",),
    ),
    ("audience_without_rule", lambda c: c.replace_in_config('stage = "vip"', ""), ("vip",)),
    (
        "unknown_top_key",
        lambda c: c.replace_in_config('state_path = "state.db"', 'state_path = "state.db"\nstate_pth = "x"'),
        ("state_pth",),
    ),
    (
        "bad_format",
        lambda c: c.replace_in_config('format = "meta"', 'format = "snapchat"'),
        ("destinations.files.format",),
    ),
    (
        "secret_in_file",
        lambda c: c.replace_in_config('format = "meta"', f'format = "meta"\naccess_token = "{META_TOKEN}"'),
        ("destinations.files.access_token",),
    ),
    (
        "destination_not_table",
        lambda c: c.replace_in_config(
            '[destinations.files]\nplatform = "file"\ndirectory = "exports"\nformat = "meta"',
            "[destinations]\nfiles = 3",
        ),
        ("destinations.files",),
    ),
]

TOKEN_CONFIGS = {
    "meta": """
        [destinations.m]
        platform = "meta"
        ad_account_id = "act_1234"
        access_token_env = "{value}"
        """,
    "tiktok": """
        [destinations.t]
        platform = "tiktok"
        advertiser_id = "7000000000000000001"
        access_token_env = "{value}"
        """,
    "google": """
        [destinations.g]
        platform = "google"
        backend = "google_ads"
        customer_id = "1234567890"
        developer_token_env = "{value}"
        """,
}
TOKENS = {"meta": META_TOKEN, "tiktok": TIKTOK_TOKEN, "google": GOOGLE_DEV_TOKEN}
ENV_KEYS = {"meta": "access_token_env", "tiktok": "access_token_env", "google": "developer_token_env"}


@pytest.mark.parametrize("name,mutate,names", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_cases(case: Case, name: str, mutate: Callable[[Case], None], names: tuple[str, ...]) -> None:
    before = state_digest(case.state)
    mutate(case)
    result = run(case, "sync", "--config", str(case.config))
    message = assert_refused(result, str(case.config), *names)
    assert message.splitlines()[0].startswith("error:")
    assert state_digest(case.state) == before


def _token_destination(case: Case, platform: str, value: str) -> None:
    text = case.config.read_text(encoding="utf-8")
    case.config.write_text(
        text + textwrap.dedent(TOKEN_CONFIGS[platform].format(value=value)), encoding="utf-8"
    )


@pytest.mark.parametrize("platform", sorted(TOKENS))
def test_a_token_pasted_for_the_variable_name_is_refused_unseen(case: Case, platform: str) -> None:
    before = state_digest(case.state)
    _token_destination(case, platform, TOKENS[platform])
    result = run(case, "validate", "--config", str(case.config))
    assert_refused(result, ENV_KEYS[platform], secret=TOKENS[platform])
    assert state_digest(case.state) == before


@pytest.mark.parametrize("platform", sorted(TOKENS))
def test_a_token_with_whitespace_inside_is_refused_by_name_unseen(case: Case, platform: str) -> None:
    _token_destination(case, platform, "MY_TOKEN")
    token = TOKENS[platform][:10] + "\n" + TOKENS[platform][10:]
    result = run(case, "validate", "--config", str(case.config), env={"MY_TOKEN": token})
    assert_refused(result, ENV_KEYS[platform], "MY_TOKEN", secret=TOKENS[platform][10:])


@pytest.mark.parametrize("platform", sorted(TOKENS))
def test_a_token_with_a_trailing_newline_is_trimmed(case: Case, platform: str) -> None:
    from audiencesync.sync.config import load_config

    _token_destination(case, platform, "MY_TOKEN")
    config = load_config(case.config, {"MY_TOKEN": f"  {TOKENS[platform]}\n"})
    secrets = {d.name: d.secrets for d in config.destinations.values()}
    assert TOKENS[platform] in [v for s in secrets.values() for v in s.values()]
    assert all(v == v.strip() for s in secrets.values() for v in s.values())


def test_a_missing_config_file(case: Case) -> None:
    result = run(case, "sync", "--config", str(case.root / "nope.toml"))
    assert_one_line(assert_refused(result, "nope.toml"))


def test_a_config_path_that_is_a_directory(case: Case) -> None:
    (case.root / "conf.d").mkdir()
    result = run(case, "validate", "--config", str(case.root / "conf.d"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "conf.d" in result.output


def test_only_matches_nothing(case: Case) -> None:
    before = state_digest(case.state)
    result = run(case, "sync", "--config", str(case.config), "--only", "nosuch")
    assert_one_line(assert_refused(result, "--only nosuch"))
    assert state_digest(case.state) == before
