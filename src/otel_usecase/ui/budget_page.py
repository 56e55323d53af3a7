"""The budgets page: each budget's spend against its limit in its current window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import Store
from .app import Response
from .layout import Column, downloads, id_cell, table, when
from .markup import Markup, el, join, text
from .panels import html_page
from .params import Filters, Params, query_string

if TYPE_CHECKING:
    from ..budgets.api import BudgetStatus

__all__ = ["budgets", "visible_budgets"]


def visible_budgets(store: Store, filters: Filters) -> list[BudgetStatus]:
    """The status of each budget of the use cases the reader may see (of ``use_case`` when it is given)."""
    from ..budgets.api import budget_status

    return [
        s
        for s in budget_status(store)
        if filters.use_case in (None, s.budget.use_case)
        and (filters.use_cases is None or s.budget.use_case in filters.use_cases)
    ]


def budgets(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    statuses = visible_budgets(store, filters)
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
    return html_page("Budgets", body, root, "/budgets", filters)


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
