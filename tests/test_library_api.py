"""``import audiencesync`` as a library: the calls return reports that serialize to the JSON the CLI
prints, raise the documented errors for bad input, and never print."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import audiencesync
import pytest
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner
from sample_configs import WriteConfig


@pytest.fixture(autouse=True)
def library_logging() -> Iterator[None]:
    """The ``audiencesync`` logger as ``import audiencesync`` leaves it: the CLI tests of this session
    point it at their own streams."""
    logger = logging.getLogger("audiencesync")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [logging.NullHandler()]
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def cli_json(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.stdout)
    return out


def test_plan_sync_and_lag_write_nothing_to_stdout_or_stderr(
    write_config: WriteConfig, demo_db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = audiencesync.load_config(write_config())
    planned = audiencesync.plan(config)
    pushed = audiencesync.sync_once(config)
    lag = audiencesync.lag_report(config)
    assert capfd.readouterr() == ("", "")
    assert planned.dry_run and not pushed.dry_run
    assert pushed.ok and pushed.exit_code == audiencesync.ExitCode.OK
    assert [t.status for t in pushed.targets] == [audiencesync.RunStatus.OK] * 3
    assert not lag.breached and [t.target for t in lag.targets] == [t.plan.key for t in pushed.targets]


def test_a_plan_changes_nothing_and_is_what_the_dry_run_prints(
    write_config: WriteConfig, demo_db: Path
) -> None:
    path = write_config()
    report = audiencesync.plan(str(path))
    assert not (path.parent / "state.db").exists()
    assert all(t.status == audiencesync.RunStatus.PLANNED for t in report.targets)
    assert sum(t.plan.adds for t in report.targets) > 0
    assert json.loads(report.to_json()) == cli_json("sync", "--dry-run", "--json", "--config", str(path))


def test_after_a_sync_the_next_plan_has_no_changes(write_config: WriteConfig, demo_db: Path) -> None:
    path = write_config()
    audiencesync.sync_once(path)
    again = audiencesync.plan(path).as_dict()
    assert [(t["adds"], t["removes"]) for t in again["targets"]] == [(0, 0)] * 3


def test_the_lag_report_is_what_lag_json_prints(write_config: WriteConfig, demo_db: Path) -> None:
    path = write_config()
    audiencesync.sync_once(path)
    report = audiencesync.lag_report(path, since="24h", only="vip")
    printed = cli_json("lag", "--json", "--since", "24h", "--only", "vip", "--config", str(path))
    ours = json.loads(report.to_json())
    assert ours["since"] == pytest.approx(ours["generated_at"] - 86_400)
    for body in (ours, printed):
        body.pop("generated_at"), body.pop("since")
    assert [t["target"] for t in ours["targets"]] == ["vip@files"]
    assert ours.keys() == printed.keys()
    assert [t["members"] for t in ours["targets"]] == [t["members"] for t in printed["targets"]]


def test_bad_input_raises_the_documented_errors(write_config: WriteConfig, tmp_path: Path) -> None:
    with pytest.raises(audiencesync.ConfigError, match="file not found") as missing:
        audiencesync.load_config(tmp_path / "nope.toml")
    assert isinstance(missing.value, audiencesync.InputError) and missing.value.exit_code == 2
    config = write_config()
    with pytest.raises(audiencesync.InputError, match="no state file yet"):
        audiencesync.lag_report(config)
    with pytest.raises(audiencesync.InputError, match="takes no dry_run"):
        audiencesync.sync_once(config, dry_run=True, apply_plan=tmp_path / "plan.jsonl")
    with pytest.raises(audiencesync.InputError, match="since: not a duration"):
        audiencesync.lag_report(config, since="soon")


def test_the_platform_error_taxonomy_is_exported() -> None:
    for name in ("AuthError", "PermissionDenied", "AudienceGone", "SchemaMismatch", "ConfigurationRejected"):
        assert issubclass(getattr(audiencesync, name), audiencesync.FatalError)
    assert issubclass(audiencesync.TransientError, audiencesync.ConnectorError)
    assert issubclass(audiencesync.SourceError, audiencesync.InputError)
    assert audiencesync.StateFileError.exit_code == 2


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in audiencesync.__all__:
        value = getattr(audiencesync, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
    with pytest.raises(AttributeError):
        _ = audiencesync.no_such_name


def test_the_engine_package_keeps_its_name() -> None:
    # Why the one-shot call is sync_once: a top-level function named sync would hide this package.
    import audiencesync.sync.config as config_module

    assert inspect.ismodule(audiencesync.sync)
    assert config_module.Config is audiencesync.Config
