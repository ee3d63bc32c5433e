"""Check a config against its real source: the columns it names exist, and the values in them mean
what the audiences assume. ``validate`` renders the report; ``sync`` refuses to plan when it has
errors. Never prints.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from audiencesync.sync.config import AudienceConfig, Config, SourceConfig
from audiencesync.sync.errors import SourceError
from audiencesync.sync.source_engines import SourceEngine, open_engine, quote
from audiencesync.sync.sources import ConsentValue, audience_sql, classify_consent, parse_tags
from audiencesync.sync.sources import parse_timestamp as _parse_timestamp

SHOWN_VALUES = 10
"""How many distinct unrecognised values a report lists."""


@dataclass
class SourceReport:
    """What checking a source found. ``errors`` stop a sync; ``warnings`` do not."""

    source: str
    kind: str
    columns: list[str] = field(default_factory=list)
    rows: int = 0
    stage_values: dict[str, int] = field(default_factory=dict)
    in_flow_values: dict[str, int] = field(default_factory=dict)
    consent: dict[str, int] = field(default_factory=dict)
    """granted / denied / unknown / unrecognised -> profiles."""
    unrecognised_consent: dict[str, int] = field(default_factory=dict)
    duplicate_ids: int = 0
    """Profile ids that appear on more than one row."""
    unparseable_changed_at: int = 0
    audience_members: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# What Python's ``datetime.fromisoformat`` and ``float`` surely read (``parse_timestamp``). A value an
# engine cannot vouch for with these (and its own date parser, where it has one) is fetched, once
# per distinct value, and parsed by Python itself, so the count is Python's.
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}([.,]\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


class CheckedRelation(Protocol):
    """One relation a check runs on (a table, a file, a dbt model, an audience's query), answering
    with aggregates computed where the data is: no row crosses into Python one by one."""

    label: str
    """Names the relation in messages (a path, or a redacted URL and a table; never a password)."""

    def columns(self) -> list[str]: ...

    def count(self) -> int: ...

    def duplicate_ids(self, id_column: str) -> int:
        """Ids that appear on more than one row."""
        ...

    def grouped(self, column: str) -> dict[Any, int]:
        """Each distinct value of ``column`` (as the database returns it) -> rows."""
        ...

    def suspicious_times(self, column: str) -> dict[Any, int]:
        """The distinct values of ``column`` that the engine cannot vouch for as a time -> rows."""
        ...

    def audience_count(self, audience: AudienceConfig) -> int:
        """Rows the audience's definition selects (before the exact in-flow match)."""
        ...

    def audience_in_flow(self, audience: AudienceConfig) -> dict[Any, int]:
        """The in-flow values of the audience's rows -> rows, for the exact tag match."""
        ...

    def close(self) -> None: ...


class FileRelation:
    """A file source (SQLite, CSV, JSONL, Parquet, DuckDB) through its engine, with SQL both SQLite
    and DuckDB run."""

    def __init__(self, engine: SourceEngine, source: SourceConfig) -> None:
        self.engine = engine
        self.source = source
        self.label = str(source.path)
        self.rel = engine.relation

    def _rows(self, sql: str, params: Sequence[Any] = (), where: str | None = None) -> list[dict[str, Any]]:
        return [row for batch in self.engine.batches(sql, params, where or self.label) for row in batch]

    def columns(self) -> list[str]:
        return list(self.engine.columns())

    def count(self) -> int:
        return int(self._rows(f"SELECT count(*) AS n FROM {self.rel}")[0]["n"])

    def duplicate_ids(self, id_column: str) -> int:
        idc = quote(id_column)
        sql = f"SELECT count(*) AS n FROM (SELECT {idc} FROM {self.rel} GROUP BY {idc} HAVING count(*) > 1) d"
        return int(self._rows(sql)[0]["n"])

    def grouped(self, column: str) -> dict[Any, int]:
        return self._group(self.rel, column, "")

    def _group(self, rel: str, column: str, where: str, params: Sequence[Any] = ()) -> dict[Any, int]:
        col = quote(column)
        sql = f"SELECT {col} AS v, count(*) AS n FROM {rel} {where} GROUP BY {col}"
        return {hashable(r["v"]): int(r["n"]) for r in self._rows(sql, params)}

    def suspicious_times(self, column: str) -> dict[Any, int]:
        col = quote(column)
        if self.source.kind == "sqlite":
            # SQLite's own parser: a value it reads as a date, and whose date it does not roll over
            # (2026-02-30 becomes March 2nd), is a time Python reads too.
            where = (
                f"WHERE typeof({col}) NOT IN ('null', 'integer', 'real') AND trim({col}) <> '' "
                f"AND (julianday({col}) IS NULL OR date({col}) IS NOT substr(trim({col}), 1, 10))"
            )
        else:
            text = f"trim(CAST({col} AS VARCHAR))"
            where = (
                f"WHERE {col} IS NOT NULL AND {text} <> '' AND NOT regexp_full_match({text}, '{NUMBER}') "
                f"AND NOT (regexp_full_match({text}, '{ISO_TIME}') AND TRY_CAST({text} AS TIMESTAMPTZ) IS NOT NULL)"
            )
        return self._group(self.rel, column, where)

    def _audience(self, audience: AudienceConfig) -> tuple[str, list[Any], str]:
        sql, params = audience_sql(self.source, audience, self.rel)
        where = f"audiences.{audience.name}.{'query' if audience.query else 'where'}"
        return f"({sql.strip().rstrip(';')}) AS q", params, where

    def audience_count(self, audience: AudienceConfig) -> int:
        rel, params, where = self._audience(audience)
        return int(self._rows(f"SELECT count(*) AS n FROM {rel}", params, where)[0]["n"])

    def audience_in_flow(self, audience: AudienceConfig) -> dict[Any, int]:
        assert self.source.in_flow_column
        rel, params, _ = self._audience(audience)
        return self._group(rel, self.source.in_flow_column, "", params)

    def close(self) -> None:
        self.engine.close()


def hashable(value: Any) -> Any:
    """A grouped value as a dict key: a list of tags (a Parquet or DuckDB list, a Postgres array)
    becomes a tuple, a JSON document its canonical text."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


@dataclass
class CheckScope:
    """A relation and what to check on it: every configured column for a table or a dbt model, and
    only what an audience's ``query`` must return for a query."""

    relation: CheckedRelation
    audiences: list[AudienceConfig]
    is_query: bool = False


def check_source(config: Config, audiences: Iterable[AudienceConfig] | None = None) -> SourceReport:
    """Open the source and check it for ``audiences`` (default: every configured one). Every count
    is an aggregate the source's own engine computes."""
    source = config.source
    chosen = list(config.audiences.values()) if audiences is None else list(audiences)
    if source.kind == "sql":
        from audiencesync.sync.sql_check import sql_label, sql_scopes

        report = SourceReport(source=sql_label(source), kind=source.kind)
        try:
            scopes = sql_scopes(source, chosen)
        except SourceError as exc:
            report.errors.append(str(exc))
            return report
    else:
        report = SourceReport(source=str(source.path), kind=source.kind)
        try:
            scopes = [CheckScope(FileRelation(open_engine(source), source), chosen)]
        except SourceError as exc:
            report.errors.append(str(exc))
            return report
    try:
        for index, scope in enumerate(scopes):
            try:
                _check_scope(scope, source, report, first=index == 0)
            except SourceError as exc:
                report.errors.append(str(exc))
    finally:
        for scope in scopes:
            scope.relation.close()
    return report


def _check_scope(scope: CheckScope, source: SourceConfig, report: SourceReport, *, first: bool) -> None:
    """Check one relation. The report's counts are those of the first relation (the source table,
    else the first model or query); every relation's problems are reported."""
    relation = scope.relation
    columns = relation.columns()
    if first:
        report.columns = columns
    if not columns and source.kind == "jsonl":
        report.warnings.append(f"{source.path}: no rows, so no columns to check")
        return
    if not _check_columns(source, scope, columns, report):
        return
    counts = SourceReport(source=relation.label, kind=source.kind)
    if scope.is_query:
        if source.consent_column:
            _count_consent(relation, source, counts)
    else:
        _count_values(relation, source, counts)
    for audience in scope.audiences:
        _count_audience(relation, source, audience, counts)
    report.audience_members.update(counts.audience_members)
    report.errors.extend(counts.errors)
    report.warnings.extend(counts.warnings)
    if first:
        report.rows = counts.rows
        report.stage_values = counts.stage_values
        report.in_flow_values = counts.in_flow_values
        report.consent = counts.consent
        report.unrecognised_consent = counts.unrecognised_consent
        report.duplicate_ids = counts.duplicate_ids
        report.unparseable_changed_at = counts.unparseable_changed_at


def _configured(source: SourceConfig, scope: CheckScope) -> list[tuple[str, str]]:
    """(key path, column) for every column the config names that this relation must have."""
    table_only = not scope.is_query
    named: list[tuple[str, str | None]] = [
        ("source.id_column", source.id_column),
        ("source.stage_column", source.stage_column if table_only else None),
        ("source.in_flow_column", source.in_flow_column if table_only else None),
        ("source.consent_column", source.consent_column),
        ("source.changed_at_column", source.changed_at_column if table_only else None),
    ]
    named += [(f"source.identifiers.{kind}", column) for kind, column in source.identifiers.items()]
    if table_only:
        named += [(f"audiences.{a.name}.flag", a.flag) for a in scope.audiences]
    return [(path, column) for path, column in named if column]


def _check_columns(source: SourceConfig, scope: CheckScope, present: list[str], report: SourceReport) -> bool:
    """Report every configured column the relation lacks, at once. True when none is missing."""
    found = False
    for path, column in _configured(source, scope):
        if column in present:
            continue
        found = True
        close = difflib.get_close_matches(column, present, n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        report.errors.append(
            f"{path}: no column {column!r} in {scope.relation.label} "
            f"(it has {', '.join(present) or 'no columns'}){hint}"
        )
    return not found


def _count_values(relation: CheckedRelation, source: SourceConfig, report: SourceReport) -> None:
    report.rows = relation.count()
    report.duplicate_ids = relation.duplicate_ids(source.id_column)
    if report.duplicate_ids:
        report.warnings.append(
            f"source.id_column: {report.duplicate_ids} profile id(s) appear on more than one row "
            f"of {relation.label} (the last row of each is used)"
        )
    if source.stage_column:
        grouped = relation.grouped(source.stage_column)
        report.stage_values = {
            "" if v is None else str(v): n for v, n in sorted(grouped.items(), key=lambda kv: -kv[1])
        }
    if source.consent_column:
        _count_consent(relation, source, report)
    if source.in_flow_column:
        tags: Counter[str] = Counter()
        for value, n in relation.grouped(source.in_flow_column).items():
            for tag in parse_tags(list(value) if isinstance(value, tuple) else value):
                tags[tag] += n
        report.in_flow_values = dict(tags.most_common())
    if source.changed_at_column:
        suspicious = relation.suspicious_times(source.changed_at_column)
        bad = sum(n for v, n in suspicious.items() if v not in (None, "") and _parse_timestamp(v) is None)
        report.unparseable_changed_at = bad
        if bad:
            report.warnings.append(
                f"source.changed_at_column: {bad} value(s) are neither epoch seconds nor ISO 8601 "
                "(their changes get no lag record)"
            )


def _count_consent(relation: CheckedRelation, source: SourceConfig, report: SourceReport) -> None:
    assert source.consent_column
    counts: Counter[str] = Counter()
    unrecognised: Counter[str] = Counter()
    for value, n in relation.grouped(source.consent_column).items():
        meaning = classify_consent(value, source)
        counts[meaning.value] += n
        if meaning is ConsentValue.UNRECOGNISED:
            unrecognised[str(value)] += n
    report.consent = {m.value: counts[m.value] for m in ConsentValue}
    report.unrecognised_consent = dict(unrecognised.most_common(SHOWN_VALUES))
    if unrecognised:
        shown = ", ".join(f"{v!r} ({n})" for v, n in unrecognised.most_common(SHOWN_VALUES))
        report.errors.append(
            f"source.consent_column: {sum(unrecognised.values())} profile(s) have a consent value that "
            f"means neither granted nor denied: {shown}. List each under source.consent_denied_values "
            "or source.consent_granted_values"
        )


def _count_audience(
    relation: CheckedRelation, source: SourceConfig, audience: AudienceConfig, report: SourceReport
) -> None:
    label = f"audiences.{audience.name}"
    if audience.query is None and audience.in_flow is not None and source.in_flow_column:
        # The exact tag match the reader makes (tags may be JSON or comma-separated text), once per
        # distinct in-flow value.
        members = sum(
            n
            for value, n in relation.audience_in_flow(audience).items()
            if audience.in_flow in parse_tags(list(value) if isinstance(value, tuple) else value)
        )
    else:
        members = relation.audience_count(audience)
    report.audience_members[audience.name] = members
    if members:
        return
    for key, value, present in (
        ("stage", audience.stage, report.stage_values),
        ("in_flow", audience.in_flow, report.in_flow_values),
    ):
        if value is not None and value not in present:
            close = difflib.get_close_matches(value, list(present), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            report.warnings.append(f"{label}.{key}: no profile has {value!r}{hint}")
            return
    report.warnings.append(f"{label}: matches no profile")
