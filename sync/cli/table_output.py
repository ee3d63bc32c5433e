"""Table output for the CLI in five formats (``--format table|plain|tsv|csv|json``), laid out for the
width it has: a table when every cell fits whole, else one block per row (its name, then
``header: value`` pairs wrapped to the width), so names and verdicts are never cut. ``plain``, the
default off a terminal, is one line per row that reads well in a cron log or CI pipe."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "plain", "tsv", "csv", "json")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False


@dataclass
class TableData:
    """Rows of cells (rich markup allowed; stripped outside ``table``), the first column naming the row.
    ``records`` is what ``json`` prints; ``notes`` are lines printed after the rows."""

    title: str
    columns: Sequence[Column]
    rows: list[list[str]]
    records: Any = None
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(text, style) pairs."""


def format_option(func: F) -> F:
    """``--format``; absent, ``table`` on a terminal and ``plain`` elsewhere."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default=None,
        help="Output layout (default: table on a terminal, plain otherwise).",
    )(func)


def choose_format(console: Console, output_format: str | None, as_json: bool = False) -> str:
    if as_json:
        return "json"
    if output_format:
        return output_format
    return "table" if console.is_terminal else "plain"


def _plain(cell: str) -> str:
    return Text.from_markup(cell).plain


def _fits(data: TableData, width: int) -> bool:
    widths = [
        max([len(c.header)] + [len(_plain(row[i])) for row in data.rows]) for i, c in enumerate(data.columns)
    ]
    # rich's default box: one border per column plus one, and a space of padding on each side.
    return sum(widths) + 3 * len(widths) + 1 <= width


def emit(console: Console, data: TableData, fmt: str) -> None:
    """Print ``data`` in ``fmt`` on ``console``."""
    if fmt == "json":
        console.file.write(json.dumps(data.records, indent=2) + "\n")
        return
    if fmt in ("tsv", "csv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow([c.header for c in data.columns])
        writer.writerows([[_plain(cell) for cell in row] for row in data.rows])
        # Written as is: the console would expand the tabs to spaces.
        console.file.write(buffer.getvalue())
        return
    if fmt == "plain":
        console.out(data.title, highlight=False)
        for row in data.rows:
            pairs = " ".join(
                f"{c.header}={_plain(cell)}" for c, cell in zip(data.columns[1:], row[1:], strict=True)
            )
            console.print(f"{_plain(row[0])}: {pairs}", markup=False, highlight=False, soft_wrap=True)
        for text, _style in data.notes:
            console.print(_plain(text), markup=False, highlight=False, soft_wrap=True)
        return
    if _fits(data, console.width):
        table = Table(title=data.title, title_justify="left")
        for c in data.columns:
            table.add_column(c.header, justify="right" if c.right else "left", no_wrap=True)
        for row in data.rows:
            table.add_row(*row)
        console.print(table)
    else:
        _stacked(console, data)
    for text, style in data.notes:
        console.print(text, style=style or None, soft_wrap=True)


def _stacked(console: Console, data: TableData) -> None:
    """One block per row: its name in bold on its own line, then the other cells as wrapped
    ``header: value`` pairs. Nothing is cut: a long value wraps instead."""
    console.print(Text(data.title, style="italic"))
    for row in data.rows:
        console.print(Text.from_markup(row[0], style="bold"), soft_wrap=True)
        line = Text("  ")
        for c, cell in zip(data.columns[1:], row[1:], strict=True):
            if not _plain(cell):
                continue
            pair = Text.assemble(Text(f"{c.header}: ", style="dim"), Text.from_markup(cell))
            if len(line) > 2 and len(line) + 3 + len(pair) > console.width:
                console.print(line, soft_wrap=True)
                line = Text("  ")
            if len(line) > 2:
                line.append(" · ", style="dim")
            line.append_text(pair)
        console.print(line, soft_wrap=True)
