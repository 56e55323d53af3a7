"""The dashboard's pages: each a function of (store, params, root) returning a whole HTML page.

The numbers come from the same functions as the CLI's (:mod:`otel_usecase.report.views`,
:func:`~otel_usecase.report.queries.run_calls`) and are shown as its tables show them
(:func:`~otel_usecase.report.text.money`: ``unpriced`` for unknown, ``>= $`` for a lower
bound, one precision per column). Each table links to the same rows in the CLI's
JSON and CSV (the ``/api/`` routes of :mod:`.api`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from ..report import views
from ..report.queries import TAG_GROUPING, grouping
from ..report.text import cost_decimals
from ..store import Store
from . import charts
from .app import Response
from .budget_page import budgets
from .layout import Column, downloads, id_cell, table, when
from .markup import Markup, el, join, text
from .outcome_page import OUTCOME_PARAMS, outcomes
from .panels import (
    TOP,
    cost_text,
    hidden_params,
    html_page,
    own_params,
    report_table,
    series_panel,
    summary_figures,
    token_text,
)
from .params import BadRequest, Params, query_string
from .run_pages import call, run

__all__ = ["PAGES"]

# --- pages -------------------------------------------------------------------------------


def overview(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    rf = filters.report_filter()
    # The panels read at the same time (Store.read_together), the dearest first: the models' list (ranks
    # every model's run costs), then the other lists, the series and the summary.
    tops = _top_panels(
        (("model", "Top models"), ("use-case", "Top use cases"), ("experience", "Top experiences"),
         ("user", "Top users")), params, root)  # fmt: skip
    models, use_cases, experiences, users, series, summary = store.read_together(
        [
            *tops,
            lambda reader: series_panel(reader, params, root, "/"),
            lambda reader: summary_figures(views.summary(reader, rf)),
        ]
    )
    body = [summary, series, use_cases, users, experiences, models]
    return html_page("Overview", body, root, "/", filters, hidden=hidden_params(params, "bucket"))


def _top_panels(
    panels: Sequence[tuple[str, str]], params: Params, root: str
) -> list[Callable[[Store], Markup]]:
    """The reads making the panel of the :data:`~.panels.TOP` dearest groups of each (``--by``, title)."""
    filters = params.filters
    rf = filters.report_filter()

    def panel(by: str, title: str) -> Callable[[Store], Markup]:
        def read(reader: Store) -> Markup:
            rows = views.top(reader, rf, by, TOP)
            table = report_table(rows, by, root, filters, caption=title, limit=TOP)
            return el("section", el("h2", title), table, class_="panel")

        return read

    return [panel(by, title) for by, title in panels]


_RUNS_PAGE: Final = 50


def use_case(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    if filters.use_case is None:
        raise BadRequest("use_case is missing: a use case's page needs use_case=NAME")
    rf = filters.report_filter()
    order = params.choice("order", ("newest", "cost"), "newest")
    limit = params.number("limit", _RUNS_PAGE, 1, 1000)
    offset = params.number("offset", 0, 0, 10**9)
    bins = params.number("bins", 20, 1, 200)
    tops = _top_panels(
        (("step", "Cost by step"), ("version", "Cost by version"), ("experience", "Experiences"),
         ("user", "Users")), params, root)  # fmt: skip
    # read at the same time, the dearest first (Store.read_together)
    steps, versions, experiences, users, series, summary, histogram, runs = store.read_together(
        [
            *tops,
            lambda reader: series_panel(reader, params, root, "/use-case", by="version"),
            lambda reader: summary_figures(views.summary(reader, rf)),
            lambda reader: _histogram_section(views.run_histogram(reader, rf, bins), params, root, bins),
            lambda reader: _runs_section(
                views.list_runs(reader, rf, order, limit, offset),  # type: ignore[arg-type]
                params,
                root,
                order,
                limit,
                offset,
            ),
        ]
    )
    body = [summary, histogram, runs, series, versions, steps, experiences, users]
    heading = join(["Use case ", el("span", text(filters.use_case), class_="id")])
    return html_page(
        f"Use case {text(filters.use_case)}",
        body,
        root,
        "/use-case",
        filters,
        hidden=hidden_params(params, "order", "limit", "bucket", "bins"),
        heading=heading,
    )


def _histogram_section(histogram: views.Histogram, params: Params, root: str, bins: int) -> Markup:
    left_out = (
        el(
            "p",
            f"{histogram.runs_left_out:,} runs whose cost is not fully known are left out.",
            class_="note",
        )
        if histogram.runs_left_out
        else None
    )
    return el(
        "section",
        el("h2", "Cost per run"),
        charts.histogram(
            histogram.edges,
            histogram.counts,
            histogram.p50,
            histogram.p95,
            "Runs per cost, with the p50 and p95 run cost marked",
        ),
        left_out,
        downloads(root, "/api/histogram", params.filters, bins=bins),
        class_="panel",
    )


def _runs_section(
    runs: Sequence[views.RunRow], params: Params, root: str, order: str, limit: int, offset: int
) -> Markup:
    filters = params.filters
    decimals = cost_decimals(r.cost_usd for r in runs)
    columns = [
        Column("started (UTC)", lambda r: when(r.start_ns)),
        Column("run", lambda r: id_cell(r.run_id, root + "/run" + query_string(filters, id=r.run_id))),
        Column("user", lambda r: id_cell(r.user_id)),
        Column("experience", lambda r: id_cell(r.experience_name)),
        Column("version", lambda r: id_cell(r.use_case_version)),
        Column("tags", lambda r: id_cell(" ".join(f"{k}={v}" for k, v in sorted(r.tags.items())) or None)),
        Column("calls", lambda r: f"{r.calls:,}", True),
        Column("input", lambda r: token_text(r.tokens, "input"), True),
        Column("output", lambda r: token_text(r.tokens, "output"), True),
        Column("cost", lambda r: cost_text(r.cost_usd, r.cost_complete, decimals), True),
    ]
    links = [
        el(
            "a",
            label,
            href=root + "/use-case" + query_string(filters, **own_params(params, order=value, offset=None)),
            class_="here" if value == order else None,
        )
        for value, label in (("newest", "newest first"), ("cost", "most expensive first"))
    ]
    pager = []
    if offset > 0:
        pager.append(
            el(
                "a",
                "previous",
                href=root
                + "/use-case"
                + query_string(filters, **own_params(params, offset=max(0, offset - limit) or None)),
                rel="prev",
            )
        )
    if len(runs) == limit:
        pager.append(
            el(
                "a",
                "next",
                href=root + "/use-case" + query_string(filters, **own_params(params, offset=offset + limit)),
                rel="next",
            )
        )
    return el(
        "section",
        el("h2", "Runs"),
        el("p", "Order: ", join([join([a, " "]) for a in links]), class_="switch"),
        table(columns, runs, caption=f"Runs {offset + 1:,} to {offset + len(runs):,}", id_="runs"),
        el("p", join([join([a, " "]) for a in pager]), class_="pager") if pager else None,
        downloads(root, "/api/runs", filters, order=order, limit=limit, offset=offset or None),
        class_="panel",
    )


def _report_page(by: str, title: str, path: str) -> Any:
    def handler(store: Store, params: Params, root: str) -> Response:
        filters = params.filters
        limit = params.number("limit", 100, 1, 10_000)
        rows = views.top(store, filters.report_filter(), by, limit)
        note = (
            el("p", f"The {limit:,} most expensive; the downloads have every row.", class_="note")
            if len(rows) == limit
            else None
        )
        body = el(
            "section", report_table(rows, by, root, filters, caption=title, limit=None), note, class_="panel"
        )
        return html_page(title, body, root, path, filters, hidden=hidden_params(params, "limit"))

    return handler


def tags(store: Store, params: Params, root: str) -> Response:
    """The report by the values of one tag (``report --by tag:KEY``); each value links to its overview."""
    filters = params.filters
    key = params.get("key")
    fields = [("key", "Tag key", key or "", "e.g. tenant")]
    if key is None:
        body: object = el("p", "Give a tag key to see the cost per value of that tag.", class_="empty")
        return html_page("Cost by tag", body, root, "/tags", filters, extra=fields)
    by = TAG_GROUPING + key
    grouping(by)  # a key that is not a name: a 400 naming it and the rule
    limit = params.number("limit", 100, 1, 10_000)
    rows = views.top(store, filters.report_filter(), by, limit)
    body = el("section", report_table(rows, by, root, filters, caption="", limit=None), class_="panel")
    return html_page(
        f"Cost by tag {key}",
        body,
        root,
        "/tags",
        filters,
        extra=fields,
        hidden=hidden_params(params, "limit"),
    )


PAGES: Final = {
    "/": (overview, ("bucket",)),
    "/use-case": (use_case, ("order", "limit", "offset", "bucket", "bins")),
    "/run": (run, ("id",)),
    "/call": (call, ("run", "span", "trace")),
    "/users": (_report_page("user", "Users", "/users"), ("limit",)),
    "/experiences": (_report_page("experience", "Experiences", "/experiences"), ("limit",)),
    "/experience-versions": (
        _report_page("experience-version", "Experience versions", "/experience-versions"),
        ("limit",),
    ),
    "/models": (_report_page("model", "Models", "/models"), ("limit",)),
    "/tags": (tags, ("key", "limit")),
    "/budgets": (budgets, ()),
    "/outcomes": (outcomes, OUTCOME_PARAMS),
}
