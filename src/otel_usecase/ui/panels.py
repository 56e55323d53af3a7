"""Pieces several pages share: report tables, headline figures, the cost-over-time panel, links.

The numbers are shown as the CLI's tables show them (:func:`~otel_usecase.report.text.money`:
``unpriced`` for unknown, ``>= $`` for a lower bound, one precision per column), and each table
links to the same rows in the CLI's JSON and CSV (the ``/api/`` routes of :mod:`.api`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..report import views
from ..report.queries import TAG_GROUPING, ReportRow, grouping
from ..report.text import cost_decimals, money
from ..store import Store
from . import charts
from .app import HTML, Response
from .layout import Column, downloads, figures, id_cell, page, table
from .markup import Markup, el, join
from .params import Filters, Params, query_string

__all__ = ["TOP", "cost_text", "html_page", "report_table", "series_panel", "summary_figures", "token_text"]

TOP: Final = 10
"""Rows of each "top" table on the overview and a use case's page."""
_HOUR_BUCKETS_UP_TO_S: Final = 3 * 86400
"""A chart over a range this short (or shorter) has hour buckets by default, else day buckets."""
CACHED: Final = ("cache_read", "cache_write")


def html_page(title: str, body: object, root: str, path: str, filters: Filters, **kw: Any) -> Response:
    return Response(200, HTML, page(title, body, root=root, path=path, filters=filters, **kw).encode())


def cost_text(value: float | None, complete: bool, decimals: int) -> str:
    return money(value, decimals, lower_bound=not complete)


def token_text(tokens: Mapping[str, int], name: str) -> str:
    if name == "cached":
        return f"{sum(tokens.get(c, 0) for c in CACHED):,}"
    value = tokens.get(name, None if name in ("input", "output") else 0)
    return "?" if value is None else f"{value:,}"  # only an input or output count can be unknown


# --- report tables (one group per row) -----------------------------------------------------

_DRILL: Final[dict[str, tuple[str, dict[str, str]]]] = {
    # by -> (page, {filter param: key column}) that a row's first cell links to
    "use-case": ("/use-case", {"use_case": "use_case"}),
    "user": ("/", {"user": "user_id"}),
    "experience": ("/", {"experience": "experience_name"}),
    "experience-version": ("/", {"experience": "experience_name"}),  # no version filter: the experience
    "version": ("/use-case", {"use_case": "use_case", "version": "use_case_version"}),
}


def _drill_href(root: str, by: str, row: ReportRow, filters: Filters) -> str | None:
    if by.startswith(TAG_GROUPING):  # a tag's value: the overview of the calls with it
        value = row.key.get(by)
        if not isinstance(value, str):
            return None
        tags = dict(filters.tags)
        tags[by[len(TAG_GROUPING) :]] = value
        return root + "/" + query_string(filters._replace(tags=tuple(sorted(tags.items()))))
    target = _DRILL.get(by)
    if target is None:
        return None
    path, params = target
    values: dict[str, str] = {}
    for param, column in params.items():
        value = row.key.get(column)
        if not isinstance(value, str):
            return None  # a group without the value (no user): nothing to filter on
        values[param] = value
    return root + path + query_string(filters._replace(**values))  # type: ignore[arg-type]


def _key_cell(key: str, first: bool, root: str, by: str, filters: Filters) -> Callable[[ReportRow], Markup]:
    def cell(row: ReportRow) -> Markup:
        return id_cell(row.key.get(key), _drill_href(root, by, row, filters) if first else None)

    return cell


