"""One SQL engine per source kind, behind one small protocol, so an audience definition (stage,
in-flow tag, flag column, ``where`` expression or ``query``) means the same thing for every kind.

SQLite files are read by SQLite itself. CSV, JSONL and Parquet files are read by DuckDB, which
exposes the file as a view named after ``[source] table`` (``profiles`` by default), so an audience's
``query`` is written once for any kind; a DuckDB database file is opened read-only and ``[source]
table`` names one of its tables. A new kind plugs in by providing a ``SourceEngine`` and an entry in
``ENGINES`` (``kind = "sql"`` sources go through SQLAlchemy instead: ``audiencesync.sync.sql_source``).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import duckdb
from audiencesync.sync.config import SourceConfig
from audiencesync.sync.errors import SourceError

BATCH_ROWS = 5000


def quote(name: str) -> str:
    """A SQL identifier, quoted the way both SQLite and DuckDB read it."""
    return '"' + name.replace('"', '""') + '"'


class SourceEngine(Protocol):
    """A read-only SQL view of one source: the profile table is ``relation``."""

    relation: str

    def columns(self) -> list[str]:
        """The columns the source holds, in its order."""
        ...

    def batches(self, sql: str, params: Sequence[Any], where: str) -> Iterator[list[dict[str, Any]]]:
        """Run ``sql`` and yield its rows in batches (memory stays flat). ``where`` names the query
        in errors."""
        ...

    def tuples(self, sql: str, params: Sequence[Any], where: str) -> Iterator[tuple[list[str], list[Any]]]:
        """``batches`` as the column names and the rows as tuples, for the planner's hot path."""
        ...

    def close(self) -> None: ...


class SqliteEngine:
    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.relation = quote(source.table)
        try:
            self.conn = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise SourceError(str(source.path), f"cannot open the profile database: {exc}") from None

    def columns(self) -> list[str]:
        try:
            rows = self.conn.execute(f"SELECT name FROM pragma_table_info({quote(self.source.table)})")
            names = [str(r[0]) for r in rows]
        except sqlite3.Error as exc:
            raise SourceError(str(self.source.path), f"cannot read the profile table: {exc}") from None
        if not names:
            raise SourceError(f"{self.source.path}", f"no table {self.source.table!r} (check source.table)")
        return names

    def batches(self, sql: str, params: Sequence[Any], where: str) -> Iterator[list[dict[str, Any]]]:
        return as_mappings(self.tuples(sql, params, where))

    def tuples(self, sql: str, params: Sequence[Any], where: str) -> Iterator[tuple[list[str], list[Any]]]:
        try:
            cursor = self.conn.execute(sql, list(params))
            names = [d[0] for d in cursor.description or ()]
            while rows := cursor.fetchmany(BATCH_ROWS):
                yield names, rows
        except sqlite3.Error as exc:
            raise SourceError(where, f"SQL error: {exc}") from None

    def close(self) -> None:
        self.conn.close()


class DuckFileEngine:
    """A CSV or JSONL export as a DuckDB view. Configured columns (ids, identifiers, stage, tags,
    consent, change time) are read as text so that, say, a zip code keeps its leading zero; other
    columns keep the types DuckDB detects, so ``where = "lifetime_value > 500"`` compares numbers."""

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.relation = quote(source.table)
        self.conn = duckdb.connect(":memory:")
        path = str(source.path).replace("'", "''")
        if source.kind == "csv":
            header = _csv_header(source)
            dialect = f"'{path}', header=true, delim=',', quote='\"', escape='\"', skip=0"
            detected = self._detect(f"read_csv({dialect})")
            names = header
            types = {n: t for n, t in detected if n in header} if [n for n, _ in detected] == header else {}
            reader = f"read_csv({dialect}, auto_detect=false, strict_mode=true, columns={{{{columns}}}})"
        else:
            reader_opts = f"'{path}', format='newline_delimited', records=true"
            # An export with no lines is an empty audience (the breaker's concern), not an error.
            detected = self._detect(f"read_json({reader_opts})") if _has_content(source) else []
            names = [n for n, _ in detected]
            types = dict(detected)
            reader = f"read_json({reader_opts}, columns={{{{columns}}}})"
        self._names = names
        text_columns = _configured_columns(source)
        spec = ", ".join(
            f"'{n.replace(chr(39), chr(39) * 2)}': '{'VARCHAR' if n in text_columns else types.get(n, 'VARCHAR')}'"
            for n in names
        )
        # A JSONL key that no line has is a column of nulls, as it would be for each line alone.
        absent = "".join(
            f", NULL::VARCHAR AS {quote(c)}"
            for c in sorted(text_columns)
            if c not in names and source.kind == "jsonl"
        )
        if names:
            select = f"SELECT *{absent} FROM {reader.replace('{{columns}}', '{' + spec + '}')}"
        else:
            nulls = ", ".join(f"NULL::VARCHAR AS {quote(c)}" for c in sorted(text_columns))
            select = f"SELECT {nulls} WHERE false"
        try:
            self.conn.execute(f"CREATE VIEW {self.relation} AS {select}")
        except duckdb.Error as exc:
            raise self._error(exc) from None

    def _detect(self, reader: str) -> list[tuple[str, str]]:
        try:
            return [
                (str(r[0]), str(r[1]))
                for r in self.conn.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
            ]
        except duckdb.Error as exc:
            if self.source.kind == "jsonl":
                raise self._error(exc) from None
            return []  # a malformed CSV: read it strictly as text, which names the bad line

    def columns(self) -> list[str]:
        return list(self._names)

    def batches(self, sql: str, params: Sequence[Any], where: str) -> Iterator[list[dict[str, Any]]]:
        return as_mappings(self.tuples(sql, params, where))

    def tuples(self, sql: str, params: Sequence[Any], where: str) -> Iterator[tuple[list[str], list[Any]]]:
        return _duck_tuples(self.conn, sql, params, lambda exc: self._error(exc, where))

    def _error(self, exc: duckdb.Error, where: str | None = None) -> SourceError:
        """DuckDB's message, or, when the file itself is malformed, the line and what is wrong
        with it, found by reading the file again (only on this error path)."""
        locate: Callable[[SourceConfig], SourceError | None] = (
            _locate_csv_error if self.source.kind == "csv" else _locate_jsonl_error
        )
        if isinstance(exc, duckdb.InvalidInputException | duckdb.ConversionException):
            found = locate(self.source)
            if found is not None:
                return found
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SourceError(where or str(self.source.path), first)

    def close(self) -> None:
        self.conn.close()


