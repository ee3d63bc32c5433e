"""The up-front check of a SQL source (``kind = "sql"``), as aggregates the database computes: row
and duplicate counts, ``GROUP BY`` counts of stage, in-flow and consent values, and the change times
it cannot vouch for. ``audiencesync.sync.source_check`` runs the same checks on every source kind;
this module gives it one ``CheckedRelation`` per relation the audiences read: the ``[source]
table``, each dbt model, and each audience's own ``query``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.errors import SourceError
from audiencesync.sync.source_check import ISO_TIME, NUMBER, CheckScope, hashable
from audiencesync.sync.sql_source import (
    SqlEngine,
    audience_statement,
    first_line,
    redacted_url,
    relation_sql,
)

# Dialects with a regular-expression operator that SQLAlchemy renders (``regexp_match``): there
# the database itself tells a time it surely reads from one Python must look at. Elsewhere every
# distinct value is fetched once and parsed by Python (exact, but each distinct value crosses).
REGEX_DIALECTS = frozenset({"postgresql", "redshift", "mysql", "mariadb"})


def sql_label(source: SourceConfig) -> str:
    return redacted_url(source.sql.url) if source.sql else "sql source"


class SqlRelation:
    """A table, a dbt model or a query of a SQL source, checked through SQLAlchemy statements."""

    def __init__(
        self, engine: SqlEngine, source: SourceConfig, relation: str, label: str, query: AudienceConfig | None
    ) -> None:
        from sqlalchemy import text

        self.engine = engine
        self.source = source
        self.relation = relation
        self.label = label
        self.query = query
        self.params: Mapping[str, Any] = dict(query.params) if query is not None else {}
        inner = query.query.strip().rstrip(";") if query is not None and query.query else ""
        self.from_: Any = text(f"({inner}) AS q") if query is not None else text(relation)

    def _all(self, statement: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        from sqlalchemy.exc import SQLAlchemyError

        conn = self.engine.connect()
        try:
            rows: Sequence[Any] = conn.execute(
                statement, dict(self.params if params is None else params)
            ).all()
            return rows
        except SQLAlchemyError as exc:
            raise SourceError(self.label, f"SQL error: {first_line(exc)}") from None
        finally:
            conn.close()

    def columns(self) -> list[str]:
        from sqlalchemy import false, select, text
        from sqlalchemy.exc import SQLAlchemyError

        conn = self.engine.connect()
        try:
            result = conn.execute(select(text("*")).select_from(self.from_).where(false()), dict(self.params))
            names = list(map(str, result.keys()))
            result.close()
            return names
        except SQLAlchemyError as exc:
            raise SourceError(self.label, f"SQL error: {first_line(exc)}") from None
        finally:
            conn.close()

    def count(self) -> int:
        from sqlalchemy import func, select

        return int(self._all(select(func.count()).select_from(self.from_))[0][0])

    def duplicate_ids(self, id_column: str) -> int:
        from sqlalchemy import column, func, select

        idc: Any = column(id_column)
        dupes = select(idc).select_from(self.from_).group_by(idc).having(func.count() > 1).subquery("d")
        return int(self._all(select(func.count()).select_from(dupes))[0][0])

    def grouped(self, name: str) -> dict[Any, int]:
        from sqlalchemy import column, func, select

        col: Any = column(name)
        statement = select(col, func.count()).select_from(self.from_).group_by(col)
        return {hashable(v): int(n) for v, n in self._all(statement)}

    def suspicious_times(self, name: str) -> dict[Any, int]:
        from sqlalchemy import String, and_, cast, column, func, not_, or_, select, text

        col: Any = column(name)
        dialect = self.engine.engine.dialect.name
        as_text = func.trim(cast(col, String))
        present = and_(col.is_not(None), as_text != "")
        if dialect in REGEX_DIALECTS:
            # A value of a timestamp type is cast to text the way the database prints it
            # (2026-01-01 00:00:00+00), which the pattern reads. The pattern checks the shape of a
            # time, not its range: 2026-02-30 passes here and the reader gives it no lag record.
            condition = and_(present, not_(or_(as_text.regexp_match(NUMBER), as_text.regexp_match(ISO_TIME))))
        elif dialect == "duckdb":
            t = f"trim(CAST({self._quoted(name)} AS VARCHAR))"
            condition = and_(
                present,
                text(
                    f"NOT regexp_full_match({t}, '{NUMBER}') AND NOT (regexp_full_match({t}, '{ISO_TIME}') "
                    f"AND TRY_CAST({t} AS TIMESTAMPTZ) IS NOT NULL)"
                ),
            )
        else:
            condition = present
        statement = select(col, func.count()).select_from(self.from_).where(condition).group_by(col)
        return {hashable(v): int(n) for v, n in self._all(statement)}

    def _quoted(self, name: str) -> str:
        return str(self.engine.engine.dialect.identifier_preparer.quote(name))

    def audience_count(self, audience: AudienceConfig) -> int:
        from sqlalchemy import func, select

        if audience.query is not None:
            return int(self._all(select(func.count()).select_from(self.from_), audience.params)[0][0])
        statement, params = audience_statement(self.engine.engine, self.source, audience, self.relation)
        return int(self._all(select(func.count()).select_from(statement.subquery("q")), params)[0][0])

    def audience_in_flow(self, audience: AudienceConfig) -> dict[Any, int]:
        from sqlalchemy import func, select

        assert self.source.in_flow_column
        statement, params = audience_statement(self.engine.engine, self.source, audience, self.relation)
        sub = statement.subquery("q")
        tags = sub.c[self.source.in_flow_column]
        grouped = select(tags, func.count()).group_by(tags)
        return {hashable(v): int(n) for v, n in self._all(grouped, params)}

    def close(self) -> None:
        self.engine.close()


def sql_scopes(source: SourceConfig, audiences: Sequence[AudienceConfig]) -> list[CheckScope]:
    """One scope per relation the audiences read: the ``[source] table`` first (when an audience
    reads it), then each dbt model, then each query."""
    engine = SqlEngine(source)
    where = redacted_url(source.sql.url) if source.sql else "sql source"
    scopes: list[CheckScope] = []
    try:
        on_table = [a for a in audiences if a.query is None and a.model is None]
        if on_table:
            scopes.append(
                CheckScope(
                    SqlRelation(engine, source, engine.relation, f"{where} {engine.relation}", None), on_table
                )
            )
        by_model: dict[str, list[AudienceConfig]] = {}
        for audience in audiences:
            if audience.query is None and audience.model is not None:
                from audiencesync.sync.dbt import model_relation

                manifest = source.sql.dbt_manifest if source.sql else None
                relation = relation_sql(engine.engine, model_relation(manifest, audience.model))
                by_model.setdefault(relation, []).append(audience)
        for relation, members in by_model.items():
            scopes.append(
                CheckScope(SqlRelation(engine, source, relation, f"{where} {relation}", None), members)
            )
        for audience in audiences:
            if audience.query is not None:
                label = f"{where} (audiences.{audience.name}.query)"
                relation_ = SqlRelation(engine, source, engine.relation, label, audience)
                scopes.append(CheckScope(relation_, [audience], is_query=True))
    except BaseException:
        engine.close()
        raise
    return scopes
