"""Markdown tables, one writer for every section of summary.md, so they are all written alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: its header, the separator, one line per row of cells."""
    return [_table_line(header), "|" + "---|" * len(header), *(_table_line(row) for row in rows)]


def _table_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
