"""A SQL database or warehouse as the source (``kind = "sql"``), through any SQLAlchemy 2 dialect.

The URL comes from the environment (``url_env``), never the file. An audience reads ``[source]
table``, the relation of a dbt ``model`` (``audiencesync.sync.dbt``) or its own ``query`` with bound
``params``; only the columns the tool uses are selected. Rows are streamed: the connection asks for
a server-side cursor (``stream_results``) and fetches ``yield_per`` rows at a time, so memory stays
flat on dialects whose driver supports it (the README lists which do and which buffer).

SQLAlchemy and the drivers are optional extras, imported only here and only when a sql source is
read; a missing one is a one-line error naming the extra to install.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.errors import SourceError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

# URL backend -> the pip extra that installs its dialect and driver (pyproject.toml).
EXTRAS = {
    "postgresql": "postgres",
    "duckdb": "duckdb",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "redshift": "redshift",
    "databricks": "databricks",
    "mysql": "mysql",
}
# Values a ``flag`` column holds for true, compared as lower-case text so a boolean, an integer and a
# 'yes' all work on every dialect.
FLAG_TRUE = ("1", "true", "t", "yes", "y")


def _backend(url: str) -> str:
    return re.split(r"[+:]", url, maxsplit=1)[0].lower()


def redacted_url(url: str) -> str:
    """The URL's backend only: a URL can hold a password and must not reach a message."""
    return f"{_backend(url)}:// source"


def missing_driver(url: str, exc: BaseException) -> SourceError:
    backend = _backend(url)
    extra = EXTRAS.get(backend)
    hint = f"pip install 'audience-sync[{extra}]'" if extra else "install its SQLAlchemy dialect"
    name = getattr(exc, "name", None) or backend
    return SourceError(redacted_url(url), f"the {backend} driver is not installed ({name}); {hint}")


def _normalize_url(url: str) -> str:
    # Plain postgresql:// would pick psycopg2; the postgres extra installs psycopg 3.
    # Plain mysql:// would pick mysqlclient; the mysql extra installs PyMySQL.
    scheme, sep, rest = url.partition("://")
    default = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    return f"{default[scheme]}{sep}{rest}" if sep and scheme in default else url


def create_engine(url: str) -> Engine:
    """An engine for ``url``, or ``SourceError`` naming the extra when a driver is missing."""
    try:
        import sqlalchemy
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError as exc:
        raise missing_driver(url, exc) from None
    try:
        return sqlalchemy.create_engine(_normalize_url(url))
    except NoSuchModuleError as exc:
        raise missing_driver(url, exc) from None
    except ImportError as exc:
        raise missing_driver(url, exc) from None
    except ArgumentError:
        raise SourceError("source.url_env", "is not a SQLAlchemy URL (dialect+driver://...)") from None


def relation_sql(engine: Engine, parts: Sequence[str]) -> str:
    """``schema.table`` (or ``database.schema.table``), each part quoted by the dialect if needed."""
    preparer = engine.dialect.identifier_preparer
    return ".".join(preparer.quote(p) for p in parts if p)


def table_parts(table: str) -> list[str]:
    """``[source] table`` may name a schema (``analytics.customers``); dots split it."""
    return [p for p in table.split(".") if p]


def needed_columns(source: SourceConfig) -> list[str]:
    named = [source.id_column, *source.identifiers.values(), source.stage_column, source.in_flow_column]
    named += [source.consent_column, source.changed_at_column]
    return list(dict.fromkeys(c for c in named if c))