def report_table(
    rows: Sequence[ReportRow], by: str, root: str, filters: Filters, *, caption: str, limit: int | None
) -> Markup:
    keys = grouping(by)
    decimals = cost_decimals(
        v for r in rows for v in (r.cost_usd, r.avg_run_cost_usd, r.p50_run_cost_usd, r.p95_run_cost_usd)
    )
    per_run = "run_id" not in keys
    columns = [
        Column(key.replace("_", " "), _key_cell(key, i == 0, root, by, filters)) for i, key in enumerate(keys)
    ]
    columns += [
        Column("runs", lambda r: f"{r.runs:,}", True),
        Column("calls", lambda r: f"{r.calls:,}", True),
        Column("input", lambda r: token_text(r.tokens, "input"), True),
        Column("output", lambda r: token_text(r.tokens, "output"), True),
        Column("cached", lambda r: token_text(r.tokens, "cached"), True),
        Column("reasoning", lambda r: token_text(r.tokens, "reasoning"), True),
        Column("cost", lambda r: cost_text(r.cost_usd, r.cost_complete, decimals), True),
    ]
    if per_run:
        columns += [
            Column(
                "avg/run",
                lambda r: money(r.avg_run_cost_usd, decimals) if r.avg_run_cost_usd is not None else "-",
                True,
            ),
            Column(
                "p50/run",
                lambda r: money(r.p50_run_cost_usd, decimals) if r.p50_run_cost_usd is not None else "-",
                True,
            ),
            Column(
                "p95/run",
                lambda r: money(r.p95_run_cost_usd, decimals) if r.p95_run_cost_usd is not None else "-",
                True,
            ),
        ]
    columns.append(Column("unpriced", lambda r: f"{r.unpriced_calls:,}", True))
    return join(
        [
            table(columns, rows, id_=f"by-{by}"),
            downloads(root, "/api/report", filters, by=by, limit=limit),
        ]
    )


def summary_figures(summary: views.Summary) -> Markup:
    decimals = cost_decimals([summary.cost_usd])
    unknown = []
    if summary.no_usage_calls:
        unknown.append(f"{summary.no_usage_calls:,} without usage")
    if summary.partial_calls:
        unknown.append(f"{summary.partial_calls:,} partly read")
    return figures(
        [
            (
                "Total cost",
                "$0.00"
                if summary.calls == 0
                else cost_text(summary.cost_usd, summary.cost_complete, decimals),
                None if summary.cost_complete else "a lower bound: some calls have no known cost",
            ),
            (
                "Calls",
                f"{summary.calls:,}",
                f"{summary.error_calls:,} failed" if summary.error_calls else None,
            ),
            ("Runs", f"{summary.runs:,}", None),
            ("Unpriced calls", f"{summary.unpriced_calls:,}", ", ".join(unknown) or None),
            ("Input tokens", token_text(summary.tokens, "input"), None),
            ("Output tokens", token_text(summary.tokens, "output"), None),
        ]
    )


def _bucket(params: Params, filters: Filters) -> str:
    if params.get("bucket") is not None:
        return params.choice("bucket", ("hour", "day"), "day")
    report_filter = filters.report_filter()
    if report_filter.since_ns is None:
        return "day"
    until = getattr(report_filter, "until_ns", None) or time.time_ns()
    return "hour" if until - report_filter.since_ns <= _HOUR_BUCKETS_UP_TO_S * 1_000_000_000 else "day"


def series_panel(store: Store, params: Params, root: str, path: str, by: str = "use-case") -> Markup:
    filters = params.filters
    bucket = _bucket(params, filters)
    points = views.cost_series(store, filters.report_filter(), bucket, by)  # type: ignore[arg-type]
    chart = charts.stacks([(p.start_ns, p.key, p.cost_usd, p.calls) for p in points], bucket)
    switch = el(
        "p",
        "Buckets: ",
        [
            join(
                [
                    el(
                        "a",
                        b,
                        href=root + path + query_string(filters, **own_params(params, bucket=b)),
                        class_="here" if b == bucket else None,
                    ),
                    " ",
                ]
            )
            for b in ("hour", "day")
        ],
        class_="switch",
    )
    return el(
        "section",
        el("h2", f"Cost per {bucket}, by {by.replace('-', ' ')}"),
        switch,
        charts.stacked_bars(chart, bucket, f"Cost per {bucket} (UTC), stacked by {by.replace('-', ' ')}"),
        downloads(root, "/api/series", filters, bucket=bucket, by=by),
        class_="panel",
    )


def own_params(params: Params, **changes: str | int | None) -> dict[str, str | int | None]:
    """The page's own parameters with ``changes`` (for a link to a variant of this view)."""
    own: dict[str, str | int | None] = dict(params.own)
    own.update(changes)
    return own


def hidden_params(params: Params, *names: str) -> list[tuple[str, str]]:
    return [(n, v) for n in names if (v := params.own.get(n)) is not None]
