"""The SQL of the dashboard's views (:mod:`otel_usecase.report.views`), for both stores.

Each query is built here from the filters and the one thing that differs per
store, :class:`ViewSQL` (how a token count is summed without overflowing, the
ledger's columns); :mod:`~otel_usecase.report.views` runs them through
:meth:`~otel_usecase.store.base.Store.query` and shapes the rows.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, NamedTuple

from . import totals
from .base import TABLE, TOKEN_COLUMNS, ReportFilter

__all__ = [
    "SERIES_KEYS",
    "ViewSQL",
    "run_costs_sql",
    "runs_sql",
    "series_sql",
    "summary_sql",
]


class ViewSQL(NamedTuple):
    """What a store tells the view queries about itself."""

    dialect: str
    """``sqlite`` or ``postgresql``."""
    token_sum: str
    """The store's overflow-proof sum of a token column (a format string with one ``{}``)."""
    present: frozenset[str]
    """The ledger's columns (fewer in a ledger of an older schema, read as it is)."""


SERIES_KEYS: Final[dict[str, str]] = {
    "use-case": "use_case",
    "user": "user_id",
    "experience": "experience_name",
    "model": "model",
    "step": "step",
    "version": "use_case_version",
    "cost-source": "cost_source",
}
"""``by`` values of a cost series and the one ledger column each stacks by."""

_STATUS_COUNTS: Final = tuple(
    (name, f"SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)") for name, status in totals.STATUS_COUNTS
)


def _tokens(view: ViewSQL) -> list[str]:
    return [view.token_sum.format(c) if c in view.present else "0" for c in TOKEN_COLUMNS]


def _error_count(present: Collection[str]) -> str:
    return "SUM(error)" if "error" in present else "0"


def summary_sql(view: ViewSQL, filters: ReportFilter) -> tuple[str, list[Any]]:
    """One row: calls, :data:`~otel_usecase.store.base.TOKEN_COLUMNS` sums, cost, the unpriced, no-usage,
    partial and error counts, then the number of runs (of (use case, run id))."""
    clause, params = totals.where(filters)
    selected = ", ".join(
        [
            "COUNT(*)",
            *_tokens(view),
            totals.COST,
            *(expression for _, expression in _STATUS_COUNTS),
            _error_count(view.present),
            f"(SELECT COUNT(*) FROM (SELECT 1 AS one FROM {TABLE}{clause} GROUP BY run_id, use_case) AS runs)",
        ]
    )
    return f"SELECT {selected} FROM {TABLE}{clause}", [*params, *params]


def series_sql(view: ViewSQL, filters: ReportFilter, bucket_ns: int, key: str) -> tuple[str, list[Any]]:
    """(bucket start ns, key value, cost, calls) per bucket of ``bucket_ns`` and value of column ``key``,
    in bucket then key order."""
    clause, params = totals.where(filters)
    key_sql = key if key in view.present else "NULL"
    bucket = f"(start_ns - start_ns % {int(bucket_ns)})"
    sql = (
        f"SELECT {bucket} AS bucket, {key_sql} AS series, {totals.COST}, COUNT(*) FROM {TABLE}{clause} "
        f"GROUP BY {bucket}, {key_sql} ORDER BY bucket, series"
    )
    return sql, params


RUN_FIELDS: Final = (
    "use_case",
    "run_id",
    "start_ns",
    "end_ns",
    "user_id",
    "experience_name",
    "experience_id",
    "use_case_version",
    "tags",
    "calls",
    *TOKEN_COLUMNS,
    "cost_usd",
    "incomplete_calls",
)
"""The columns of each row of :func:`runs_sql`, in order."""


def runs_sql(
    view: ViewSQL, filters: ReportFilter, order: str, limit: int, offset: int
) -> tuple[str, list[Any]]:
    """A page of runs (:data:`RUN_FIELDS`): ``newest`` (latest first call first) or ``cost`` (most
    expensive first, unknown cost last); ties by use case then run id."""
    clause, params = totals.where(filters)
    present = view.present

    def latest(column: str) -> str:
        return f"MAX({column})" if column in present else "NULL"

    incomplete = " + ".join(expression for _, expression in _STATUS_COUNTS)
    selected = ", ".join(
        [
            "use_case",
            "run_id",
            "MIN(start_ns) AS first_ns",
            "MAX(end_ns)",
            *(latest(c) for c in ("user_id", "experience_name", "experience_id", "use_case_version", "tags")),
            "COUNT(*)",
            *_tokens(view),
            f"{totals.COST} AS cost",
            incomplete,
        ]
    )
    ordering = (
        "first_ns DESC, use_case, run_id"
        if order == "newest"
        else "CASE WHEN SUM(cost_usd) IS NULL THEN 1 ELSE 0 END, cost DESC, use_case, run_id"
    )
    sql = f"SELECT {selected} FROM {TABLE}{clause} GROUP BY run_id, use_case ORDER BY {ordering} LIMIT ? OFFSET ?"
    return sql, [*params, int(limit), int(offset)]


def run_costs_sql(view: ViewSQL, filters: ReportFilter) -> tuple[str, list[Any]]:
    """(cost, incomplete calls) of every run the filters select, in no particular order."""
    del view  # the same on every store
    clause, params = totals.where(filters)
    incomplete = " + ".join(expression for _, expression in _STATUS_COUNTS)
    return f"SELECT {totals.COST}, {incomplete} FROM {TABLE}{clause} GROUP BY run_id, use_case", params