def audience_statement(
    engine: Engine, source: SourceConfig, audience: AudienceConfig, relation: str
) -> tuple[Any, dict[str, Any]]:
    """The statement reading an audience's candidate rows, and its bound parameters."""
    from sqlalchemy import String, and_, cast, column, func, select, text, true

    if audience.query is not None:
        return text(audience.query), dict(audience.params)
    clauses: list[Any] = []
    if audience.stage is not None and source.stage_column:
        clauses.append(column(source.stage_column) == audience.stage)
    if audience.in_flow is not None and source.in_flow_column:
        # A cheap pre-filter; the exact tag match happens in Python (tags may be JSON or CSV text).
        clauses.append(cast(column(source.in_flow_column), String).like(f"%{audience.in_flow}%"))
    if audience.flag is not None:
        clauses.append(func.lower(cast(column(audience.flag), String)).in_(FLAG_TRUE))
    if audience.where is not None:
        # The user's expression, in the database's own SQL dialect, as for the other source kinds.
        clauses.append(text(f"({audience.where})"))
    columns: list[Any] = [column(c) for c in needed_columns(source)]
    statement = select(*columns).select_from(text(relation)).where(and_(true(), *clauses))
    return statement, {}


class SqlEngine:
    """A read-only view of one SQL source: ``relation`` is its profile table."""

    def __init__(self, source: SourceConfig) -> None:
        if source.sql is None:
            raise SourceError("source", 'kind = "sql" needs url_env')
        self.source = source
        self.settings = source.sql
        self.engine = create_engine(source.sql.url)
        self.relation = relation_sql(self.engine, table_parts(source.table))
        self.where = redacted_url(source.sql.url)

    def connect(self) -> Connection:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            conn = self.engine.connect()
        except ImportError as exc:
            raise missing_driver(self.settings.url, exc) from None
        except SQLAlchemyError as exc:
            raise SourceError(self.where, f"cannot connect: {first_line(exc)}") from None
        options: dict[str, Any] = {"stream_results": True, "yield_per": self.settings.yield_per}
        if self.engine.dialect.name == "postgresql":
            options["postgresql_readonly"] = True
        return conn.execution_options(**options)

    def batches(
        self, statement: Any, params: Mapping[str, Any], where: str, required: Sequence[str]
    ) -> Iterator[list[Mapping[str, Any]]]:
        """Run ``statement``, check ``required`` columns are in its result, and yield its rows in
        batches of ``yield_per`` from a server-side cursor."""
        from sqlalchemy.exc import SQLAlchemyError

        conn = self.connect()
        result: Any = None
        try:
            try:
                result = conn.execute(statement, dict(params))
                names = list(result.keys())
            except SQLAlchemyError as exc:
                raise SourceError(where, f"SQL error: {first_line(exc)}") from None
            missing = [c for c in required if c not in names]
            if missing:
                raise SourceError(where, f"the result has no column(s) {', '.join(missing)}")
            try:
                # The size is passed again here: a Core result does not always carry the
                # connection's yield_per into partitions(), and without it fetches everything.
                for part in result.mappings().partitions(self.settings.yield_per):
                    yield list(part)
            except SQLAlchemyError as exc:
                raise SourceError(where, f"SQL error while reading: {first_line(exc)}") from None
        finally:
            # A reader that stops early (the breaker, an error downstream) closes the server-side
            # cursor before the connection, so the database frees it at once.
            if result is not None:
                result.close()
            conn.close()

    def close(self) -> None:
        self.engine.dispose()


def first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the statement and a docs link; the driver's own first line says what failed.
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_sql_audience(source: SourceConfig, audience: AudienceConfig) -> Iterator[Any]:
    """Stream the members of ``audience`` from a sql source as ``SourceRow``s."""
    from audiencesync.sync.sources import RowMapper

    engine = SqlEngine(source)
    try:
        if audience.model is not None:
            from audiencesync.sync.dbt import model_relation

            manifest = source.sql.dbt_manifest if source.sql else None
            relation = relation_sql(engine.engine, model_relation(manifest, audience.model))
        else:
            relation = engine.relation
        what = "query" if audience.query is not None else ("model" if audience.model else "")
        where = f"{engine.where} (audiences.{audience.name}.{what})" if what else f"{engine.where} {relation}"
        statement, params = audience_statement(engine.engine, source, audience, relation)
        mapper = RowMapper(source, audience, where)
        required = [source.id_column, *source.identifiers.values()]
        line = 0
        for batch in engine.batches(statement, params, where, required):
            for row in batch:
                line += 1
                if mapper.matches(row):
                    yield mapper.to_row(row, line)
    finally:
        engine.close()
