"""The dashboard's pages: each a function of (store, params, root) returning a whole HTML page.

The numbers come from the same functions as the CLI's (:mod:`otel_usecase.report.views`,
:func:`~otel_usecase.report.queries.run_calls`) and are shown as its tables show them
(:func:`~otel_usecase.report.text.money`: ``unpriced`` for unknown, ``>= $`` for a lower
bound, one precision per column). Each table links to the same rows in the CLI's
JSON and CSV (the ``/api/`` routes of :mod:`.api`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..cost.call import Call
from ..report import views
from ..report.queries import GROUPINGS, ReportRow, run_calls
from ..report.text import cost_decimals, money
from ..store import Store
from . import charts
from .app import HTML, Response
from .layout import Column, downloads, figures, id_cell, page, table, when
from .markup import Markup, el, join, text
from .params import BadRequest, Filters, Params, query_string

__all__ = ["PAGES"]

_TOP: Final = 10
"""Rows of each "top" table on the overview and a use case's page."""
_HOUR_BUCKETS_UP_TO_S: Final = 3 * 86400
"""A chart over a range this short (or shorter) has hour buckets by default, else day buckets."""
_CACHED: Final = ("cache_read", "cache_write")


def _html(title: str, body: object, root: str, path: str, filters: Filters, **kw: Any) -> Response:
    return Response(200, HTML, page(title, body, root=root, path=path, filters=filters, **kw).encode())


def _cost(value: float | None, complete: bool, decimals: int) -> str:
    return money(value, decimals, lower_bound=not complete)


def _tokens(tokens: Mapping[str, int], name: str) -> str:
    if name == "cached":
        return f"{sum(tokens.get(c, 0) for c in _CACHED):,}"
    value = tokens.get(name, None if name in ("input", "output") else 0)
    return "?" if value is None else f"{value:,}"  # only an input or output count can be unknown


# --- report tables (one group per row) -----------------------------------------------------

_DRILL: Final[dict[str, tuple[str, dict[str, str]]]] = {
    # by -> (page, {filter param: key column}) that a row's first cell links to
    "use-case": ("/use-case", {"use_case": "use_case"}),
    "user": ("/", {"user": "user_id"}),
    "experience": ("/", {"experience": "experience_name"}),
    "version": ("/use-case", {"use_case": "use_case", "version": "use_case_version"}),
}


def _drill_href(root: str, by: str, row: ReportRow, filters: Filters) -> str | None:
    target = _DRILL.get(by)
    if target is None:
        return None
    path, params = target
    values = {param: row.key.get(column) for param, column in params.items()}
    if any(not isinstance(v, str) for v in values.values()):
        return None  # a group without the value (no user): nothing to filter on
    return root + path + query_string(filters._replace(**_filter_fields(values)))


def _filter_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {("version" if k == "version" else k): v for k, v in values.items()}


def _key_cell(key: str, first: bool, root: str, by: str, filters: Filters) -> Callable[[ReportRow], Markup]:
    def cell(row: ReportRow) -> Markup:
        return id_cell(row.key.get(key), _drill_href(root, by, row, filters) if first else None)

    return cell


def _token_cell(name: str) -> Callable[[Call], str]:
    def cell(call: Call) -> str:
        return f"{call.tokens.get(name, 0):,}"

    return cell


def report_table(
    rows: Sequence[ReportRow], by: str, root: str, filters: Filters, *, caption: str, limit: int | None
) -> Markup:
    keys = GROUPINGS[by]
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
        Column("input", lambda r: _tokens(r.tokens, "input"), True),
        Column("output", lambda r: _tokens(r.tokens, "output"), True),
        Column("cached", lambda r: _tokens(r.tokens, "cached"), True),
        Column("reasoning", lambda r: _tokens(r.tokens, "reasoning"), True),
        Column("cost", lambda r: _cost(r.cost_usd, r.cost_complete, decimals), True),
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


def _summary_figures(summary: views.Summary) -> Markup:
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
                "$0.00" if summary.calls == 0 else _cost(summary.cost_usd, summary.cost_complete, decimals),
                None if summary.cost_complete else "a lower bound: some calls have no known cost",
            ),
            (
                "Calls",
                f"{summary.calls:,}",
                f"{summary.error_calls:,} failed" if summary.error_calls else None,
            ),
            ("Runs", f"{summary.runs:,}", None),
            ("Unpriced calls", f"{summary.unpriced_calls:,}", ", ".join(unknown) or None),
            ("Input tokens", _tokens(summary.tokens, "input"), None),
            ("Output tokens", _tokens(summary.tokens, "output"), None),
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


