"""Check a config against its real source: the columns it names exist, and the values in them mean
what the audiences assume. ``validate`` renders the report; ``sync`` refuses to plan when it has
errors. Never prints.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from audiencesync.sync.config import AudienceConfig, Config, SourceConfig
from audiencesync.sync.errors import SourceError
from audiencesync.sync.source_engines import ENGINES, SourceEngine, open_engine, quote
from audiencesync.sync.sources import ConsentValue, RowMapper, audience_sql, classify_consent, parse_tags
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


def check_source(config: Config, audiences: Iterable[AudienceConfig] | None = None) -> SourceReport:
    """Open the source and check it for ``audiences`` (default: every configured one)."""
    source = config.source
    chosen = list(config.audiences.values()) if audiences is None else list(audiences)
    if source.kind not in ENGINES:
        # The SQL source (sync/sql_source.py) is checked as it is read: a missing column or a bad
        # query fails that read with its audience's key path. Its columns and values are not
        # counted up front yet; say so rather than report a check that did not happen.
        report = SourceReport(source=source.table, kind=source.kind)
        report.warnings.append(
            f"{source.kind} source: columns and values are checked when each audience is read, not before"
        )
        return report
    report = SourceReport(source=str(source.path), kind=source.kind)
    try:
        engine = open_engine(source)
    except SourceError as exc:
        report.errors.append(str(exc))
        return report
    try:
        report.columns = engine.columns()
        if not report.columns and source.kind == "jsonl":
            report.warnings.append(f"{source.path}: no rows, so no columns to check")
            return report
        if _check_columns(source, chosen, report):
            _count_values(engine, source, report)
            for audience in chosen:
                _count_audience(engine, source, audience, report)
    except SourceError as exc:
        report.errors.append(str(exc))
    finally:
        engine.close()
    return report


def _configured(source: SourceConfig, audiences: Sequence[AudienceConfig]) -> list[tuple[str, str]]:
    """(key path, column) for every column the config names."""
    named: list[tuple[str, str | None]] = [
        ("source.id_column", source.id_column),
        ("source.stage_column", source.stage_column),
        ("source.in_flow_column", source.in_flow_column),
        ("source.consent_column", source.consent_column),
        ("source.changed_at_column", source.changed_at_column),
    ]
    named += [(f"source.identifiers.{kind}", column) for kind, column in source.identifiers.items()]
    named += [(f"audiences.{a.name}.flag", a.flag) for a in audiences]
    return [(path, column) for path, column in named if column]


def _check_columns(source: SourceConfig, audiences: Sequence[AudienceConfig], report: SourceReport) -> bool:
    """Report every configured column the source lacks, at once. True when none is missing."""
    present = report.columns
    for path, column in _configured(source, audiences):
        if column in present:
            continue
        close = difflib.get_close_matches(column, present, n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        report.errors.append(
            f"{path}: no column {column!r} in {source.path} (it has {', '.join(present) or 'no columns'}){hint}"
        )
    return not report.errors


def _count_values(engine: SourceEngine, source: SourceConfig, report: SourceReport) -> None:
    rel = engine.relation
    where = str(source.path)
    for batch in engine.batches(f"SELECT count(*) AS n FROM {rel}", [], where):
        report.rows = int(batch[0]["n"])
    idc = quote(source.id_column)
    sql = f"SELECT count(*) AS n FROM (SELECT {idc} FROM {rel} GROUP BY {idc} HAVING count(*) > 1) d"
    for batch in engine.batches(sql, [], where):
        report.duplicate_ids = int(batch[0]["n"])
    if report.duplicate_ids:
        report.warnings.append(
            f"source.id_column: {report.duplicate_ids} profile id(s) appear on more than one row "
            "(the last row of each is used)"
        )
    if source.stage_column:
        report.stage_values = _grouped(engine, source.stage_column, where)
    if source.consent_column:
        _count_consent(engine, source, report, where)
    if source.in_flow_column or source.changed_at_column:
        _scan_tags_and_times(engine, source, report, where)


def _grouped(engine: SourceEngine, column: str, where: str) -> dict[str, int]:
    col = quote(column)
    sql = f"SELECT {col} AS v, count(*) AS n FROM {engine.relation} GROUP BY {col} ORDER BY n DESC"
    out: dict[str, int] = {}
    for batch in engine.batches(sql, [], where):
        for row in batch:
            out["" if row["v"] is None else str(row["v"])] = int(row["n"])
    return out


def _count_consent(engine: SourceEngine, source: SourceConfig, report: SourceReport, where: str) -> None:
    assert source.consent_column
    counts: Counter[str] = Counter()
    unrecognised: Counter[str] = Counter()
    for value, n in _grouped(engine, source.consent_column, where).items():
        meaning = classify_consent(value, source)
        counts[meaning.value] += n
        if meaning is ConsentValue.UNRECOGNISED:
            unrecognised[value] += n
    report.consent = {m.value: counts[m.value] for m in ConsentValue}
    report.unrecognised_consent = dict(unrecognised.most_common(SHOWN_VALUES))
    if unrecognised:
        shown = ", ".join(f"{v!r} ({n})" for v, n in unrecognised.most_common(SHOWN_VALUES))
        report.errors.append(
            f"source.consent_column: {sum(unrecognised.values())} profile(s) have a consent value that "
            f"means neither granted nor denied: {shown}. List each under source.consent_denied_values "
            "or source.consent_granted_values"
        )


def _scan_tags_and_times(
    engine: SourceEngine, source: SourceConfig, report: SourceReport, where: str
) -> None:
    cols = [c for c in (source.in_flow_column, source.changed_at_column) if c]
    sql = f"SELECT {', '.join(quote(c) for c in cols)} FROM {engine.relation}"
    tags: Counter[str] = Counter()
    bad_times = 0
    for batch in engine.batches(sql, [], where):
        for row in batch:
            if source.in_flow_column:
                tags.update(parse_tags(row[source.in_flow_column]))
            if source.changed_at_column:
                value = row[source.changed_at_column]
                if value not in (None, "") and _parse_timestamp(value) is None:
                    bad_times += 1
    report.in_flow_values = dict(tags.most_common())
    report.unparseable_changed_at = bad_times
    if bad_times:
        report.warnings.append(
            f"source.changed_at_column: {bad_times} value(s) are neither epoch seconds nor ISO 8601 "
            "(their changes get no lag record)"
        )


def _count_audience(
    engine: SourceEngine, source: SourceConfig, audience: AudienceConfig, report: SourceReport
) -> None:
    label = f"audiences.{audience.name}"
    sql, params = audience_sql(source, audience, engine.relation)
    mapper = RowMapper(source, audience, label)
    members = 0
    for batch in engine.batches(sql, params, f"{label}.{'query' if audience.query else 'where'}"):
        members += sum(1 for row in batch if mapper.matches(row))
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
