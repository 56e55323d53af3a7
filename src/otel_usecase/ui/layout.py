"""The page around every view: navigation, the filter form, tables with their downloads, figures.

Plain HTML forms and links (GET), so every view is a URL and nothing needs script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from .. import __version__
from ..report.text import cost_decimals, money
from .markup import TITLE_CHARS, Markup, el, join, raw, text
from .params import Filters, query_string

__all__ = ["NAV", "Column", "downloads", "id_cell", "page", "table", "when"]

NAV: Final = (
    ("/", "Overview"),
    ("/users", "Users"),
    ("/experiences", "Experiences"),
    ("/experience-versions", "Versions"),
    ("/models", "Models"),
    ("/tags", "Tags"),
    ("/outcomes", "Outcomes"),
    ("/budgets", "Budgets"),
)


def when(start_ns: object) -> str:
    """UTC time to the second; a value no writer of ours stores is shown as text."""
    try:
        moment = datetime.fromtimestamp(start_ns / 1e9, tz=UTC)  # type: ignore[operator]
    except (TypeError, ValueError, OverflowError, OSError):
        return text(start_ns)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def id_cell(value: object, href: str | None = None) -> Markup:
    """An id as text (escaped, cut at 80 characters; the whole value, escaped, in the tooltip), linked."""
    shown = text(value)
    full = text(value, TITLE_CHARS)
    inner = el("a", shown, href=href) if href is not None else shown
    return el("span", inner, class_="id", title=full if full != shown else None)


def page(
    title: str,
    body: object,
    *,
    root: str,
    path: str,
    filters: Filters | None,
    hidden: Sequence[tuple[str, str]] = (),
    heading: object = None,
    extra: Sequence[tuple[str, str, str, str]] = (),
) -> str:
    """A whole page: ``title`` is text (escaped), ``body`` Markup; the filter form unless ``filters`` is None."""
    keep = query_string(filters) if filters is not None else ""
    nav = el(
        "nav",
        [
            el("a", label, href=f"{root}{target}{keep}", class_="here" if target == path else None)
            for target, label in NAV
        ],
    )
    form = _filter_form(filters, root + path, hidden, extra) if filters is not None else None
    document = join(
        [
            raw("<!DOCTYPE html>"),
            el(
                "html",
                el(
                    "head",
                    el("meta", charset="utf-8"),
                    el("meta", name="viewport", content="width=device-width, initial-scale=1"),
                    el("meta", name="referrer", content="no-referrer"),
                    el("title", f"{title} - otel-usecase"),
                    el("link", rel="stylesheet", href=f"{root}/static/dashboard.css"),
                    el("link", rel="icon", href="data:,"),
                ),
                el(
                    "body",
                    el("header", el("span", "otel-usecase", class_="brand"), nav),
                    el("main", el("h1", heading if heading is not None else title), form, body),
                    el("footer", f"otel-usecase {__version__} - costs in USD, times in UTC"),
                ),
                lang="en",
            ),
        ]
    )
    return document


_FIELDS: Final = (
    ("since", "From", "24h, 7d or 2026-01-01"),
    ("until", "Until", "date, or 1h ago as 1h"),
    ("use_case", "Use case", "name"),
    ("user", "User", "stored user id"),
    ("experience", "Experience", "name"),
    ("version", "Version", "use case version"),
)


def _filter_form(
    filters: Filters,
    action: str,
    hidden: Sequence[tuple[str, str]],
    extra: Sequence[tuple[str, str, str, str]] = (),
) -> Markup:
    """The filters, plus the page's ``extra`` text fields ((name, label, value, hint) each)."""
    inputs = [
        el("label", el("span", label), el("input", type="text", name=name, value=value, placeholder=hint))
        for name, label, value, hint in extra
    ]
    inputs += [
        el(
            "label",
            el("span", label),
            el("input", type="text", name=name, value=getattr(filters, name) or "", placeholder=hint),
        )
        for name, label, hint in _FIELDS
    ]
    tags = [f"{k}={v}" for k, v in filters.tags] + [""]
    inputs += [
        el(
            "label",
            el("span", "Tag"),
            el("input", type="text", name="tag", value=tag, placeholder="key=value"),
        )
        for tag in tags
    ]
    return el(
        "form",
        inputs,
        [el("input", type="hidden", name=name, value=value) for name, value in hidden],
        el("button", "Apply", type="submit"),
        el("a", "Clear", href=action + query_string(Filters(), **dict(hidden)), class_="clear"),
        method="get",
        action=action,
        class_="filters",
    )


class Column(NamedTuple):
    """A table column: header text, the cell of a row, and whether it is a number (right-aligned)."""

    header: str
    cell: Callable[[Any], object]
    numeric: bool = False


def table(
    columns: Sequence[Column], rows: Iterable[Any], *, caption: object = None, id_: str | None = None
) -> Markup:
    body = [
        el("tr", [el("td", c.cell(row), class_="num" if c.numeric else None) for c in columns])
        for row in rows
    ]
    if not body:
        return el("p", "Nothing recorded for these filters.", class_="empty")
    return el(
        "div",
        el(
            "table",
            el("caption", caption) if caption is not None else None,
            el("thead", el("tr", [el("th", c.header, class_="num" if c.numeric else None) for c in columns])),
            el("tbody", body),
            id=id_,
        ),
        class_="scroll",
    )


def downloads(
    root: str,
    api_path: str,
    filters: Filters,
    formats: tuple[str, ...] = ("csv", "json"),
    **own: str | int | None,
) -> Markup:
    """Links to the API route that gives this table in the CLI's formats (CSV and JSON)."""
    links = [
        join(
            [
                el(
                    "a",
                    fmt.upper(),
                    href=f"{root}{api_path}{query_string(filters, **own, format=fmt)}",
                    class_="download",
                ),
                " ",
            ]
        )
        for fmt in formats
    ]
    return el("p", "Download: ", links, class_="downloads")


def usd(value: float | None, decimals: int, complete: bool = True) -> str:
    """A cost as the CLI's tables show it: ``unpriced`` when unknown, ``>= $`` for a lower bound."""
    return money(value, decimals, lower_bound=not complete)


def decimals_of(values: Iterable[object]) -> int:
    return cost_decimals(values)


def figures(items: Sequence[tuple[str, object, str | None]]) -> Markup:
    """Headline numbers: (label, value, note) each; ``data-figure`` names it for tests and scrapers."""
    return el(
        "dl",
        [
            el(
                "div",
                el("dt", label),
                el("dd", value, class_="figure"),
                el("dd", note, class_="note") if note else None,
                data_figure=label.lower().replace(" ", "-"),
            )
            for label, value, note in items
        ],
        class_="figures",
    )
