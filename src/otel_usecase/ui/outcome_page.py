"""The outcomes page: what each group's runs cost per outcome they achieved (``report --per-outcome``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..report.outcomes import OUTCOME_GROUPINGS, OutcomeRow, outcome_report
from ..report.queries import GROUPINGS
from ..report.text import cost_decimals, money
from ..store import Store
from .app import Response
from .layout import Column, downloads, id_cell, table
from .markup import Markup, el, join
from .panels import hidden_params, html_page, own_params
from .params import Params, query_string

__all__ = ["OUTCOME_PARAMS", "outcomes"]

OUTCOME_PARAMS: Final = ("outcome", "by", "limit")


def _key_cell(key: str) -> Callable[[OutcomeRow], Markup]:
    def cell(row: OutcomeRow) -> Markup:
        return id_cell(row.key.get(key))

    return cell


def outcomes(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    name = params.get("outcome")
    by = params.choice("by", OUTCOME_GROUPINGS, "use-case")
    fields = [("outcome", "Outcome", name or "", "name given to record_outcome")]
    if name is None:
        body = el(
            "p",
            "Give the name of an outcome (as passed to record_outcome) to see the cost per outcome.",
            class_="empty",
        )
        return html_page(
            "Cost per outcome",
            body,
            root,
            "/outcomes",
            filters,
            extra=fields,
            hidden=hidden_params(params, "by"),
        )
    limit = params.number("limit", 100, 1, 10_000)
    report = outcome_report(store, filters.report_filter(), name, by, limit + 1)  # (one more: is there?)
    shown = report.rows[:limit]
    decimals = cost_decimals(
        v for r in shown for v in (r.cost_usd, r.cost_per_outcome_usd, r.cost_without_outcome_usd)
    )

    def usd(value: float | None, complete: bool = True) -> str:
        return "-" if value is None else money(value, decimals, lower_bound=not complete)

    columns = [Column(k.replace("_", " "), _key_cell(k)) for k in GROUPINGS[by]]
    columns += [
        Column("runs", lambda r: f"{r.runs:,}", True),
        Column("with outcome", lambda r: f"{r.runs_with_outcome:,}", True),
        Column("without", lambda r: f"{r.runs_without_outcome:,}", True),
        Column("outcomes", lambda r: f"{r.outcomes:,}", True),
        Column("value", lambda r: f"{r.outcome_value:,.6g}", True),
        Column("calls", lambda r: f"{r.calls:,}", True),
        Column("cost", lambda r: usd(r.cost_usd, r.cost_complete), True),
        Column("cost per outcome", lambda r: usd(r.cost_per_outcome_usd, r.cost_complete), True),
        Column("cost without outcome", lambda r: usd(r.cost_without_outcome_usd, r.cost_complete), True),
    ]
    switch = el(
        "p",
        "By: ",
        [
            join(
                [
                    el(
                        "a",
                        b,
                        href=root + "/outcomes" + query_string(filters, **own_params(params, by=b)),
                        class_="here" if b == by else None,
                    ),
                    " ",
                ]
            )
            for b in OUTCOME_GROUPINGS
        ],
        class_="switch",
    )
    outside = (
        el(
            "p",
            f"{report.outside_outcomes:,} outcomes (value {report.outside_value:,.6g}) belong to runs with no "
            "call in this selection and are not counted above.",
            class_="note",
        )
        if report.outside_outcomes
        else None
    )
    body = el(
        "section",
        switch,
        table(columns, shown, id_="outcomes"),
        el("p", f"The {limit:,} most expensive; the downloads have every row.", class_="note")
        if len(report.rows) > limit
        else None,
        outside,
        downloads(root, "/api/outcomes", filters, outcome=name, by=by),
        class_="panel",
    )
    return html_page(
        f"Cost per outcome {name}",
        body,
        root,
        "/outcomes",
        filters,
        extra=fields,
        hidden=hidden_params(params, "by", "limit"),
    )
