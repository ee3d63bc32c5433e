"""Sources: stream an audience's members out of the profile store, row by row, never loaded whole.

Three kinds: a SQLite profile database (the embedded default, which also runs an audience's own SQL
``query``), a CSV export and a JSONL export. Every row becomes a ``SourceRow`` carrying the raw
identifier values; only ``audiencesync.sync.identity`` ever looks at them, and they are dropped as
soon as they are hashed.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.errors import SourceError

_TRUE = {"1", "true", "yes", "y", "granted", "t"}
_FALSE = {"0", "false", "no", "n", "denied", "f"}


@dataclass(frozen=True)
class SourceRow:
    profile_id: str
    raw: Mapping[str, str | None]
    """Identifier kind -> raw value (None when absent)."""
    consent: bool | None
    changed_at: float | None


def parse_tags(value: Any) -> set[str]:
    """In-flow tags stored as a JSON array or a comma-separated string."""
    if value is None or value == "":
        return set()
    if isinstance(value, list):
        return {str(v).strip() for v in value}
    text = str(value).strip()
    if text.startswith("["):
        try:
            return {str(v).strip() for v in json.loads(text)}
        except (json.JSONDecodeError, TypeError):
            pass
    return {t.strip() for t in text.split(",") if t.strip()}


def parse_consent(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds (number) or ISO 8601 text; naive times are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class _RowMapper:
    """Turns a mapping of column -> value into a SourceRow, applying the audience's filter."""

    def __init__(self, source: SourceConfig, audience: AudienceConfig, where: str) -> None:
        self.source = source
        self.audience = audience
        self.where = where
        self.filter_in_python = audience.query is None

    def matches(self, row: Mapping[str, Any]) -> bool:
        if not self.filter_in_python:
            return True
        stage, tag = self.audience.stage, self.audience.in_flow
        if stage is not None and self.source.stage_column and row.get(self.source.stage_column) != stage:
            return False
        if tag is not None and self.source.in_flow_column:
            return tag in parse_tags(row.get(self.source.in_flow_column))
        return True

    def to_row(self, row: Mapping[str, Any], line: int) -> SourceRow:
        pid = row.get(self.source.id_column)
        if pid is None or str(pid).strip() == "":
            raise SourceError(
                f"{self.where} row {line}", f"column {self.source.id_column!r} is empty or missing"
            )
        raw: dict[str, str | None] = {}
        for kind, column in self.source.identifiers.items():
            value = row.get(column)
            raw[kind] = None if value is None or value == "" else str(value)
        consent = parse_consent(row.get(self.source.consent_column)) if self.source.consent_column else None
        changed = (
            parse_timestamp(row.get(self.source.changed_at_column)) if self.source.changed_at_column else None
        )
        return SourceRow(str(pid), raw, consent, changed)


def read_audience(source: SourceConfig, audience: AudienceConfig) -> Iterator[SourceRow]:
    """Stream the members of ``audience``. Raises ``SourceError`` naming the file and row or query."""
    if source.kind == "sql":
        from audiencesync.sync.sql_source import read_sql_audience

        return read_sql_audience(source, audience)
    if not source.path.exists():
        raise SourceError(str(source.path), "source file not found (check [source] path)")
    if source.path.is_dir():
        raise SourceError(str(source.path), "is a directory; [source] path must name a file")
    if source.kind == "sqlite":
        return _read_sqlite(source, audience)
    if source.kind == "csv":
        return _read_csv(source, audience)
    return _read_jsonl(source, audience)


def _sqlite_sql(source: SourceConfig, audience: AudienceConfig) -> tuple[str, list[Any]]:
    if audience.query is not None:
        return audience.query, []
    clauses: list[str] = []
    params: list[Any] = []
    if audience.stage is not None and source.stage_column:
        clauses.append(f'"{source.stage_column}" = ?')
        params.append(audience.stage)
    if audience.in_flow is not None and source.in_flow_column:
        # A cheap pre-filter; the exact tag match happens in Python (tags may be JSON or CSV).
        clauses.append(f'"{source.in_flow_column}" LIKE ?')
        params.append(f"%{audience.in_flow}%")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return f'SELECT * FROM "{source.table}"{where}', params


def _read_sqlite(source: SourceConfig, audience: AudienceConfig) -> Iterator[SourceRow]:
    where = f"{source.path}" if audience.query is None else f"{source.path} (audiences.{audience.name}.query)"
    sql, params = _sqlite_sql(source, audience)
    try:
        conn = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceError(where, f"cannot open the profile database: {exc}") from None
    conn.row_factory = sqlite3.Row
    mapper = _RowMapper(source, audience, where)
    try:
        try:
            cursor = conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise SourceError(where, f"SQL error: {exc}") from None
        columns = {d[0] for d in cursor.description or ()}
        missing = [c for c in [source.id_column, *source.identifiers.values()] if c not in columns]
        if missing:
            raise SourceError(where, f"the result has no column(s) {', '.join(missing)}")
        line = 0
        while True:
            try:
                rows = cursor.fetchmany(5000)
            except sqlite3.Error as exc:
                raise SourceError(where, f"SQL error while reading: {exc}") from None
            if not rows:
                break
            for row in rows:
                line += 1
                as_map = dict(zip(row.keys(), tuple(row), strict=True))
                if mapper.matches(as_map):
                    yield mapper.to_row(as_map, line)
    finally:
        conn.close()


def _read_csv(source: SourceConfig, audience: AudienceConfig) -> Iterator[SourceRow]:
    where = str(source.path)
    mapper = _RowMapper(source, audience, where)
    try:
        with source.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, strict=True)
            header = reader.fieldnames or []
            missing = [c for c in [source.id_column, *source.identifiers.values()] if c not in header]
            if missing:
                raise SourceError(f"{where} header", f"no column(s) {', '.join(missing)}")
            for row in reader:
                if None in row:
                    raise SourceError(f"{where} line {reader.line_num}", "more fields than the header has")
                if mapper.matches(row):
                    yield mapper.to_row(row, reader.line_num)
    except csv.Error as exc:
        raise SourceError(f"{where} line {getattr(exc, 'line_num', '?')}", f"unreadable CSV: {exc}") from None
    except UnicodeDecodeError:
        raise SourceError(where, "not UTF-8 text") from None


def _read_jsonl(source: SourceConfig, audience: AudienceConfig) -> Iterator[SourceRow]:
    where = str(source.path)
    mapper = _RowMapper(source, audience, where)
    try:
        with source.path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{where} line {number}", f"not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise SourceError(f"{where} line {number}", "each line must be a JSON object")
                if mapper.matches(row):
                    yield mapper.to_row(row, number)
    except UnicodeDecodeError:
        raise SourceError(where, "not UTF-8 text") from None


def count_profiles(source: SourceConfig) -> int | None:
    """Rows in the profile table (SQLite only), for the report."""
    if source.kind != "sqlite" or not Path(source.path).exists():
        return None
    with sqlite3.connect(f"file:{source.path}?mode=ro", uri=True) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{source.table}"').fetchone()[0])
