"""The budgets table and the spend queries, as SQL both stores run (``?`` placeholders, portable).

Each store runs these in its own transaction (:meth:`SQLiteStore.budget_spend`,
:meth:`PostgresStore.budget_spend`): one read snapshot for a whole refresh, so
the window totals and the stored costs of this process's recent calls agree
(a call is either in the totals and found by its key, or in neither), which is
what lets the spend tracker add its local calls without counting one twice.

The spend index, ``(use_case, start_ns, cost_usd, status)``, is created with
the first budget (:data:`SAVE_STATEMENTS`), not with the ledger: a store
without budgets pays nothing on its writes (an index costs about 1.2 us per row
written in SQLite), and with one a window total reads only that use case's
rows of that window from the index, not the ledger (1M+ rows in the benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from .base import TABLE, TagValue, filter_clauses

__all__ = [
    "BUDGETS_TABLE",
    "CREATE_BUDGETS",
    "DELETE_SQL",
    "LIST_SQL",
    "SAVE_STATEMENTS",
    "Spend",
    "SpendQuery",
    "SpendSnapshot",
    "cost_sql",
    "latest_run_sql",
    "runs_sql",
    "window_sql",
]

BUDGETS_TABLE: Final = "otel_usecase_budgets"
CREATE_BUDGETS: Final = (
    f"CREATE TABLE IF NOT EXISTS {BUDGETS_TABLE} "
    "(name TEXT PRIMARY KEY, spec TEXT NOT NULL, updated_ns BIGINT NOT NULL)"
)
SPEND_INDEX: Final = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_budget_spend ON {TABLE} (use_case, start_ns, cost_usd, status)"
)
UPSERT_SQL: Final = (
    f"INSERT INTO {BUDGETS_TABLE} (name, spec, updated_ns) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_ns = excluded.updated_ns"
)
SAVE_STATEMENTS: Final = (CREATE_BUDGETS, SPEND_INDEX)
"""Run before the first upsert (idempotent): a ledger created before budgets existed gets the table here."""
DELETE_SQL: Final = f"DELETE FROM {BUDGETS_TABLE} WHERE name = ?"
LIST_SQL: Final = f"SELECT name, spec, updated_ns FROM {BUDGETS_TABLE} ORDER BY name"

_CHUNK: Final = 400
"""Run ids or call keys per statement (well under SQLite's 999 and PostgreSQL's 65535 parameters)."""


class SpendQuery(NamedTuple):
    """Which calls count: a budget's selector, the window's bounds on ``start_ns`` (None: unbounded)."""

    use_case: str
    user_id: str | None = None
    experience_name: str | None = None
    version: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    tags: tuple[tuple[str, str], ...] = ()
    """(key, value) pairs the calls' tags must all have; read through the store's ``tag_value`` SQL (not in
    the spend index: a budget with tags reads its use case's rows of the window from the ledger)."""


class Spend(NamedTuple):
    """What the calls of a window cost: the sum of ``cost_usd`` and the calls left out of it.

    ``unpriced_calls``: calls whose cost is unknown (unpriced, no usage) or a lower
    bound (partial): when not 0, ``cost_usd`` is a lower bound.
    """

    cost_usd: float
    unpriced_calls: int


class SpendSnapshot(NamedTuple):
    """One read of the store for a tracker refresh (see :meth:`Store.budget_spend`)."""

    windows: list[Spend]
    """Per window query, in order."""
    runs: list[dict[str, Spend]]
    """Per run query, the spend of each run id asked for that has calls."""
    costs: dict[tuple[str, str], float | None]
    """The stored ``cost_usd`` of each call key asked for that is in the ledger."""


_SUMS: Final = (
    "COALESCE(SUM(cost_usd), 0), "
    "COALESCE(SUM(CASE WHEN cost_usd IS NULL OR status = 'partial' THEN 1 ELSE 0 END), 0)"
)


def _where(query: SpendQuery, tag_value: TagValue | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["use_case = ?"]
    params: list[Any] = [query.use_case]
    for column, value in (
        ("user_id", query.user_id),
        ("experience_name", query.experience_name),
        ("use_case_version", query.version),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(str(value))
    if query.start_ns is not None:
        clauses.append("start_ns >= ?")
        params.append(query.start_ns)
    if query.end_ns is not None:
        clauses.append("start_ns < ?")
        params.append(query.end_ns)
    if query.tags:
        tag_clauses, tag_params = filter_clauses(None, None, tags=query.tags, tag_value=tag_value)
        clauses += tag_clauses
        params += tag_params
    return " AND ".join(clauses), params


def window_sql(query: SpendQuery, tag_value: TagValue | None = None) -> tuple[str, list[Any]]:
    """One row: the cost and the unpriced calls of ``query``'s calls (``tag_value``: the store's tag SQL,
    needed for a query with tags)."""
    where, params = _where(query, tag_value)
    return f"SELECT {_SUMS} FROM {TABLE} WHERE {where}", params


def runs_sql(
    query: SpendQuery, run_ids: Sequence[str], tag_value: TagValue | None = None
) -> list[tuple[str, list[Any]]]:
    """Statements returning ``(run_id, cost, unpriced calls)`` for each of ``run_ids`` that has calls."""
    where, params = _where(query._replace(start_ns=None, end_ns=None), tag_value)
    statements = []
    for at in range(0, len(run_ids), _CHUNK):
        chunk = list(run_ids[at : at + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        statements.append(
            (
                f"SELECT run_id, {_SUMS} FROM {TABLE} WHERE {where} AND run_id IN ({marks}) GROUP BY run_id",
                [*params, *chunk],
            )
        )
    return statements


def cost_sql(keys: Sequence[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
    """Statements returning ``(trace_id, span_id, cost_usd)`` for each of ``keys`` in the ledger (primary key)."""
    statements = []
    for at in range(0, len(keys), _CHUNK):
        chunk = keys[at : at + _CHUNK]
        rows = ", ".join("(?, ?)" for _ in chunk)
        statements.append(
            (
                f"SELECT trace_id, span_id, cost_usd FROM {TABLE} WHERE (trace_id, span_id) IN (VALUES {rows})",
                [value for key in chunk for value in key],
            )
        )
    return statements


def latest_run_sql(query: SpendQuery, tag_value: TagValue | None = None) -> tuple[str, list[Any]]:
    """One row or none: the run id of the selector's most recent call (``budgets status`` of a run budget)."""
    where, params = _where(query._replace(start_ns=None, end_ns=None), tag_value)
    return f"SELECT run_id FROM {TABLE} WHERE {where} ORDER BY start_ns DESC LIMIT 1", params


def snapshot(
    execute: Any,
    windows: Sequence[SpendQuery],
    runs: Sequence[tuple[SpendQuery, Sequence[str]]],
    keys: Sequence[tuple[str, str]],
    tag_value: TagValue | None = None,
) -> SpendSnapshot:
    """Run every statement of a refresh through ``execute(sql, params) -> rows`` (inside one transaction)."""
    totals = []
    for query in windows:
        rows = execute(*window_sql(query, tag_value))
        cost, unpriced = rows[0] if rows else (0, 0)
        totals.append(Spend(float(cost or 0), int(unpriced or 0)))
    per_run: list[dict[str, Spend]] = []
    for query, run_ids in runs:
        found: dict[str, Spend] = {}
        for sql, params in runs_sql(query, run_ids, tag_value):
            for run_id, cost, unpriced in execute(sql, params):
                found[str(run_id)] = Spend(float(cost or 0), int(unpriced or 0))
        per_run.append(found)
    costs: dict[tuple[str, str], float | None] = {}
    for sql, params in cost_sql(keys):
        for trace_id, span_id, cost in execute(sql, params):
            costs[(str(trace_id), str(span_id))] = None if cost is None else float(cost)
    return SpendSnapshot(totals, per_run, costs)
