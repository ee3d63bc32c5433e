"""The package installs under one import name: nothing called bare sync, state or connectors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
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


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, check=True)


def test_importing_the_library_loads_neither_click_nor_rich(tmp_path: Path) -> None:
    probe = (
        "import sys, audiencesync\nprint(sorted({'click', 'rich'} & {m.split('.')[0] for m in sys.modules}))"
    )
    assert _run(sys.executable, "-c", probe, cwd=tmp_path).stdout.strip() == "[]"


def test_no_module_of_the_library_package_imports_click_or_rich() -> None:
    for source in (Path(__file__).parent.parent / "sync" / "api").glob("*.py"):
        imports = [line for line in source.read_text().splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in imports if line.split()[1].split(".")[0] in ("click", "rich")], source


def test_the_library_folder_has_one_import_name(tmp_path: Path) -> None:
    probe = "try:\n    import audiencesync.sync.api\nexcept ImportError as exc:\n    print(exc)"
    assert _run(sys.executable, "-c", probe, cwd=tmp_path).stdout.strip() == (
        "import audiencesync, not audiencesync.sync.api"
    )


def test_python_m_audiencesync_is_the_console_command(tmp_path: Path) -> None:
    as_module = _run(sys.executable, "-m", "audiencesync", "--help", cwd=tmp_path).stdout
    as_command = _run(str(Path(sys.executable).parent / "audience-sync"), "--help", cwd=tmp_path).stdout
    assert as_module == as_command
    assert as_module.startswith("Usage: audience-sync ")


def test_a_built_wheel_installs_the_library_and_the_command(tmp_path: Path) -> None:
    """A regular install, not the editable one the tests otherwise run against: the package folder
    mapped to the import name lands as audiencesync/, and nowhere else."""
    # Built from a copy: setuptools leaves a build/ folder beside the sources it builds.
    repo, source = Path(__file__).parent.parent, tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "config.example.toml", "connectors", "sync", "state"):
        if (repo / name).is_dir():
            shutil.copytree(repo / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(repo / name, source / name)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(source),
        "--no-deps",
        "-q",
        "-w",
        str(tmp_path),
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("audience_sync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"audiencesync/__init__.py", "audiencesync/__main__.py"} <= set(names)
    assert not [n for n in names if n.startswith("audiencesync/sync/api/")]
    # Data files the modules read at import travel with them.
    assert "audiencesync/connectors/tiktok/tiktok_codes.json" in names

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--no-deps",
        str(wheel),
        cwd=tmp_path,
    )
    # The dependencies come from this environment; its .pth files (the editable install) stay inactive.
    site = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
    deps = _run(sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
    (Path(site.stdout.strip()) / "deps.pth").write_text(deps.stdout.strip() + "\n")

    where = _run(str(python), "-c", "import audiencesync; print(audiencesync.__file__)", cwd=tmp_path)
    assert where.stdout.strip() == str(Path(site.stdout.strip()) / "audiencesync" / "__init__.py")
    assert "Usage: audience-sync " in _run(str(python), "-m", "audiencesync", "--help", cwd=tmp_path).stdout
    assert "sync" in _run(str(venv / "bin" / "audience-sync"), "--help", cwd=tmp_path).stdout
