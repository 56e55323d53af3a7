"""Each outcome's runs together: a copy of the per-run row per (outcome name, run), with its outcomes.

The cost per outcome joins what runs achieved (:mod:`.outcome_sql`) to what they
cost (:data:`.runs_sql.RUNS`). Joined when asked, a third of 500,000 runs
recording an outcome took 0.8-1.3 s: each run's row looked up by key (SQLite) or
every run hashed (PostgreSQL). :data:`OUTCOME_RUNS` holds, for every run with
outcomes of a name, the run's per-run row with the name, the number of those
outcomes and the sum of their values in front; SQLite stores it ``WITHOUT
ROWID``, ordered by (name, use case, run id), so the runs of one outcome are one
range of the table (the report's sums per group in 30-400 ms at 10M calls);
PostgreSQL reads the same range through its primary key.

Kept exact in the transactions that change either side, as :mod:`.tag_runs_sql`
keeps each kept tag value's runs: after the per-run table changed, the copies of
the runs it touched are replaced (SQLite's fold from
:data:`.rollup_sql.FOLD_RUNS`; PostgreSQL's statement triggers), and after
outcomes are written, the copies of their runs (each store's
``write_outcomes``). A run whose outcomes come before its calls has no copy
until its per-run row exists; the fold or trigger that makes that row makes the
copy. In PostgreSQL a transaction writing outcomes first takes a lock on the
ledger that waits for its writers and holds them off until it commits
(:data:`PG_OUTCOME_WRITES_LOCK`): the per-run row's lock cannot order a run's
first calls with its outcome (neither sees the other's uncommitted row). Prune
copies again the runs whose outcomes it deleted (their per-run rows stay, like
every total the dashboard keeps); forget copies every run again once its ids
are replaced (:mod:`.erasure_sql`). Created and filled by the schema 13
migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from . import runs_sql as per_run
from .base import TABLE
from .outcome_sql import OUTCOMES_TABLE

__all__ = [
    "OUTCOME_RUNS",
    "PG_OUTCOME_WRITES_LOCK",
    "backfill",
    "pg_refresh",
    "refresh_runs",
    "sqlite_refresh",
    "tables",
]

OUTCOME_RUNS: Final = "usecase_outcome_runs"


def tables(dialect: str) -> list[str]:
    """The table and its index on (use case, run id), which the refresh of a run's copies seeks
    (idempotent)."""
    clustered = " WITHOUT ROWID" if dialect == "sqlite" else ""
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    count = "INTEGER" if dialect == "sqlite" else "BIGINT"
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {OUTCOME_RUNS} (name TEXT NOT NULL, outcomes {count} NOT NULL, "
            f"outcome_value {real} NOT NULL, {per_run.column_definitions(dialect)}, "
            f"PRIMARY KEY (name, use_case, run_id)){clustered}"
        ),
        f"CREATE INDEX IF NOT EXISTS {OUTCOME_RUNS}_run ON {OUTCOME_RUNS} (use_case, run_id)",
    ]


def _columns() -> str:
    return f"name, outcomes, outcome_value, {per_run.columns()}"


def _copied(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in per_run.columns().split(", "))


def _insert(runs: str, dialect: str) -> str:
    """The copies of the runs of ``runs`` (a query of ``use_case, run_id``, one row per run): their
    outcomes summed per name, from the outcomes' index on the run id, then their per-run rows by key."""
    if dialect == "sqlite":
        # (CROSS JOIN: SQLite reads the runs first, as written; the run's row is one per group)
        return (
            f"INSERT INTO {OUTCOME_RUNS} ({_columns()}) SELECT o.name, COUNT(*), SUM(o.value), {_copied('r')} "
            f"FROM ({runs}) AS l CROSS JOIN {OUTCOMES_TABLE} AS o CROSS JOIN {per_run.RUNS} AS r "
            "WHERE o.run_id = l.run_id AND o.use_case = l.use_case AND r.use_case = l.use_case "
            "AND r.run_id = l.run_id GROUP BY o.name, l.use_case, l.run_id"
        )
    return (
        f"INSERT INTO {OUTCOME_RUNS} ({_columns()}) SELECT o.name, o.n, o.v, {_copied('r')} FROM ({runs}) AS l "
        f"CROSS JOIN LATERAL (SELECT y.name, COUNT(*) AS n, SUM(y.value) AS v FROM {OUTCOMES_TABLE} AS y "
        "WHERE y.run_id = l.run_id AND y.use_case = l.use_case GROUP BY y.name) AS o "
        f"CROSS JOIN LATERAL (SELECT * FROM {per_run.RUNS} AS z WHERE z.use_case = l.use_case "
        "AND z.run_id = l.run_id OFFSET 0) AS r ORDER BY 1, 4, 5"
    )


