"""One pass over the source for several audiences, and the read of an incremental plan.

Audiences defined over the source's own table (stage, in-flow tag, flag, ``where``) are read by one
query: its WHERE is the OR of their conditions and each audience adds a 0/1 column saying whether
the row is in it, which becomes a bit of ``SourceRow.member_of``. An audience with a ``query`` or a
dbt ``model`` of its own reads its own rows, and so does every audience of a ``sql`` source (its
statements are built by ``audiencesync.sync.sql_source``), one scan each.

An incremental read asks for the rows whose ``changed_at_column`` is at or after a time, whether in
an audience or not (a row that left an audience is a remove), and rows with no change time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.row_batches import RowBatch, from_tuples
from audiencesync.sync.source_engines import SourceEngine, open_engine, quote
from audiencesync.sync.sources import (
    RowMapper,
    audience_condition,
    parse_tags,
    parse_timestamp,
    read_audience_batches,
    require_columns,
    selected_columns,
)

_MEMBER = "__audiencesync_in_{}"
# A text change time is compared by its date in SQL, a day early so that any UTC offset is covered;
# the exact comparison is made on the parsed time.
_TEXT_SLACK_S = 86_400.0


def scan_groups(source: SourceConfig, audiences: Sequence[AudienceConfig]) -> list[list[AudienceConfig]]:
    """The audiences, grouped by the scan that reads them."""
    if source.kind == "sql":
        return [[a] for a in audiences]
    shared = [a for a in audiences if a.query is None and a.model is None]
    return ([shared] if shared else []) + [
        [a] for a in audiences if a.query is not None or a.model is not None
    ]


def scans_changes(source: SourceConfig, audiences: Sequence[AudienceConfig]) -> bool:
    """Whether these audiences can be planned from the source's changed rows alone: an audience's own
    query cannot be asked for the rows that left it."""
    return source.kind != "sql" and all(a.query is None and a.model is None for a in audiences)


def read_scan(
    source: SourceConfig, audiences: Sequence[AudienceConfig], *, changed_since: float | None = None
) -> Iterator[RowBatch]:
    """Stream the rows of ``audiences`` (one scan group), ``member_of`` bit ``1 << i`` marking the
    i-th audience. With ``changed_since``, the rows changed since then instead, in an audience or not."""
    if len(audiences) == 1 and changed_since is None:
        return read_audience_batches(source, audiences[0])
    assert scans_changes(source, audiences) or changed_since is None
    assert source.kind != "sql" and all(a.query is None for a in audiences), "one scan reads the table"
    return _read(open_engine(source), source, list(audiences), changed_since)


def _read(
    engine: SourceEngine, source: SourceConfig, audiences: list[AudienceConfig], changed_since: float | None
) -> Iterator[RowBatch]:
    where = str(source.path)
    try:
        flags: list[str] = []
        flag_params: list[Any] = []
        conditions: list[str] = []
        for i, audience in enumerate(audiences):
            condition, params = audience_condition(source, audience)
            condition = condition or "1 = 1"
            flags.append(f"CASE WHEN {condition} THEN 1 ELSE 0 END AS {quote(_MEMBER.format(i))}")
            flag_params += params
            conditions.append(f"({condition})")
        if changed_since is None:
            filter_sql, filter_params = " OR ".join(conditions), list(flag_params)
        else:
            filter_sql, filter_params = _changed_filter(engine, source, changed_since, where)
        sql = f"SELECT {selected_columns(engine, source)}, {', '.join(flags)} FROM {engine.relation} WHERE {filter_sql}"
        mappers = [RowMapper(source, a, where) for a in audiences]
        needed = [source.id_column, *source.identifiers.values()]
        if source.kind != "jsonl":
            require_columns(needed, engine.columns(), source, where)
        flag_names = [_MEMBER.format(i) for i in range(len(audiences))]
        line = 0
        for names, batch in engine.tuples(sql, flag_params + filter_params, where):
            if line == 0 and batch:
                require_columns(needed, list(names), source, where)
            first = line + 1
            line += len(batch)
            bits = [0] * len(batch)
            for i, flag in enumerate(flag_names):
                bit, j = 1 << i, names.index(flag)
                tag = audiences[i].in_flow if source.in_flow_column else None
                tags_at = (
                    names.index(source.in_flow_column) if tag is not None and source.in_flow_column else -1
                )
                for n, row in enumerate(batch):
                    if row[j] and (tag is None or tag in parse_tags(row[tags_at])):
                        bits[n] |= bit
            if changed_since is None:
                keep = [n for n in range(len(batch)) if bits[n]]
            else:
                # The SQL filter is coarse for text times: the exact comparison is on the parsed time.
                c = names.index(source.changed_at_column or "")
                keep = [
                    n
                    for n, row in enumerate(batch)
                    if (t := parse_timestamp(row[c])) is None or t >= changed_since
                ]
            if keep:
                rows = [batch[n] for n in keep]
                yield from_tuples(
                    mappers[0], names, rows, first, [bits[n] for n in keep], lines=[first + n for n in keep]
                )
    finally:
        engine.close()


def _changed_filter(
    engine: SourceEngine, source: SourceConfig, since: float, where: str
) -> tuple[str, list[Any]]:
    """A WHERE for the rows changed at or after ``since`` (and those with no change time), in the
    column's own representation: epoch numbers compare as numbers, ISO text by its date. Only
    a numeric column read through an index on it makes the read narrow on a large table."""
    assert source.changed_at_column is not None
    column = quote(source.changed_at_column)
    sample = next(
        iter(
            engine.batches(
                f"SELECT {column} AS v FROM {engine.relation} WHERE {column} IS NOT NULL LIMIT 1", [], where
            )
        ),
        [],
    )
    value = sample[0]["v"] if sample else None
    if value is None:
        return f"{column} IS NULL", []
    if isinstance(value, int | float) and not isinstance(value, bool):
        # In SQLite a text value sorts after every number, so a stray text time is read too.
        return f"({column} >= ? OR {column} IS NULL)", [since]
    # ISO 8601 text compares by its date; a value of any other shape is read and compared exactly.
    day = datetime.fromtimestamp(since - _TEXT_SLACK_S, UTC).strftime("%Y-%m-%d")
    text = f"CAST({column} AS TEXT)"
    return f"({text} >= ? OR {text} NOT LIKE '____-__-__%' OR {column} IS NULL)", [day]