def _series(store: Store, params: Params, root: str, path: str, by: str = "use-case") -> Markup:
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
                        href=root + path + query_string(filters, **_own(params, bucket=b)),
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


def _own(params: Params, **changes: str | int | None) -> dict[str, str | int | None]:
    """The page's own parameters with ``changes`` (for a link to a variant of this view)."""
    own: dict[str, str | int | None] = dict(params.own)
    own.update(changes)
    return own


# --- pages -------------------------------------------------------------------------------


def overview(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    rf = filters.report_filter()
    body = [
        _summary_figures(views.summary(store, rf)),
        _series(store, params, root, "/"),
    ]
    for by, title in (
        ("use-case", "Top use cases"),
        ("user", "Top users"),
        ("experience", "Top experiences"),
        ("model", "Top models"),
    ):
        rows = views.top(store, rf, by, _TOP)
        body.append(
            el(
                "section",
                el("h2", title),
                report_table(rows, by, root, filters, caption=title, limit=_TOP),
                class_="panel",
            )
        )
    return _html("Overview", body, root, "/", filters, hidden=_hidden(params, "bucket"))


def _hidden(params: Params, *names: str) -> list[tuple[str, str]]:
    return [(n, v) for n in names if (v := params.own.get(n)) is not None]


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
    summary = views.summary(store, rf)
    histogram = views.run_histogram(store, rf, bins)
    runs = views.list_runs(store, rf, order, limit, offset)  # type: ignore[arg-type]
    body: list[object] = [_summary_figures(summary)]
    left_out = (
        el(
            "p",
            f"{histogram.runs_left_out:,} runs whose cost is not fully known are left out.",
            class_="note",
        )
        if histogram.runs_left_out
        else None
    )
    body.append(
        el(
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
            downloads(root, "/api/histogram", filters, bins=bins),
            class_="panel",
        )
    )
    body.append(_runs_section(runs, params, root, order, limit, offset))
    body.append(_series(store, params, root, "/use-case", by="version"))
    for by, title in (
        ("version", "Cost by version"),
        ("step", "Cost by step"),
        ("experience", "Experiences"),
        ("user", "Users"),
    ):
        rows = views.top(store, rf, by, _TOP)
        body.append(
            el(
                "section",
                el("h2", title),
                report_table(rows, by, root, filters, caption=title, limit=_TOP),
                class_="panel",
            )
        )
    heading = join(["Use case ", el("span", text(filters.use_case), class_="id")])
    return _html(
        f"Use case {text(filters.use_case)}",
        body,
        root,
        "/use-case",
        filters,
        hidden=_hidden(params, "order", "limit", "bucket", "bins"),
        heading=heading,
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
        Column("input", lambda r: _tokens(r.tokens, "input"), True),
        Column("output", lambda r: _tokens(r.tokens, "output"), True),
        Column("cost", lambda r: _cost(r.cost_usd, r.cost_complete, decimals), True),
    ]
    links = [
        el(
            "a",
            label,
            href=root + "/use-case" + query_string(filters, **_own(params, order=value, offset=None)),
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
                + query_string(filters, **_own(params, offset=max(0, offset - limit) or None)),
                rel="prev",
            )
        )
    if len(runs) == limit:
        pager.append(
            el(
                "a",
                "next",
                href=root + "/use-case" + query_string(filters, **_own(params, offset=offset + limit)),
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


def _call_columns(
    run_id: str, root: str, filters: Filters, decimals: int, extra: Sequence[str]
) -> list[Column]:
    def call_href(c: Call) -> str:
        return root + "/call" + query_string(filters, run=run_id, span=c.span_id, trace=c.trace_id)

    columns = [
        Column("time (UTC)", lambda c: el("a", _ms(c.start_ns), href=call_href(c))),
        Column("model", lambda c: id_cell(c.model)),
        Column("input", lambda c: _tokens(c.tokens, "input"), True),
        Column("output", lambda c: _tokens(c.tokens, "output"), True),
        Column("cached", lambda c: _tokens(c.tokens, "cached"), True),
        Column("reasoning", lambda c: _tokens(c.tokens, "reasoning"), True),
    ]
    columns += [Column(name.replace("_", " "), _token_cell(name), True) for name in extra]
    columns += [
        Column("cost", lambda c: call_cost(c, decimals), True),
        Column("cost source", lambda c: id_cell(c.cost_source)),
        Column("step", lambda c: id_cell(c.step)),
        Column("status", lambda c: text(c.status) + (" (error)" if c.error else "")),
        Column("trace id", lambda c: id_cell(c.trace_id)),
    ]
    return columns


def call_cost(call: Call, decimals: int) -> str:
    if call.status == "no_usage":
        return "no usage"
    if call.status == "unpriced" or not isinstance(call.cost_usd, int | float):
        return "unpriced"
    return money(call.cost_usd, decimals, lower_bound=call.status != "priced")


def _ms(start_ns: object) -> str:
    shown = when(start_ns)
    if isinstance(start_ns, int) and len(shown) == 19:
        return f"{shown}.{start_ns // 1_000_000 % 1000:03d}"
    return shown


_ALWAYS: Final = frozenset({"input", "output", "cache_read", "cache_write", "reasoning"})


def run(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    run_id = params.required("id")
    calls = run_calls(store, run_id)
    if not calls:
        return Response(
            404,
            HTML,
            page(
                "No such run",
                el("p", "No run ", el("span", text(run_id), class_="id"), " in this store.", class_="error"),
                root=root,
                path="/run",
                filters=filters,
                hidden=[("id", run_id)],
            ).encode(),
        )
    first = calls[0]
    decimals = cost_decimals(c.cost_usd for c in calls)
    costs = [c.cost_usd for c in calls if isinstance(c.cost_usd, int | float)]
    complete = all(c.status == "priced" for c in calls)
    extra = sorted({n for c in calls for n, v in c.tokens.items() if v and n not in _ALWAYS})
    tags = first.tags
    facts = el(
        "dl",
        [
            el("div", el("dt", label), el("dd", value))
            for label, value in (
                (
                    "use case",
                    id_cell(
                        first.use_case, root + "/use-case" + query_string(Filters(use_case=first.use_case))
                    ),
                ),
                ("user", id_cell(first.user_id)),
                ("experience", id_cell(first.experience_name)),
                ("experience id", id_cell(first.experience_id)),
                ("version", id_cell(first.use_case_version)),
                ("tags", id_cell(" ".join(f"{k}={v}" for k, v in sorted(tags.items())) or None)),
                ("started (UTC)", _ms(first.start_ns)),
            )
        ],
        class_="facts",
    )
    body = [
        figures(
            [
                (
                    "Run cost",
                    money(sum(costs) if costs else None, decimals, lower_bound=not complete),
                    None if complete else "a lower bound: some calls have no known cost",
                ),
                ("Calls", f"{len(calls):,}", None),
            ]
        ),
        facts,
        el(
            "section",
            el("h2", "Calls, in time order"),
            table(_call_columns(run_id, root, filters, decimals, extra), calls, caption="Calls", id_="calls"),
            downloads(root, "/api/run", Filters(), id=run_id),
            class_="panel",
        ),
    ]
    heading = join(["Run ", el("span", text(run_id), class_="id")])
    return _html(f"Run {text(run_id)}", body, root, "/run", filters, hidden=[("id", run_id)], heading=heading)


def call(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    run_id = params.required("run")
    span_id = params.required("span")
    trace_id = params.get("trace")
    found = [c for c in run_calls(store, run_id) if c.span_id == span_id and trace_id in (None, c.trace_id)]
    if not found:
        raise BadRequest(f"no call with span id {span_id!r} in run {run_id!r}")
    c = found[0]
    decimals = cost_decimals([c.cost_usd, c.computed_cost_usd])
    rows: list[tuple[str, object]] = [
        ("run", id_cell(run_id, root + "/run" + query_string(filters, id=run_id))),
        (
            "use case",
            id_cell(c.use_case, root + "/use-case" + query_string(filters._replace(use_case=c.use_case))),
        ),
        ("started (UTC)", _ms(c.start_ns)),
        ("duration", f"{(c.end_ns - c.start_ns) / 1e6:,.1f} ms" if isinstance(c.end_ns, int) else "-"),
        ("service", id_cell(c.service)),
        ("step", id_cell(c.step)),
        ("user", id_cell(c.user_id)),
        ("experience", id_cell(c.experience_name)),
        ("experience id", id_cell(c.experience_id)),
        ("version", id_cell(c.use_case_version)),
        ("provider", id_cell(c.provider)),
        ("model", id_cell(c.model)),
        ("operation", id_cell(c.operation)),
        *((f"{name.replace('_', ' ')} tokens", f"{value:,}") for name, value in sorted(c.tokens.items())),
        ("cost", call_cost(c, decimals)),
        ("status", text(c.status)),
        ("error", "yes" if c.error else "no"),
        ("cost source", id_cell(c.cost_source)),
        ("price source", id_cell(c.price_source)),
        ("price context", id_cell(c.price_context)),
        ("unpriced reason", id_cell(c.unpriced_reason)),
        ("our price", money(c.computed_cost_usd, decimals) if c.computed_cost_usd is not None else "-"),
        ("trace id", id_cell(c.trace_id)),
        ("span id", id_cell(c.span_id)),
    ]
    body = el("dl", [el("div", el("dt", k), el("dd", v)) for k, v in rows], class_="facts", id="call")
    return _html(
        "Call",
        body,
        root,
        "/call",
        filters,
        hidden=[("run", run_id), ("span", span_id), *([("trace", trace_id)] if trace_id else [])],
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
        return _html(title, body, root, path, filters, hidden=_hidden(params, "limit"))

    return handler


def budgets(store: Store, params: Params, root: str) -> Response:
    from ..budgets.api import budget_status

    filters = params.filters
    statuses = [s for s in budget_status(store) if filters.use_case in (None, s.budget.use_case)]
    columns = [
        Column("budget", lambda s: id_cell(s.budget.name)),
        Column(
            "use case",
            lambda s: id_cell(
                s.budget.use_case, root + "/use-case" + query_string(Filters(use_case=s.budget.use_case))
            ),
        ),
        Column("selector", lambda s: id_cell(" ".join(f"{k}={v}" for k, v in s.budget.selector().items()))),
        Column("mode", lambda s: text(s.budget.mode)),
        Column("window", lambda s: id_cell(s.window_key)),
        Column("window end", lambda s: when(s.window_end_ns) if s.window_end_ns is not None else "-"),
        Column("spent", lambda s: f"${s.spent_usd:,.6f}" + ("+" if s.unpriced_calls else ""), True),
        Column("limit", lambda s: f"${s.limit_usd:,.6f}", True),
        Column("remaining", lambda s: f"${s.remaining_usd:,.6f}", True),
        Column(
            "used",
            lambda s: join([_meter(s.spent_usd / s.limit_usd), f" {100 * s.spent_usd / s.limit_usd:.1f}%"]),
            True,
        ),
        Column("unpriced", lambda s: f"{s.unpriced_calls:,}", True),
    ]
    body = el(
        "section",
        table(columns, statuses, caption="Spend in each budget's current window", id_="budgets"),
        el(
            "p",
            "+ spent is a lower bound: the window has calls whose cost is unknown or partial.",
            class_="note",
        )
        if any(s.unpriced_calls for s in statuses)
        else None,
        downloads(root, "/api/budgets", filters, ("json",)),
        class_="panel",
    )
    return _html("Budgets", body, root, "/budgets", filters)


def _meter(share: float) -> Markup:
    """Spend against the limit as a small bar (SVG: no inline style under the CSP)."""
    width = max(0.0, min(share, 1.0)) * 100
    level = "over" if share >= 1 else "high" if share >= 0.8 else "ok"
    return el(
        "svg",
        el("rect", x=0, y=0, width=100, height=10, class_="meter-bg"),
        el("rect", x=0, y=0, width=f"{width:.1f}", height=10, class_=f"meter-{level}"),
        viewBox="0 0 100 10",
        class_="meter",
        role="img",
        aria_label=f"{share * 100:.0f}% used",
        xmlns="http://www.w3.org/2000/svg",
    )


PAGES: Final = {
    "/": (overview, ("bucket",)),
    "/use-case": (use_case, ("order", "limit", "offset", "bucket", "bins")),
    "/run": (run, ("id",)),
    "/call": (call, ("run", "span", "trace")),
    "/users": (_report_page("user", "Users", "/users"), ("limit",)),
    "/experiences": (_report_page("experience", "Experiences", "/experiences"), ("limit",)),
    "/models": (_report_page("model", "Models", "/models"), ("limit",)),
    "/budgets": (budgets, ()),
}
