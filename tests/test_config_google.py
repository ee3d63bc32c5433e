"""Config rules for Google destinations: the Customer Match terms declaration and the Ads API version."""

from __future__ import annotations

from datetime import date

import pytest
from audiencesync.sync.config import load_config
from audiencesync.sync.errors import ConfigError
from sample_configs import WriteConfig


def google(extra: str = "", backend: str = "data_manager") -> str:
    return (
        f'[destinations.g]\nplatform = "google"\nbackend = "{backend}"\ncustomer_id = "1234567890"\n'
        f'endpoint = "127.0.0.1:1"\n{extra}'
        '[[syncs]]\naudience = "vip"\ndestinations = ["g"]\n'
    )


def test_a_data_manager_destination_without_declared_terms_acceptance_is_refused(
    write_config: WriteConfig,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(google()), {})
    (problem,) = caught.value.problems
    assert problem.startswith("destinations.g.accept_customer_match_terms: required for the data_manager")
    assert "support.google.com/adspolicy/answer/6299717" in problem


def test_terms_acceptance_must_be_true_not_a_string(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(google('accept_customer_match_terms = "yes"\n')), {})
    assert any(p.startswith("destinations.g.accept_customer_match_terms:") for p in caught.value.problems)


def test_declared_acceptance_passes_and_google_ads_needs_none(write_config: WriteConfig) -> None:
    config = load_config(write_config(google("accept_customer_match_terms = true\n")), {})
    assert config.destinations["g"].settings["accept_customer_match_terms"] is True
    ads = load_config(write_config(google(backend="google_ads"), name="ads.toml"), {})
    assert ads.destinations["g"].settings["api_version"] == "v26"


def test_an_ads_version_near_its_sunset_warns_and_a_passed_one_is_refused(write_config: WriteConfig) -> None:
    path = write_config(google('api_version = "v24"\n', backend="google_ads"))
    near = load_config(path, {}, today=date(2027, 3, 1))
    assert len(near.warnings) == 1
    assert near.warnings[0].startswith("destinations.g.api_version: v24 stops working on 2027-05-01")
    assert load_config(path, {}, today=date(2026, 12, 2)).warnings == ()
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, today=date(2027, 5, 2))
    assert caught.value.problems[0].startswith("destinations.g.api_version: v24 stopped working")
