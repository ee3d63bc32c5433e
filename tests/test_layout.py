"""The house's rules, checked on the code as it stands: who may import whom, where SQL against the
state file lives, and how large a file may grow. Each rule is in the README's layout section."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Import name -> folder, as pyproject.toml's package-dir maps them.
PACKAGES = {
    "audiencesync.connectors": ROOT / "connectors",
    "audiencesync.sync": ROOT / "sync",
    "audiencesync.state": ROOT / "state",
}
MAX_LINES = 600


def _modules() -> Iterator[tuple[str, Path]]:
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def _load_time_imports(path: Path) -> set[str]:
    """The modules a file imports when it is loaded: top-level imports, not those inside functions
    or under ``if TYPE_CHECKING``, which cannot make an import circle."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _all_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


MODULES = dict(_modules())


def test_no_connector_imports_the_engine() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        if name.startswith("audiencesync.connectors")
        for imported in sorted(_all_imports(path))
        if imported.startswith("audiencesync.sync")
    ]
    assert offenders == []


# State records what platforms answered, so it reads the contract's records, and nothing else of
# the connectors.
STATE_MAY_IMPORT = {"audiencesync.connectors.contract"}


def test_state_imports_neither_the_engine_nor_a_platform() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        if name.startswith("audiencesync.state")
        for imported in sorted(_all_imports(path))
        if imported.startswith(("audiencesync.sync", "audiencesync.connectors"))
        and imported not in STATE_MAY_IMPORT
    ]
    assert offenders == []


def test_only_the_cli_package_imports_click_and_rich() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        if not name.startswith("audiencesync.sync.cli")
        for imported in sorted(_all_imports(path))
        if imported.split(".")[0] in {"click", "rich"}
    ]
    assert offenders == []


def test_there_is_no_import_circle() -> None:
    graph = {
        name: {imported for imported in _load_time_imports(path) if imported in MODULES and imported != name}
        for name, path in MODULES.items()
    }
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            if circle := visit(imported, [*trail, name]):
                return circle
        done.add(name)
        return None

    circles = [" -> ".join(c) for name in sorted(graph) if (c := visit(name, []))]
    assert circles == []


# A statement against one of the state file's tables. Sources are SQL too, but against the user's
# database, never these tables.
STATE_TABLES = (
    "members|outbox|runs|targets|lag|alert_state|rejections|run_rejections|leases|batches|plan_watermarks"
)
STATE_SQL = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN)\s+({STATE_TABLES})\b")


def test_only_state_holds_sql_against_the_state_file() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for name, path in MODULES.items()
        if not name.startswith("audiencesync.state")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if STATE_SQL.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "path",
    sorted(p for p in ROOT.rglob("*.py") if not {".venv", ".mypyroot", "build"} & set(p.parts)),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_file_passes_six_hundred_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
