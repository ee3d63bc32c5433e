"""The package installs under one import name: nothing called bare sync, state or connectors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_only_the_audiencesync_name_is_importable(tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u, audiencesync.sync.cli.commands, audiencesync.state.db, audiencesync.connectors.contract\n"
        "print([n for n in ('sync', 'state', 'connectors') if u.find_spec(n) is not None])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_packaged_example_config_is_the_top_level_one() -> None:
    from importlib import resources

    packaged = resources.files("audiencesync.sync").joinpath("config.example.toml").read_text()
    assert packaged == (Path(__file__).parent.parent / "config.example.toml").read_text()


def test_the_console_command_is_installed() -> None:
    exe = Path(sys.executable).parent / "audience-sync"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("sync", "validate", "hash", "demo", "emulator"):
        assert command in out.stdout
