"""Plan files (``sync --plan-out`` / ``--apply-plan``): JSON lines that are checked before use.

A plan file is a header line, then per target a section line and one line per change, then a
trailer line holding the SHA-256 of every line before it. The header carries the SHA-256 of the
config file the plan was made with. A plan that was truncated (no trailer, or a trailer that does not
match), edited (checksum mismatch), made with another config, or that lacks a field, is refused
with one line naming the file and line. Payloads are written as state holds them: hashed, with the
values that go unhashed sealed (see ``state/sealed.py``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import IO, Any

from audiencesync.sync.errors import InputError

PLAN_FORMAT = "audience-sync-plan"
PLAN_VERSION = 2


def config_hash(config_path: Path) -> str:
    try:
        return hashlib.sha256(config_path.read_bytes()).hexdigest()
    except OSError:
        return ""


class PlanWriter:
    """Writes a plan file line by line and seals it with its checksum on ``close``."""

    def __init__(self, path: Path, config_path: Path) -> None:
        self.path = path
        try:
            self._handle: IO[str] = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--plan-out {path}: cannot write it ({exc.strerror})") from None
        self._digest = hashlib.sha256()
        self.write(
            {
                "format": PLAN_FORMAT,
                "version": PLAN_VERSION,
                "created_at": time.time(),
                "config_sha256": config_hash(config_path),
            }
        )

    def write(self, item: dict[str, Any]) -> None:
        line = json.dumps(item) + "\n"
        self._digest.update(line.encode())
        self._handle.write(line)

    def close(self) -> None:
        self._handle.write(json.dumps({"checksum": self._digest.hexdigest()}) + "\n")
        self._handle.close()

    def abort(self) -> None:
        # An unfinished plan has no trailer, so it can never be applied.
        self._handle.close()


_HEADER_FIELDS: dict[str, type] = {"target": str, "state_version": int, "max_batch": int}
_OP_FIELDS: dict[str, type] = {"k": str, "op": str, "p": str}


def read_plan_file(path: Path, config_path: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The sections of a saved plan: (section header, changes). Raises ``InputError`` naming the file
    and line for anything that is not an intact plan made with this config."""
    if not path.is_file():
        raise InputError(f"{path}: plan file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the plan file ({exc.strerror})") from None
    lines = data.splitlines(keepends=True)
    if not lines:
        raise InputError(f"{path}: empty, not a plan written by sync --plan-out")
    items = [_parse(path, number, line) for number, line in enumerate(lines, start=1)]
    head = items[0]
    if head.get("format") != PLAN_FORMAT:
        raise InputError(f"{path}: not a plan written by sync --plan-out")
    if head.get("version") != PLAN_VERSION:
        raise InputError(
            f"{path}: plan format version {head.get('version')!r}, this version reads {PLAN_VERSION}; plan again"
        )
    trailer = items[-1]
    if set(trailer) != {"checksum"} or len(items) < 2:
        raise InputError(
            f"{path}: the plan is incomplete (truncated: no checksum line at its end); plan again"
        )
    if hashlib.sha256(b"".join(lines[:-1])).hexdigest() != trailer["checksum"]:
        raise InputError(f"{path}: checksum mismatch, the plan was changed or truncated after it was saved")
    if head.get("config_sha256") != config_hash(config_path):
        raise InputError(
            f"{path}: the plan was made with a different config than {config_path}; plan again with this one"
        )
    sections: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for number, item in enumerate(items[1:-1], start=2):
        if "target" in item:
            _require(path, number, item, _HEADER_FIELDS)
            sections.append((item, []))
        elif sections and "k" in item:
            _require(path, number, item, _OP_FIELDS)
            if item["op"] not in ("add", "remove"):
                raise InputError(f"{path} line {number}: op must be add or remove")
            try:
                bytes.fromhex(item["k"])
                if item.get("raw"):
                    bytes.fromhex(str(item["raw"]))
            except ValueError:
                raise InputError(f"{path} line {number}: k and raw must be hexadecimal") from None
            sections[-1][1].append(item)
        else:
            raise InputError(f"{path} line {number}: unexpected content in a plan file")
    return sections


def _parse(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} line {number}: not a saved plan (bad JSON)") from None
    if not isinstance(item, dict):
        raise InputError(f"{path} line {number}: not a saved plan (expected a JSON object)")
    return item


def _require(path: Path, number: int, item: dict[str, Any], fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        value = item.get(name)
        if value is None:
            raise InputError(f"{path} line {number}: missing field {name!r}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(f"{path} line {number}: field {name!r} must be {kind.__name__}")
