"""Every command that reads a config takes ``--config`` the same way and reports a bad one the same
way: the message on stderr, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner

CONFIG_COMMANDS = ("validate", "sync", "daemon", "lag", "runs")


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_a_missing_config_is_the_same_input_error_for_every_command(command: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [command, "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "nope.toml" in result.stderr
    assert "file not found" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_config_is_found_through_the_environment_for_every_command(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIENCE_SYNC_CONFIG", str(tmp_path / "from-env.toml"))
    result = CliRunner().invoke(cli, [command])
    assert result.exit_code == 2 and "from-env.toml" in result.stderr, result.output


def test_every_config_option_has_the_same_help() -> None:
    helps = set()
    for command in CONFIG_COMMANDS:
        params = {p.name: p for p in cli.commands[command].params}
        helps.add(getattr(params["config_path"], "help", None))
    assert len(helps) == 1 and "AUDIENCE_SYNC_CONFIG" in str(next(iter(helps)))
