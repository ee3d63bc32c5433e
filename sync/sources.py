"""Sources: stream an audience's members out of the profile store, row by row, never loaded whole.

Three kinds: a SQLite profile database (the embedded default), a CSV export and a JSONL export, each
queried by SQL (``audiencesync.sync.source_engines``), so an audience is defined the same way for all. Every row becomes a ``SourceRow`` carrying the raw
identifier values; only ``audiencesync.sync.identity`` ever looks at them, and they are dropped as
soon as they are hashed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.errors import SourceError
from audiencesync.sync.source_engines import SourceEngine, open_engine, quote

if TYPE_CHECKING:
    from audiencesync.sync.row_batches import RowBatch

_TRUE = {"1", "true", "yes", "y", "granted", "t"}
_FALSE = {"0", "false", "no", "n", "denied", "f"}


@dataclass(frozen=True)
class SourceRow:
    profile_id: str
    raw: Mapping[str, str | None]
    """Identifier kind -> raw value (None when absent)."""
    consent: bool | None
    changed_at: float | None
    member_of: int = 1
    """Bit ``1 << i`` set when the row is in the i-th audience of a scan that serves several."""


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
    """True granted, False denied, None for empty or a value of no built-in meaning (see
    ``classify_consent``, which the reader uses, for the source's own vocabulary)."""
    return {ConsentValue.GRANTED: True, ConsentValue.DENIED: False}.get(classify_consent(value))


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


class ConsentValue(Enum):
    GRANTED = "granted"
    DENIED = "denied"
    UNKNOWN = "unknown"
    """Empty or missing: the source does not say."""
    UNRECOGNISED = "unrecognised"
    """A value that is neither known-granted nor known-denied."""


def classify_consent(value: Any, source: SourceConfig | None = None) -> ConsentValue:
    """What a consent value means, with the source's own ``consent_granted_values`` and
    ``consent_denied_values`` on top of the built-in ones."""
    if value is None or value == "":
        return ConsentValue.UNKNOWN
    if isinstance(value, bool):
        return ConsentValue.GRANTED if value else ConsentValue.DENIED
    text = str(value).strip().lower()
    if text == "":
        return ConsentValue.UNKNOWN
    if source is not None and text in source.consent_denied_values:
        return ConsentValue.DENIED
    if source is not None and text in source.consent_granted_values:
        return ConsentValue.GRANTED
    if text in _TRUE:
        return ConsentValue.GRANTED
    if text in _FALSE:
        return ConsentValue.DENIED
    return ConsentValue.UNRECOGNISED


# An unrecognised value is never taken as granted: `validate` and `sync` refuse a source holding
# one, and should one appear between that check and the read, the profile is left out as denied.
_CONSENT_FLAG = {
    ConsentValue.GRANTED: True,
    ConsentValue.DENIED: False,
    ConsentValue.UNKNOWN: None,
    ConsentValue.UNRECOGNISED: False,
}


def consent_flag(value: Any, source: SourceConfig) -> bool | None:
    """A consent value as the planner takes it: True granted, False denied (or unrecognised), None
    unknown."""
    return _CONSENT_FLAG[classify_consent(value, source)]


def audience_condition(source: SourceConfig, audience: AudienceConfig) -> tuple[str | None, list[Any]]:
    """The WHERE condition of an audience without a ``query`` (None: every row), in SQL that SQLite
    and DuckDB both run. An in-flow tag is pre-filtered here and matched exactly by ``RowMapper``
    (tags may be JSON or comma-separated text)."""
    clauses: list[str] = []
    params: list[Any] = []
    if audience.stage is not None and source.stage_column:
        clauses.append(f"{quote(source.stage_column)} = ?")
        params.append(audience.stage)
    if audience.in_flow is not None and source.in_flow_column:
        clauses.append(f"CAST({quote(source.in_flow_column)} AS TEXT) LIKE ?")
        params.append(f"%{audience.in_flow}%")
    if audience.flag is not None:
        # True in the column's own terms: 1, true, or text such as 'yes'.
        column = f"lower(trim(CAST({quote(audience.flag)} AS TEXT)))"
        clauses.append(f"{column} IN ({', '.join('?' for _ in _FLAG_TRUE)})")
        params.extend(_FLAG_TRUE)
    if audience.where is not None:
        clauses.append(f"({audience.where})")
    return (" AND ".join(clauses) if clauses else None), params


def audience_sql(
    source: SourceConfig, audience: AudienceConfig, relation: str, columns: str = "*"
) -> tuple[str, list[Any]]:
    """The SELECT of ``columns`` for an audience's candidate rows."""
    if audience.query is not None:
        return audience.query, []
    condition, params = audience_condition(source, audience)
    where = f" WHERE {condition}" if condition else ""
    return f"SELECT {columns} FROM {relation}{where}", params


def selected_columns(engine: SourceEngine, source: SourceConfig) -> str:
    """The select list of a plan's read: only the columns the planner uses (reading a wide table's
    other columns costs as much as the rest of a no-change plan). A JSONL view reads every key."""
    if source.kind == "jsonl":
        return "*"
    wanted = [source.id_column, *source.identifiers.values(), source.consent_column]
    wanted += [source.changed_at_column, source.in_flow_column]
    present = set(engine.columns())
    return ", ".join(quote(c) for c in dict.fromkeys(c for c in wanted if c and c in present))


_FLAG_TRUE = ("1", "true", "t", "yes", "y")


class RowMapper:
    """Turns a mapping of column -> value into a SourceRow, applying the exact in-flow match."""

    def __init__(self, source: SourceConfig, audience: AudienceConfig, where: str) -> None:
        self.source = source
        self.audience = audience
        self.where = where

    def matches(self, row: Mapping[str, Any]) -> bool:
        tag = self.audience.in_flow
        if self.audience.query is None and tag is not None and self.source.in_flow_column:
            return tag in parse_tags(row.get(self.source.in_flow_column))
        return True

    def to_row(self, row: Mapping[str, Any], line: int, member_of: int = 1) -> SourceRow:
        pid = row.get(self.source.id_column)
        if pid is None or str(pid).strip() == "":
            raise SourceError(
                f"{self.where} row {line}", f"column {self.source.id_column!r} is empty or missing"
            )
        raw: dict[str, str | None] = {}
        for kind, column in self.source.identifiers.items():
            value = row.get(column)
            raw[kind] = None if value is None or value == "" else str(value)
        consent = (
            consent_flag(row.get(self.source.consent_column), self.source)
            if self.source.consent_column
            else None
        )
        changed = (
            parse_timestamp(row.get(self.source.changed_at_column)) if self.source.changed_at_column else None
        )
        return SourceRow(str(pid), raw, consent, changed, member_of)


def read_audience(source: SourceConfig, audience: AudienceConfig) -> Iterator[SourceRow]:
    """Stream the members of ``audience``. Raises ``SourceError`` naming the file and row or query."""
    if source.kind == "sql":
        from audiencesync.sync.sql_source import read_sql_audience

        return read_sql_audience(source, audience)
    engine = open_engine(source)
    return _read(engine, source, audience)


def read_audience_batches(source: SourceConfig, audience: AudienceConfig) -> Iterator[RowBatch]:
    """``read_audience`` in column batches (``audiencesync.sync.row_batches``), as the planner reads."""
    from audiencesync.sync.row_batches import batches_of

    if source.kind == "sql":
        from audiencesync.sync.sql_source import read_sql_audience

        return batches_of(read_sql_audience(source, audience))
    return _read_batches(open_engine(source), source, audience)


def _read(engine: SourceEngine, source: SourceConfig, audience: AudienceConfig) -> Iterator[SourceRow]:
    for batch in _read_batches(engine, source, audience):
        yield from batch.rows()


def _read_batches(engine: SourceEngine, source: SourceConfig, audience: AudienceConfig) -> Iterator[RowBatch]:
    from audiencesync.sync.row_batches import from_tuples

    where = f"{source.path}" if audience.query is None else f"{source.path} (audiences.{audience.name}.query)"
    if audience.where is not None:
        where = f"{source.path} (audiences.{audience.name}.where)"
    needed = [source.id_column, *source.identifiers.values()]
    mapper = RowMapper(source, audience, where)
    tag = audience.in_flow if audience.query is None and source.in_flow_column else None
    try:
        # A JSONL key that no line holds reads as null in every line: the row check names it.
        if audience.query is None and source.kind != "jsonl":
            require_columns(needed, engine.columns(), source, where)
        columns = "*" if audience.query is not None else selected_columns(engine, source)
        sql, params = audience_sql(source, audience, engine.relation, columns)
        line = 0
        for names, batch in engine.tuples(sql, params, where):
            if line == 0 and batch:
                require_columns(needed, list(names), source, where)
            first = line + 1
            line += len(batch)
            if tag is not None:
                # The exact tag match; row numbers count every row the query returned.
                j = names.index(source.in_flow_column or "")
                kept = [n for n, row in enumerate(batch) if tag in parse_tags(row[j])]
                if kept:
                    rows = [batch[n] for n in kept]
                    yield from_tuples(mapper, names, rows, first, lines=[first + n for n in kept])
            elif batch:
                yield from_tuples(mapper, names, batch, first)
    finally:
        engine.close()


def require_columns(needed: list[str], columns: list[str], source: SourceConfig, where: str) -> None:
    """Raise ``SourceError`` naming the configured columns the source does not have."""
    missing = [c for c in needed if c not in columns]
    if missing:
        label = f"{where} header" if source.kind == "csv" else where
        what = "no column(s)" if source.kind == "csv" else "the result has no column(s)"
        raise SourceError(label, f"{what} {', '.join(missing)}")