def _configured_columns(source: SourceConfig) -> set[str]:
    named = [source.id_column, source.stage_column, source.in_flow_column, source.consent_column]
    named += [source.changed_at_column, *source.identifiers.values()]
    return {c for c in named if c}


def _has_content(source: SourceConfig) -> bool:
    """True when the file holds anything but whitespace (and a BOM); reads only as far as needed."""
    with source.path.open("rb") as handle:
        while chunk := handle.read(65536):
            if chunk.replace(b"\xef\xbb\xbf", b"").strip():
                return True
    return False


def _csv_header(source: SourceConfig) -> list[str]:
    try:
        with source.path.open(newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError:
        raise SourceError(str(source.path), "not UTF-8 text") from None
    except csv.Error as exc:
        raise SourceError(f"{source.path} line 1", f"unreadable CSV: {exc}") from None


def _locate_csv_error(source: SourceConfig) -> SourceError | None:
    where = str(source.path)
    try:
        with source.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, strict=True)
            for row in reader:
                if None in row:
                    return SourceError(f"{where} line {reader.line_num}", "more fields than the header has")
    except csv.Error as exc:
        return SourceError(f"{where} line {getattr(exc, 'line_num', '?')}", f"unreadable CSV: {exc}")
    except UnicodeDecodeError:
        return SourceError(where, "not UTF-8 text")
    return None


def _locate_jsonl_error(source: SourceConfig) -> SourceError | None:
    where = str(source.path)
    try:
        with source.path.open(encoding="utf-8-sig") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    return SourceError(f"{where} line {number}", f"not valid JSON ({exc.msg})")
                if not isinstance(row, dict):
                    return SourceError(f"{where} line {number}", "each line must be a JSON object")
    except UnicodeDecodeError:
        return SourceError(where, "not UTF-8 text")
    return None


class DuckRelationEngine:
    """A Parquet file as a DuckDB view, or a table of a DuckDB database file opened read-only. Both
    carry their own column types, which are kept: there is no text to mis-type, unlike CSV."""

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        path = str(source.path).replace("'", "''")
        try:
            if source.kind == "parquet":
                self.conn = duckdb.connect(":memory:")
                self.relation = quote(source.table)
                # read_parquet reads only the row groups and columns a query needs.
                self.conn.execute(f"CREATE VIEW {self.relation} AS SELECT * FROM read_parquet('{path}')")
            else:
                # Read-only: a sync never writes to the user's database, and it takes no write lock.
                self.conn = duckdb.connect(str(source.path), read_only=True)
                self.relation = ".".join(quote(p) for p in source.table.split(".") if p)
            described = self.conn.execute(f"DESCRIBE SELECT * FROM {self.relation}").fetchall()
        except duckdb.CatalogException:
            raise SourceError(
                str(source.path), f"no table {source.table!r} in the database (check source.table)"
            ) from None
        except duckdb.Error as exc:
            raise SourceError(
                str(source.path), f"cannot read the {source.kind} file: {_first(exc)}"
            ) from None
        self._names = [str(r[0]) for r in described]

    def columns(self) -> list[str]:
        return list(self._names)

    def batches(self, sql: str, params: Sequence[Any], where: str) -> Iterator[list[dict[str, Any]]]:
        return as_mappings(self.tuples(sql, params, where))

    def tuples(self, sql: str, params: Sequence[Any], where: str) -> Iterator[tuple[list[str], list[Any]]]:
        return _duck_tuples(self.conn, sql, params, lambda exc: SourceError(where, _first(exc)))

    def close(self) -> None:
        self.conn.close()


def as_mappings(batches: Iterator[tuple[list[str], list[Any]]]) -> Iterator[list[dict[str, Any]]]:
    """Batches of (column names, rows) as batches of one mapping per row."""
    for names, rows in batches:
        yield [dict(zip(names, row, strict=True)) for row in rows]


def _duck_tuples(
    conn: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any],
    error: Callable[[duckdb.Error], SourceError],
) -> Iterator[tuple[list[str], list[Any]]]:
    try:
        result = conn.execute(sql, list(params))
        names = [d[0] for d in result.description or ()]
        while rows := result.fetchmany(BATCH_ROWS):
            yield names, rows
    except duckdb.Error as exc:
        raise error(exc) from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


ENGINES: dict[str, Callable[[SourceConfig], SourceEngine]] = {
    "sqlite": SqliteEngine,
    "csv": DuckFileEngine,
    "jsonl": DuckFileEngine,
    "parquet": DuckRelationEngine,
    "duckdb": DuckRelationEngine,
}


def open_engine(source: SourceConfig) -> SourceEngine:
    """The engine for ``source.kind``. Raises ``SourceError`` when the source cannot be opened."""
    if not source.path.exists():
        raise SourceError(str(source.path), "source file not found (check [source] path)")
    if source.path.is_dir():
        raise SourceError(str(source.path), "is a directory; [source] path must name a file")
    return ENGINES[source.kind](source)
