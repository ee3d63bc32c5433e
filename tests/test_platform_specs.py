"""What each platform folder declares is whole and consistent, and the engine names no platform: all
it knows of one comes through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from audiencesync.connectors.contract import IDENTIFIER_KINDS, PlatformSpec
from audiencesync.connectors.platform_spec import Rule
from audiencesync.connectors.registry import PLATFORMS, emulated_platforms
from audiencesync.connectors.versions import DEFAULT_VERSIONS, VERSIONS

SPECS = list(PLATFORMS.values())
ENGINE = Path(__file__).resolve().parents[1] / "sync"

# Which identifier kinds each rule is written for.
RULE_KINDS = {
    "email": {"email"},
    "phone": {"phone"},
    "name": {"first_name", "last_name"},
    "city": {"city"},
    "state": {"state"},
    "zip": {"zip"},
    "country": {"country"},
    "dob": {"dob"},
    "gender": {"gender"},
    "maid": {"maid"},
    "external": {"external_id"},
}


def kinds_of(rule: Rule) -> set[str]:
    return RULE_KINDS[rule.value.split("_", 1)[0]]


@pytest.mark.parametrize("spec", [s for s in SPECS if s.identity], ids=lambda s: s.name)
def test_each_kind_follows_a_rule_written_for_it(spec: PlatformSpec) -> None:
    assert spec.identity is not None
    for kind, rule in spec.identity.rules.items():
        assert kind in IDENTIFIER_KINDS
        assert kind in kinds_of(rule), f"{spec.name}: {kind} follows {rule}"
    assert spec.identity.unhashed <= spec.identity.kinds


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_settings_name_their_secrets_and_account(spec: PlatformSpec) -> None:
    schema = spec.settings
    for key, setting in schema.keys.items():
        if setting.secret is not None:
            assert key.endswith("_env"), f"{spec.name}.{key} names a secret's variable"
        if setting.secret_needed_when is not None:
            assert setting.secret_needed_when[0] in schema.keys
    assert schema.account_key is None or schema.account_key in schema.keys
    for api in schema.api_versions:
        assert DEFAULT_VERSIONS[api.table] == api.default and api.default in VERSIONS[api.table]


def test_a_destination_hashing_by_another_platform_can_name_only_platforms_with_rules() -> None:
    for spec in SPECS:
        key = spec.settings.identity_from
        if key is None:
            continue
        setting = spec.settings.keys[key]
        assert setting.check is not None
        assert PLATFORMS[setting.default].identity is not None
        named = [name for name in PLATFORMS if setting.check(name) is None]
        assert named and all(PLATFORMS[name].identity is not None for name in named)


def test_every_emulator_has_its_own_default_ports() -> None:
    ports: list[int] = []
    for name in emulated_platforms():
        defaults = PLATFORMS[name].settings.emulator
        assert defaults is not None, name
        ports += [defaults.port] + ([defaults.admin_port] if defaults.admin_port else [])
    assert len(ports) == len(set(ports))


def platform_names_in(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in PLATFORMS
    ]


def test_the_engine_names_no_platform() -> None:
    found = [
        f"{path.relative_to(ENGINE)}:{line}: {value!r}"
        for path in sorted(ENGINE.rglob("*.py"))
        for line, value in platform_names_in(path)
    ]
    assert found == []