def sqlite_refresh(touched: str) -> list[str]:
    """SQLite: replace the copies of the runs of ``touched`` (a table or query of ``use_case, run_id``)."""
    runs = f"SELECT x.use_case, x.run_id FROM {touched} AS x"
    return [
        f"DELETE FROM {OUTCOME_RUNS} WHERE (use_case, run_id) IN ({runs})",
        _insert(f"SELECT DISTINCT x.use_case, x.run_id FROM {touched} AS x", "sqlite"),
    ]


PG_OUTCOME_WRITES_LOCK: Final = f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE"
"""PostgreSQL: what a transaction writing outcomes takes first. It waits for the ledger's writers in
progress and holds new ones off until it commits (and other outcome writers), so that the two sides of a
run's copies never miss each other: the per-run row's lock cannot order a run's first calls with its
outcome (neither sees the other's uncommitted row). Outcomes are a few per run, written in small batches:
the ledger's writers wait for one of those transactions at most, and pay nothing in their own."""


def _replace(runs: str) -> list[str]:
    return [
        (
            f"DELETE FROM {OUTCOME_RUNS} USING ({runs}) AS l "
            f"WHERE {OUTCOME_RUNS}.use_case = l.use_case AND {OUTCOME_RUNS}.run_id = l.run_id"
        ),
        _insert(runs, "postgresql"),
    ]


def pg_refresh(touched: str) -> list[str]:
    """PostgreSQL, in the ledger's triggers: replace the copies of the runs of ``touched`` (a transition
    table or a query with ``use_case, run_id`` columns) once the per-run table changed; nothing to do in a
    store without outcomes (no outcome writer can be at work meanwhile: :data:`PG_OUTCOME_WRITES_LOCK`)."""
    runs = f"SELECT DISTINCT x.use_case, x.run_id FROM {touched} AS x"
    statements = ";\n    ".join(_replace(runs))
    return [f"IF EXISTS (SELECT 1 FROM {OUTCOMES_TABLE}) THEN\n    {statements};\n  END IF"]


def backfill(dialect: str) -> list[str]:
    """Fill the table from the outcomes and the per-run table (the schema 13 migration)."""
    every = f"SELECT DISTINCT use_case, run_id FROM {OUTCOMES_TABLE}"
    return [f"DELETE FROM {OUTCOME_RUNS}", _insert(every, dialect)]


_RUNS_PER_STATEMENT: Final = 200
"""Runs per statement of :func:`refresh_runs` (two parameters each: within SQLite's oldest limit, 999)."""


def refresh_runs(dialect: str, runs: Sequence[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
    """The statements replacing the copies of ``runs`` ((use case, run id) each, in key order) with their
    parameters: after outcomes of theirs were written, in the same transaction."""
    statements: list[tuple[str, list[Any]]] = []
    for start in range(0, len(runs), _RUNS_PER_STATEMENT):
        chunk = runs[start : start + _RUNS_PER_STATEMENT]
        values = ", ".join("(?, ?)" for _ in chunk)
        params = [v for run in chunk for v in run]
        if dialect == "sqlite":
            touched = f"(SELECT column1 AS use_case, column2 AS run_id FROM (VALUES {values}))"
            refresh = sqlite_refresh(touched)
        else:  # (after PG_OUTCOME_WRITES_LOCK)
            refresh = _replace(f"SELECT v.use_case, v.run_id FROM (VALUES {values}) AS v(use_case, run_id)")
        statements += [(sql, params) for sql in refresh]
    return statements
