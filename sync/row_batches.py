"""Source rows in column batches: the form the planner reads them in.

A plan touches every source row but hashes few of them, so the per-row work is the cost of a plan:
a ``SourceRow`` object and its mapping per row cost more than fingerprinting the row. A batch holds
one list per column instead (ids, each identifier kind, consent, change time, audience bits), filled
by list comprehensions over the engine's rows; a row's mapping is built only when it is hashed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from audiencesync.sync.config import SourceConfig
from audiencesync.sync.sources import RowMapper, SourceRow, consent_flag, parse_timestamp


@dataclass
class RowBatch:
    """Consecutive source rows, by column."""

    ids: list[str]
    kinds: Sequence[str]
    values: list[list[str | None]]
    """Per identifier kind (in ``kinds`` order), per row: the raw value, None when absent."""
    consent: list[bool | None] | None = None
    """Per row; None when the source has no consent column (every row unknown)."""
    changed_at: list[float | None] | None = None
    member_of: list[int] | None = None
    """Per row, the audience bits (see ``SourceRow.member_of``); None: every row is in audience 1."""

    def __len__(self) -> int:
        return len(self.ids)

    def raw(self, i: int) -> dict[str, str | None]:
        return {kind: column[i] for kind, column in zip(self.kinds, self.values, strict=True)}

    def consent_at(self, i: int) -> int | None:
        value = None if self.consent is None else self.consent[i]
        return None if value is None else int(value)

    def changed_at_row(self, i: int) -> float | None:
        return None if self.changed_at is None else self.changed_at[i]

    def member_bits(self) -> list[int]:
        return [1] * len(self.ids) if self.member_of is None else self.member_of

    def rows(self) -> Iterator[SourceRow]:
        for i, pid in enumerate(self.ids):
            yield SourceRow(
                pid,
                self.raw(i),
                None if self.consent is None else self.consent[i],
                self.changed_at_row(i),
                1 if self.member_of is None else self.member_of[i],
            )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _texts(column: Sequence[Any]) -> list[str | None]:
    """A column's values as text, None when absent or empty; C-speed when they are all text."""
    if set(map(type, column)) <= {str, type(None)}:
        return [v or None for v in column] if "" in column else list(column)
    return [_text(v) for v in column]


def from_tuples(
    mapper: RowMapper,
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    first_line: int,
    member_of: list[int] | None = None,
    *,
    lines: Sequence[int] | None = None,
) -> RowBatch:
    """The batch of ``rows`` (tuples of the ``names`` columns, as an engine yields them) read by
    ``mapper``; the row numbers (for the error naming a row without an id) are ``lines``, else
    start at ``first_line``. The rows are transposed once; each column is then one list."""
    source: SourceConfig = mapper.source
    index = {name: j for j, name in enumerate(names)}
    columns = list(zip(*rows, strict=True))
    absent = (None,) * len(rows)

    def column(name: str) -> Sequence[Any]:
        j = index.get(name)
        return absent if j is None else columns[j]

    ids: Sequence[Any] = column(source.id_column)
    try:
        ok = all(map(str.strip, ids))
    except TypeError:  # not all text: a number, or a missing id
        ok = False
    if not ok:
        for n, pid in enumerate(ids):
            if pid is None or str(pid).strip() == "":
                line = lines[n] if lines else first_line + n
                mapper.to_row(dict(zip(names, rows[n], strict=True)), line)  # raises, naming the row
    id_list = list(ids) if ok else [str(p) for p in ids]
    values = [_texts(column(c)) for c in source.identifiers.values()]
    consent = None
    if source.consent_column:
        consent = [consent_flag(v, source) for v in column(source.consent_column)]
    changed = None
    if source.changed_at_column:
        changed = [
            v if v.__class__ is float else parse_timestamp(v) for v in column(source.changed_at_column)
        ]
    return RowBatch(id_list, list(source.identifiers), values, consent, changed, member_of)


def batches_of(rows: Iterable[SourceRow | RowBatch], size: int = 5000) -> Iterator[RowBatch]:
    """``rows`` as batches: batches pass through, ``SourceRow``s are gathered ``size`` at a time."""
    pending: list[SourceRow] = []
    for item in rows:
        if isinstance(item, RowBatch):
            if pending:
                yield _gather(pending)
                pending = []
            yield item
            continue
        pending.append(item)
        if len(pending) >= size:
            yield _gather(pending)
            pending = []
    if pending:
        yield _gather(pending)


def _gather(rows: list[SourceRow]) -> RowBatch:
    kinds = list(rows[0].raw)
    for row in rows:
        if list(row.raw) != kinds:
            kinds = list(dict.fromkeys(k for r in rows for k in r.raw))
            break
    return RowBatch(
        [r.profile_id for r in rows],
        kinds,
        [[r.raw.get(k) for r in rows] for k in kinds],
        [r.consent for r in rows],
        [r.changed_at for r in rows],
        [r.member_of for r in rows],
    )


def merge(batches: list[RowBatch]) -> RowBatch:
    """One batch of several with the same identifier kinds."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]

    def joined(column: str) -> Any:
        parts = [getattr(b, column) for b in batches]
        if all(p is None for p in parts):
            return None
        out: list[Any] = []
        for b, p in zip(batches, parts, strict=True):
            out.extend(p if p is not None else ([1] if column == "member_of" else [None]) * len(b))
        return out

    return RowBatch(
        [p for b in batches for p in b.ids],
        first.kinds,
        [[v for b in batches for v in b.values[k]] for k in range(len(first.kinds))],
        joined("consent"),
        joined("changed_at"),
        joined("member_of"),
    )
