"""Text for people and tools: terminal-safe cells, money, aligned tables, spreadsheet-safe CSV cells."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "CELL_LIMIT",
    "NONE_LABEL",
    "aligned",
    "cost_decimals",
    "csv_cell",
    "money",
    "safe_text",
    "sum_known",
]

NONE_LABEL: Final = "-"
"""A value that is not there (no user, no step), in a table."""

CELL_LIMIT: Final = 80
"""Longest table cell, in characters after escaping; longer ones end in an ellipsis."""

_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
"""Control, format (bidi overrides, zero-width), line/paragraph separators, and characters
with no glyph (surrogates, private use, unassigned): escaped in table output."""


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char  # a space other than U+0020 (isprintable() says no): harmless
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_text(value: object, limit: int = CELL_LIMIT) -> str:
    """Printable text for a terminal: ids arrive over OTLP from anyone.

    Every control and format character (Unicode categories Cc, Cf, Zl, Zp, plus
    unassigned, private-use and surrogate code points) is shown escaped
    (``\\x1b``, ``\\u202e``): a terminal escape, a bidi override or a line
    separator in an id must not rewrite what the table says. Text longer than
    ``limit`` characters is cut, ending in an ellipsis.
    """
    text = NONE_LABEL if value is None else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def cost_decimals(values: Iterable[object]) -> int:
    """Decimals for one column of costs: the smallest non-zero one still shows 3 significant digits.

    One precision per column, so that the decimal points line up and equal
    precision means equal certainty; at least 2 (cents), at most 10.
    """
    smallest = min(
        (abs(v) for v in values if isinstance(v, int | float) and v and math.isfinite(v)), default=None
    )
    if smallest is None:
        return 2
    return max(2, min(10, 2 - math.floor(math.log10(smallest))))


def money(value: object, decimals: int | None = None, *, lower_bound: bool = False) -> str:
    """USD with ``decimals`` decimals (default: enough for this value, see :func:`cost_decimals`).

    None is ``unpriced`` (unknown, never $0); ``lower_bound`` writes ``>= $...`` for a
    total that leaves out calls whose cost is unknown.
    """
    if value is None:
        return "unpriced"
    if not isinstance(value, int | float) or not math.isfinite(value):
        return safe_text(value)  # not a number a store of ours writes; shown, never fatal
    if decimals is None:
        decimals = cost_decimals([value])
    text = f"${value:,.{decimals}f}" if abs(value) < 1e12 else f"${value:.3e}"
    return ">= " + text if lower_bound else text


def csv_cell(value: object) -> object:
    """Neutralise spreadsheet formulas (``=``, ``+``, ``-``, ``@`` at the start of a text cell)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def sum_known(values: Iterable[float | None]) -> float | None:
    """The sum of the known values; None when none is known (unknown is not $0)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def aligned(
    header: Sequence[str], body: Iterable[Sequence[str]], numeric_from: int, numeric_to: int | None = None
) -> list[str]:
    """A header, a rule and the rows, in columns: numbers (columns ``numeric_from`` to ``numeric_to``,
    default to the end) right-aligned, text left-aligned."""
    table = [list(header), *(list(r) for r in body)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    end = len(header) if numeric_to is None else numeric_to

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if numeric_from <= i < end else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(table[0]), "  ".join("-" * w for w in widths), *(line(r) for r in table[1:])]
