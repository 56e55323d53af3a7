"""The rollups: per-hour and per-run totals the databases keep beside the ledger, and the dashboard's SQL.

Two tables, maintained by the database itself in the transaction that writes
the ledger (so a report can never see a call without its totals, nor twice):

* :data:`HOUR_ROLLUP`, one row per (hour, use case, version, experience name,
  provider, model, step, cost source): calls, token sums, cost, the unpriced,
  no-usage, partial and error counts. Sums over time, stacked series, the
  overview.
* :data:`RUN_ROLLUP`, one row per (use case, run id, hour, user, experience name and
  id, version, tags): the same totals plus the cell's first and last call. Runs:
  their number, a page of runs, the per-run cost distribution, the per-run
  figures of a report. A run within one hour (most) is one row.

Both are keyed by hour, so a filter on whole hours reads them exactly; a window
that starts or ends mid-hour reads its whole hours from them and its partial
hours from the ledger (:func:`_edges`); any other filter (a model with a user
...) reads the ledger, which is exact too, only slower.

How they stay exact:

* SQLite: row triggers (``AFTER INSERT``, ``AFTER UPDATE``) set each new row, and
  each replaced one with a minus sign, aside in :data:`PENDING`, inside the
  writer's transaction; a writer folds them into the rollups every second or so
  (:func:`sqlite_fold`: one update per cell, not per call; a row-by-row upsert
  doubled the cost of a write), and readers add the pending rows themselves
  (:func:`_with_pending`), so every figure is exact from the commit on.
* PostgreSQL: statement-level triggers with transition tables aggregate the rows
  a statement inserted or changed and apply the deltas in key order (``INSERT
  ... SELECT ... GROUP BY ... ORDER BY key ON CONFLICT DO UPDATE``): every writer
  locks rollup rows in the same order, so concurrent writers queue instead of
  deadlocking. The store writes a batch in one statement, so the rollups cost one
  trigger run per batch.
* A replaced row (a more complete copy, ``reprice``) is subtracted from its old
  cells and added to its new ones; the first/last times of a run cell it leaves are
  computed again from the ledger (a run's rows, read through the covering index).
* Costs are sums of doubles, so the rollup's cost equals the ledger's ``SUM`` to
  floating-point rounding (added and taken out in another order); counts and
  tokens are integers and exactly equal. A cost is known (not NULL) when the cell
  has a call with a cost (``cost_calls``).
* Created and filled from the ledger by the schema migration (schema 5).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import cache
from typing import Any, Final, NamedTuple

from . import groups_sql, outcome_runs_sql, tag_runs_sql, totals
from . import runs_sql as per_run
from .base import COLUMNS, LEDGER, RUN_TOTALS, TABLE, TOKEN_COLUMNS, ReportFilter, TagValue, filter_clauses

__all__ = [
    "DAY_NS",
    "DAY_ROLLUP",
    "HOUR_COLUMNS",
    "HOUR_NS",
    "HOUR_ROLLUP",
    "MEASURES",
    "RUN_FIELDS",
    "RUN_ROLLUP",
    "SERIES_KEYS",
    "ViewSQL",
    "ddl",
    "ledger_sums",
    "run_costs_sql",
    "runs_sql",
    "series_sql",
    "summary_sql",
]

HOUR_NS: Final = 3_600_000_000_000
DAY_NS: Final = 24 * HOUR_NS
HOUR_ROLLUP: Final = "usecase_hour_rollup"
DAY_ROLLUP: Final = "usecase_day_rollup"
"""The hour rollup summed per UTC day (``day_ns``, same keys, schema 8): a series by day over months reads
a 24th of the cells."""
RUN_ROLLUP: Final = "usecase_run_rollup"

_HOUR_KEYS: Final = (
    "use_case",
    "use_case_version",
    "experience_name",
    "provider",
    "model",
    "step",
    "cost_source",
)
"""The hour rollup's key columns after ``hour_ns``."""


def _run_keys() -> tuple[str, ...]:
    """The run rollup's key columns after ``use_case, run_id, hour_ns`` (``tags`` once the ledger has it)."""
    return ("user_id", "experience_name", "experience_id", "use_case_version") + (
        ("tags",) if "tags" in COLUMNS else ()
    )


_NULLABLE_KEYS: Final = frozenset(
    ("use_case_version", "experience_name", "provider", "model", "step", "cost_source")
    + ("user_id", "experience_id", "tags")
)

MEASURES: Final = (
    "calls",
    *TOKEN_COLUMNS,
    "cost_usd",
    "cost_calls",
    "unpriced_calls",
    "no_usage_calls",
    "partial_calls",
    "error_calls",
)
"""What each rollup row sums, in order."""


def _measure(name: str, row: str) -> str:
    """The contribution of one ledger row (``row``: ``NEW``, ``OLD`` or a table alias) to ``name``."""
    if name == "calls":
        return "1"
    if name in TOKEN_COLUMNS:
        return f"COALESCE({row}.{name}, 0)"
    if name == "cost_usd":
        return f"COALESCE({row}.cost_usd, 0)"
    if name == "cost_calls":
        return f"CASE WHEN {row}.cost_usd IS NULL THEN 0 ELSE 1 END"
    if name == "error_calls":
        return f"COALESCE({row}.error, 0)"
    status = {"unpriced_calls": "unpriced", "no_usage_calls": "no_usage", "partial_calls": "partial"}[name]
    return f"CASE WHEN {row}.status = '{status}' THEN 1 ELSE 0 END"


def _hour(row: str) -> str:
    """The start of the UTC hour of ``row.start_ns`` (floor, also before 1970)."""
    return f"({row}.start_ns - (({row}.start_ns % {HOUR_NS}) + {HOUR_NS}) % {HOUR_NS})"


def _day(expression: str) -> str:
    """The start of the UTC day of the time ``expression`` (floor, also before 1970)."""
    return f"({expression} - (({expression} % {DAY_NS}) + {DAY_NS}) % {DAY_NS})"


class _Dialect(NamedTuple):
    none: str
    """A text no key holds, standing for NULL in the unique indexes (ids never hold control characters)."""
    least: str
    greatest: str
    real: str
    int: str
    total: str
    """The type of a token sum: SQLite's integers turn into reals past int64 instead of failing;
    PostgreSQL's ``bigint`` would fail the write of a row past the store with a count near 2**63
    (the store itself bounds counts), so its token sums are ``numeric``, as its reports' sums are."""


_DIALECTS: Final = {
    "sqlite": _Dialect("char(1)", "MIN", "MAX", "REAL", "INTEGER", "INTEGER"),
    "postgresql": _Dialect("chr(1)", "LEAST", "GREATEST", "DOUBLE PRECISION", "BIGINT", "NUMERIC"),
}


def _key_expr(column: str, dialect: _Dialect) -> str:
    return f"COALESCE({column}, {dialect.none})" if column in _NULLABLE_KEYS else column


def _hour_key() -> tuple[str, ...]:
    return ("hour_ns", *_HOUR_KEYS)


def _day_key() -> tuple[str, ...]:
    return ("day_ns", *_HOUR_KEYS)


def _run_key() -> tuple[str, ...]:
    return ("use_case", "run_id", "hour_ns", *_run_keys())


def _tables(d: _Dialect) -> list[str]:
    def measures() -> str:
        kinds = {
            "cost_usd": f"{d.real} NOT NULL DEFAULT 0",
            **{t: f"{d.total} NOT NULL DEFAULT 0" for t in TOKEN_COLUMNS},
        }
        return ", ".join(f"{m} {kinds.get(m, f'{d.int} NOT NULL DEFAULT 0')}" for m in MEASURES)

    def key_columns(keys: Sequence[str]) -> str:
        return ", ".join(
            f"{k} {d.int} NOT NULL"
            if k in ("hour_ns", "day_ns")
            else f"{k} TEXT{'' if k in _NULLABLE_KEYS else ' NOT NULL'}"
            for k in keys
        )

    def unique(table: str, keys: Sequence[str]) -> str:
        return (
            f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} "
            f"({', '.join(_key_expr(k, d) for k in keys)})"
        )

    return [
        f"CREATE TABLE IF NOT EXISTS {HOUR_ROLLUP} ({key_columns(_hour_key())}, {measures()})",
        unique(HOUR_ROLLUP, _hour_key()),
        f"CREATE TABLE IF NOT EXISTS {DAY_ROLLUP} ({key_columns(_day_key())}, {measures()})",
        unique(DAY_ROLLUP, _day_key()),
        (
            f"CREATE TABLE IF NOT EXISTS {RUN_ROLLUP} ({key_columns(_run_key())}, "
            f"first_ns {d.int} NOT NULL, last_ns {d.int} NOT NULL, end_ns {d.int} NOT NULL, {measures()})"
        ),
        unique(RUN_ROLLUP, _run_key()),
        f"CREATE INDEX IF NOT EXISTS {RUN_ROLLUP}_latest ON {RUN_ROLLUP} (last_ns)",
    ]


def _conflict(keys: Sequence[str], d: _Dialect) -> str:
    return f"ON CONFLICT ({', '.join(_key_expr(k, d) for k in keys)})"


def _add_measures(table: str) -> str:
    return ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES)


def _add_times(table: str, d: _Dialect) -> str:
    return (
        f"first_ns = {d.least}({table}.first_ns, excluded.first_ns), "
        f"last_ns = {d.greatest}({table}.last_ns, excluded.last_ns), "
        f"end_ns = {d.greatest}({table}.end_ns, excluded.end_ns)"
    )


def _key_values(keys: Sequence[str], row: str) -> list[str]:
    return [
        _hour(row) if k == "hour_ns" else _day(f"{row}.start_ns") if k == "day_ns" else f"{row}.{k}"
        for k in keys
    ]


# --- SQLite: row triggers into a pending table, folded per write -------------------------------

PENDING: Final = "usecase_rollup_pending"
"""SQLite: the ledger rows written (``sign`` 1) and replaced (``sign`` -1) since the last fold."""


def _pending_columns() -> tuple[str, ...]:
    needed = {
        *("start_ns", "end_ns", *_HOUR_KEYS, *_run_key(), *TOKEN_COLUMNS, "cost_usd", "status", "error"),
        *(k for g in groups_sql.CALL_GROUPINGS for k in g.keys),
        *per_run.RUN_ONLY_DIMS,
    }
    return tuple(c for c in COLUMNS if c in needed)


def _sqlite_total(expression: str, measure: str) -> str:
    """SQLite's sum of ``expression`` that never fails: ``SUM`` raises "integer overflow" on a row of 2**63 - 1
    tokens (a program writing past the store can leave one); ``TOTAL`` is a double, exact below 2**53, and the
    cast back saturates, as the reports' token sums do."""
    if measure == "cost_usd":
        return f"TOTAL({expression})"
    return f"CAST(TOTAL({expression}) AS INTEGER)"


def _sqlite_tables() -> list[str]:
    kinds = {name: kind for name, kind, _ in LEDGER}
    types = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "flag": "INTEGER"}
    columns = ", ".join(f"{c} {types[kinds[c]]}" for c in _pending_columns())
    return [f"CREATE TABLE IF NOT EXISTS {PENDING} (sign INTEGER NOT NULL, {columns})"]


def _sqlite_triggers() -> list[str]:
    cols = _pending_columns()
    names = ", ".join(cols)

    def values(sign: int, row: str) -> str:
        return f"({sign}, {', '.join(f'{row}.{c}' for c in cols)})"

    return [
        f"DROP TRIGGER IF EXISTS {TABLE}_rollup_insert",
        f"DROP TRIGGER IF EXISTS {TABLE}_rollup_update",
        (
            f"CREATE TRIGGER {TABLE}_rollup_insert AFTER INSERT ON {TABLE} BEGIN "
            f"INSERT INTO {PENDING} (sign, {names}) VALUES {values(1, 'NEW')}; END"
        ),
        (
            f"CREATE TRIGGER {TABLE}_rollup_update AFTER UPDATE ON {TABLE} BEGIN "
            f"INSERT INTO {PENDING} (sign, {names}) VALUES {values(-1, 'OLD')}, {values(1, 'NEW')}; END"
        ),
    ]


FOLD_CELLS: Final = "usecase_fold_cells"
FOLD_RUNS: Final = "usecase_fold_runs"
"""SQLite: the (use case, run id) of the fold's cells, once each: the runs whose per-run and group rows the
fold changes (:func:`.groups_sql.sqlite_before`)."""
"""SQLite: the pending rows of one fold summed per finest cell (every key of every table the fold keeps), in a
temporary table of the writer's connection: each table is then summed from these cells, not from every row."""


def _cell_keys() -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            (
                *_hour_key(),
                *_run_key(),
                *per_run.RUN_ONLY_DIMS,
                *(k for g in groups_sql.CALL_GROUPINGS for k in g.keys),
            )
        )
    )


def contribution(m: str, row: str, source: str) -> str:
    """What one row ``row`` adds to measure ``m``: a ledger row (``source`` ``row``), a pending row with its
    ``sign`` (``signed``), or a fold cell whose measures are sums already (``cell``)."""
    if source == "cell":
        return f"{row}.{m}"
    if source == "signed":
        return f"{row}.sign * ({_measure(m, row)})"
    return _measure(m, row)


def _fold_cells() -> list[str]:
    """Sum the pending rows into :data:`FOLD_CELLS` (created on first use; emptied first)."""
    keys = _cell_keys()
    kinds = {"hour_ns": "INTEGER"}
    columns = ", ".join(
        [f"{k} {kinds.get(k, 'TEXT')}" for k in keys]
        + [f"{t} INTEGER" for t in ("first_ns", "last_ns", "end_ns")]
        + [f"{m} {'REAL' if m == 'cost_usd' else 'INTEGER'}" for m in MEASURES]
    )
    values = _key_values(keys, "r")
    measures = ", ".join(_sqlite_total(contribution(m, "r", "signed"), m) for m in MEASURES)
    return [
        f"CREATE TEMP TABLE IF NOT EXISTS {FOLD_CELLS} ({columns})",
        f"DELETE FROM temp.{FOLD_CELLS}",
        (
            f"INSERT INTO temp.{FOLD_CELLS} ({', '.join((*keys, 'first_ns', 'last_ns', 'end_ns', *MEASURES))}) "
            f"SELECT {', '.join(values)}, MIN(r.start_ns), MAX(r.start_ns), MAX(r.end_ns), {measures} "
            f"FROM {PENDING} AS r GROUP BY {', '.join(values)}"
        ),
        f"CREATE TEMP TABLE IF NOT EXISTS {FOLD_RUNS} (use_case TEXT, run_id TEXT, PRIMARY KEY (use_case, run_id))",
        f"DELETE FROM temp.{FOLD_RUNS}",
        f"INSERT OR IGNORE INTO temp.{FOLD_RUNS} SELECT use_case, run_id FROM temp.{FOLD_CELLS}",
    ]


def sqlite_fold() -> tuple[str, ...]:
    """SQLite: the statements adding the pending rows to the rollups, the per-run table and the groups
    (:mod:`.groups_sql`): the rows summed once per finest cell (:data:`FOLD_CELLS`), each table then summed
    from the cells; removing the run cells and runs they emptied, recomputing the times of those rows left,
    and emptying the pending table. The store runs them in every writing transaction, after its writes
    (:data:`PENDING`)."""
    return _sqlite_fold(True)


@cache
def _sqlite_fold(cells: bool) -> tuple[str, ...]:
    """:func:`sqlite_fold`; without ``cells``, each table summed from the pending rows themselves (the
    migration folds an older file's pending table, which lacks columns the cells have)."""
    d = _DIALECTS["sqlite"]
    hour_keys, run_keys = _hour_key(), _run_key()
    source = f"temp.{FOLD_CELLS}" if cells else PENDING
    kind = "cell" if cells else "signed"
    measures = ", ".join(_sqlite_total(contribution(m, "r", kind), m) for m in MEASURES)
    hour_values = ", ".join(f"r.{k}" for k in hour_keys) if cells else ", ".join(_key_values(hour_keys, "r"))
    run_values = ", ".join(f"r.{k}" for k in run_keys) if cells else ", ".join(_key_values(run_keys, "r"))
    times = (
        "MIN(r.first_ns), MAX(r.last_ns), MAX(r.end_ns)"
        if cells
        else "MIN(r.start_ns), MAX(r.start_ns), MAX(r.end_ns)"
    )
    hour_cols = ", ".join((*hour_keys, *MEASURES))
    run_cols = ", ".join((*run_keys, "first_ns", "last_ns", "end_ns", *MEASURES))
    left = " AND ".join(
        f"t.{k} = {v}" if k not in _NULLABLE_KEYS else f"t.{k} IS {v}"
        for k, v in zip(run_keys, _key_values(run_keys, "o"))
    )
    left_cells = f"SELECT t.rowid FROM {PENDING} AS o JOIN {RUN_ROLLUP} AS t ON {left} WHERE o.sign < 0"
    ledger_cell = " AND ".join(
        [
            f"c.use_case = {RUN_ROLLUP}.use_case",
            f"c.run_id = {RUN_ROLLUP}.run_id",
            f"{_hour('c')} = {RUN_ROLLUP}.hour_ns",
            *(f"c.{k} IS {RUN_ROLLUP}.{k}" for k in _run_keys()),
        ]
    )
    recompute = ", ".join(
        f"{name} = COALESCE((SELECT {agg}(c.{column}) FROM {TABLE} AS c WHERE {ledger_cell}), {name})"
        for name, agg, column in (
            ("first_ns", "MIN", "start_ns"),
            ("last_ns", "MAX", "start_ns"),
            ("end_ns", "MAX", "end_ns"),
        )
    )
    day_keys = _day_key()
    day_values = ", ".join([_day("r.hour_ns"), *(f"r.{k}" for k in _HOUR_KEYS)])
    day = (
        f"INSERT INTO {DAY_ROLLUP} ({', '.join((*day_keys, *MEASURES))}) SELECT {day_values}, {measures} "
        f"FROM {source} AS r WHERE true GROUP BY {day_values} {_conflict(day_keys, d)} "
        f"DO UPDATE SET {_add_measures(DAY_ROLLUP)}"
    )
    return (
        *(_fold_cells() if cells else ()),
        (
            f"INSERT INTO {HOUR_ROLLUP} ({hour_cols}) SELECT {hour_values}, {measures} FROM {source} AS r WHERE true "
            f"GROUP BY {hour_values} {_conflict(hour_keys, d)} DO UPDATE SET {_add_measures(HOUR_ROLLUP)}"
        ),
        *((day,) if cells else ()),
        (
            f"INSERT INTO {RUN_ROLLUP} ({run_cols}) SELECT {run_values}, {times}, "
            f"{measures} FROM {source} AS r WHERE true GROUP BY {run_values} {_conflict(run_keys, d)} "
            f"DO UPDATE SET {_add_times(RUN_ROLLUP, d)}, {_add_measures(RUN_ROLLUP)}"
        ),
        f"DELETE FROM {RUN_ROLLUP} WHERE calls <= 0 AND rowid IN ({left_cells})",
        f"UPDATE {RUN_ROLLUP} SET {recompute} WHERE rowid IN ({left_cells})",
        *(groups_sql.sqlite_register() if cells else ()),
        *(groups_sql.sqlite_before() if cells else ()),
        *per_run.sqlite_fold(cells),
        *(groups_sql.sqlite_fold() if cells else ()),
        *(groups_sql.sqlite_after() if cells else ()),
        *(tag_runs_sql.sqlite_refresh(f"temp.{FOLD_RUNS}") if cells else ()),
        *(outcome_runs_sql.sqlite_refresh(f"temp.{FOLD_RUNS}") if cells else ()),
        f"DELETE FROM {PENDING}",
    )


def _sqlite_fold_older(runs: bool) -> list[str]:
    """The fold of an older file's pending rows into the tables it has (the rollups; ``runs``: the per-run
    table too), then its pending table dropped (the new one has more columns): the migration runs it before
    it fills the newer tables from the ledger (which has those rows already)."""
    folded = [s for s in _sqlite_fold(False) if runs or f" {per_run.RUNS} " not in s]
    return [*folded, f"DROP TABLE IF EXISTS {PENDING}"]


def _sqlite_ddl() -> list[str]:
    d = _DIALECTS["sqlite"]
    return [
        *_tables(d),
        *per_run.tables("sqlite"),
        *groups_sql.tables("sqlite"),
        *tag_runs_sql.tables("sqlite"),
        *outcome_runs_sql.tables("sqlite"),
        *_sqlite_tables(),
        *_sqlite_triggers(),
    ]


# --- PostgreSQL: statement-level triggers with transition tables ------------------------------


def _pg_apply(source: str, sign_column: bool) -> list[str]:
    """Upserts adding the rows of ``source`` (a transition table or a query with a ``sign`` column when
    ``sign_column``) to both rollups, aggregated per cell and applied in key order."""
    d = _DIALECTS["postgresql"]
    hour_keys, run_keys = _hour_key(), _run_key()

    def summed(m: str) -> str:
        contribution = _measure(m, "r")
        return f"SUM(r.sign * ({contribution}))" if sign_column else f"SUM({contribution})"

    def grouped(keys: Sequence[str]) -> tuple[str, str]:
        values = _key_values(keys, "r")
        order = ", ".join(_key_expr(v, d) if k in _NULLABLE_KEYS else v for k, v in zip(keys, values))
        return ", ".join(values), order

    hour_values, hour_order = grouped(hour_keys)
    day_values, day_order = grouped(_day_key())
    run_values, run_order = grouped(run_keys)
    # Old rows' times are within their cell's already: LEAST/GREATEST with them change nothing, and a
    # cell only old rows touch needs a value here too (NOT NULL is checked before the conflict is).
    times = "MIN(r.start_ns), MAX(r.start_ns), MAX(r.end_ns)"
    measures = ", ".join(summed(m) for m in MEASURES)
    hour_cols = ", ".join((*hour_keys, *MEASURES))
    run_cols = ", ".join((*run_keys, "first_ns", "last_ns", "end_ns", *MEASURES))
    return [
        (
            f"INSERT INTO {HOUR_ROLLUP} AS t ({hour_cols}) SELECT {hour_values}, {measures} FROM {source} AS r "
            f"GROUP BY {hour_values} ORDER BY {hour_order} {_conflict(hour_keys, d)} DO UPDATE SET {_add_measures('t')}"
        ),
        (
            f"INSERT INTO {DAY_ROLLUP} AS t ({', '.join((*_day_key(), *MEASURES))}) SELECT {day_values}, {measures} "
            f"FROM {source} AS r GROUP BY {day_values} ORDER BY {day_order} {_conflict(_day_key(), d)} "
            f"DO UPDATE SET {_add_measures('t')}"
        ),
        (
            f"INSERT INTO {RUN_ROLLUP} AS t ({run_cols}) SELECT {run_values}, {times}, {measures} FROM {source} AS r "
            f"GROUP BY {run_values} ORDER BY {run_order} {_conflict(run_keys, d)} "
            f"DO UPDATE SET {_add_times('t', d)}, {_add_measures('t')}"
        ),
    ]


def _pg_ddl() -> list[str]:
    d = _DIALECTS["postgresql"]
    columns = ", ".join(COLUMNS)
    changed = (
        f"(SELECT 1 AS sign, {columns} FROM new_rows UNION ALL SELECT -1 AS sign, {columns} FROM old_rows)"
    )
    run_keys = _run_key()
    old_cells = ", ".join(_key_values(run_keys, "o"))
    match = " AND ".join(
        f"t.{k} = x.{k}" if k not in _NULLABLE_KEYS else f"t.{k} IS NOT DISTINCT FROM x.{k}" for k in run_keys
    )
    ledger_match = " AND ".join(
        [
            "c.use_case = x.use_case",
            "c.run_id = x.run_id",
            f"{_hour('c')} = x.hour_ns",
            *(f"c.{k} IS NOT DISTINCT FROM x.{k}" for k in _run_keys()),
        ]
    )
    recompute = (
        f"UPDATE {RUN_ROLLUP} AS t SET first_ns = s.first_ns, last_ns = s.last_ns, end_ns = s.end_ns "
        f"FROM (SELECT x.*, (SELECT MIN(c.start_ns) FROM {TABLE} AS c WHERE {ledger_match}) AS first_ns, "
        f"(SELECT MAX(c.start_ns) FROM {TABLE} AS c WHERE {ledger_match}) AS last_ns, "
        f"(SELECT MAX(c.end_ns) FROM {TABLE} AS c WHERE {ledger_match}) AS end_ns "
        f"FROM (SELECT DISTINCT {old_cells} FROM old_rows AS o) AS x({', '.join(run_keys)})) AS s "
        f"WHERE {match.replace('x.', 's.')} AND s.first_ns IS NOT NULL"
    )
    emptied = (
        f"DELETE FROM {RUN_ROLLUP} AS t USING (SELECT DISTINCT {old_cells} FROM old_rows AS o) "
        f"AS x({', '.join(run_keys)}) WHERE {match} AND t.calls <= 0"
    )
    insert_body = ";\n  ".join(
        [
            *_pg_apply("new_rows", False),
            *per_run.pg_apply("new_rows", False, None),
            *groups_sql.pg_apply("new_rows", False, None),
            *tag_runs_sql.pg_refresh("new_rows"),
            *outcome_runs_sql.pg_refresh("new_rows"),
        ]
    )
    update_body = ";\n  ".join(
        [
            *_pg_apply(changed, True),
            emptied,
            recompute,
            *per_run.pg_apply(changed, True, "old_rows"),
            *groups_sql.pg_apply(changed, True, "old_rows"),
            *tag_runs_sql.pg_refresh(changed),
            *outcome_runs_sql.pg_refresh(changed),
        ]
    )
    # The trigger functions run with jit off: transition tables and the small kept-keys table have no
    # statistics, the planner's estimate of a batch's join with the kept keys reached 250,000 rows, and JIT
    # then compiled the statement for 1.1 s of a 512-call batch that takes 60 ms without it.
    return [
        *_tables(d),
        *per_run.tables("postgresql"),
        *groups_sql.tables("postgresql"),
        *tag_runs_sql.tables("postgresql"),
        *outcome_runs_sql.tables("postgresql"),
        (
            f"CREATE OR REPLACE FUNCTION {TABLE}_rollup_insert() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$\n"
            f"BEGIN\n  {insert_body};\n  RETURN NULL;\nEND\n$$"
        ),
        (
            f"CREATE OR REPLACE FUNCTION {TABLE}_rollup_update() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$\n"
            f"BEGIN\n  {update_body};\n  RETURN NULL;\nEND\n$$"
        ),
        f"DROP TRIGGER IF EXISTS {TABLE}_rollup_insert ON {TABLE}",
        (
            f"CREATE TRIGGER {TABLE}_rollup_insert AFTER INSERT ON {TABLE} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_rollup_insert()"
        ),
        f"DROP TRIGGER IF EXISTS {TABLE}_rollup_update ON {TABLE}",
        (
            f"CREATE TRIGGER {TABLE}_rollup_update AFTER UPDATE ON {TABLE} "
            f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_rollup_update()"
        ),
    ]


def _backfill(dialect: str) -> list[str]:
    """Fill both (empty) rollups from the ledger, one aggregate each."""
    d = _DIALECTS[dialect]
    hour_keys, run_keys = _hour_key(), _run_key()
    hour_values = ", ".join(_key_values(hour_keys, "r"))
    run_values = ", ".join(_key_values(run_keys, "r"))
    measures = ", ".join(
        _sqlite_total(_measure(m, "r"), m) if dialect == "sqlite" else f"SUM({_measure(m, 'r')})"
        for m in MEASURES
    )
    del d
    return [
        *([f"DELETE FROM {PENDING}"] if dialect == "sqlite" else []),
        f"DELETE FROM {HOUR_ROLLUP}",
        f"DELETE FROM {RUN_ROLLUP}",
        (
            f"INSERT INTO {HOUR_ROLLUP} ({', '.join((*hour_keys, *MEASURES))}) "
            f"SELECT {hour_values}, {measures} FROM {TABLE} AS r GROUP BY {hour_values}"
        ),
        (
            f"INSERT INTO {RUN_ROLLUP} ({', '.join((*run_keys, 'first_ns', 'last_ns', 'end_ns', *MEASURES))}) "
            f"SELECT {run_values}, MIN(r.start_ns), MAX(r.start_ns), MAX(r.end_ns), {measures} "
            f"FROM {TABLE} AS r GROUP BY {run_values}"
        ),
    ]


def ddl(
    dialect: str,
    *,
    backfill: bool,
    runs_backfill: bool | None = None,
    groups_backfill: bool | None = None,
    tags_backfill: bool = False,
    tag_runs_backfill: bool = False,
    group_times: bool = False,
    run_dims: Sequence[str] = (),
    outcome_runs_backfill: bool = False,
) -> list[str]:
    """The rollup tables, indexes and triggers of ``dialect`` (``sqlite``, ``postgresql``), then (when
    ``backfill``) the statements filling the rollups from the ledger, (when ``runs_backfill``, by default
    ``backfill``) the per-run table (:mod:`.runs_sql`), (when ``groups_backfill``, by default
    ``runs_backfill``) the per-(run, group) rows and every group's totals (:mod:`.groups_sql`), (when
    ``tags_backfill`` alone) the rows and totals of the kept tag keys (:mod:`.tags_sql`), (when
    ``tag_runs_backfill``) the per-run rows of each kept tag value (:mod:`.tag_runs_sql`) and the totals of
    users and experiences within use cases, (when ``group_times``) the times of the per-(run, group) rows
    (:data:`.groups_sql.TIMES`), (``run_dims``: the tables of those that lack :data:`.runs_sql.RUN_ONLY_DIMS`)
    the run's experience version: added to the tables, and the per-run table, the totals and the tag
    values' runs filled again, (when ``outcome_runs_backfill``, or the per-run table was filled) each
    outcome's runs (:mod:`.outcome_runs_sql`). Idempotent; run by the schema migration."""
    refill = per_run.RUNS in run_dims  # (schema 6-11: every run's experience version, from the ledger)
    runs = (backfill if runs_backfill is None else runs_backfill) or refill
    groups = runs if groups_backfill is None else groups_backfill
    statements = [
        f"ALTER TABLE {table} ADD COLUMN {c} TEXT" for table in run_dims for c in per_run.RUN_ONLY_DIMS
    ]
    statements += [f"DROP INDEX IF EXISTS {per_run.RUNS}_window"] if refill else []  # (it holds them now)
    older = groups and not backfill and dialect == "sqlite"
    statements += _sqlite_fold_older(not runs) if older else []
    statements += _sqlite_ddl() if dialect == "sqlite" else _pg_ddl()
    # the pending rows into every table, before the per-run table and the totals are filled again
    statements += list(_sqlite_fold(True)) if refill and dialect == "sqlite" and not older else []
    statements += groups_sql.add_times(dialect) if group_times and not groups else []
    statements += _backfill(dialect) if backfill else []
    statements += per_run.backfill(dialect) if runs else []
    statements += groups_sql.backfill(dialect) if groups else []
    statements += _day_backfill() if groups else []
    statements += groups_sql.totals_ddl(dialect, backfill=groups or refill)
    statements += groups_sql.tags_backfill(dialect) if tags_backfill and not groups else []
    statements += groups_sql.within_backfill(dialect) if tag_runs_backfill and not groups else []
    statements += (
        [f"DROP INDEX IF EXISTS {name}" for name in per_run.OLD_INDEXES] if tag_runs_backfill else []
    )
    statements += tag_runs_sql.backfill(dialect) if tag_runs_backfill or refill else []
    statements += outcome_runs_sql.backfill(dialect) if outcome_runs_backfill or runs else []
    return [*statements, groups_sql.window_index()]


def _day_backfill() -> list[str]:
    """Fill the day rollup from the hour rollup (complete by then: filled, or the pending rows folded)."""
    keys = ", ".join(_HOUR_KEYS)
    sums = ", ".join(f"SUM({m})" for m in MEASURES)
    return [
        f"DELETE FROM {DAY_ROLLUP}",
        (
            f"INSERT INTO {DAY_ROLLUP} ({', '.join((*_day_key(), *MEASURES))}) SELECT {_day('hour_ns')}, {keys}, "
            f"{sums} FROM {HOUR_ROLLUP} GROUP BY {_day('hour_ns')}, {keys}"
        ),
    ]


class ViewSQL(NamedTuple):
    """What a store tells the view queries about itself."""

    dialect: str
    """``sqlite`` or ``postgresql``."""
    token_sum: str
    """The store's overflow-proof sum of a token column (a format string with one ``{}``)."""
    present: frozenset[str]
    """The ledger's columns (fewer in a ledger of an older schema, read as it is)."""
    rollups: bool = False
    """Whether the store has the rollups (a reader of a ledger older than schema 5 has not)."""
    tag_value: TagValue | None = None
    """The store's SQL for a tag's value (:data:`~otel_usecase.store.base.TagValue`); the rollups' ``tags``
    column holds the same JSON text as the ledger's."""
    pending: bool = False
    """SQLite: rows are pending (:data:`PENDING`): queries add them (slower: no index on the union)."""
    groups: bool = False
    """Whether the store has the per-(run, group) rows and the group totals (:mod:`.groups_sql`, schema 8)."""
    tag_keys: frozenset[str] = frozenset()
    """The tag keys whose groups the store keeps (:mod:`.tags_sql`, schema 9)."""
    group_times: bool = False
    """Whether the per-(run, group) rows have their times (:data:`.groups_sql.TIMES`, schema 11): a time
    window's rows of a call-level grouping are then one range of an index."""
    run_only_dims: bool = False
    """Whether the per-run table has :data:`.runs_sql.RUN_ONLY_DIMS` (schema 12): the experience-version
    grouping is then kept like the other run groupings (a reader of an older store reads the ledger)."""
    outcome_runs: bool = False
    """Whether the store keeps each outcome's runs together (:mod:`.outcome_runs_sql`, schema 13): the cost
    per outcome then reads them (a reader of an older store reads every run's totals)."""


SERIES_KEYS: Final[dict[str, str]] = {
    "use-case": "use_case",
    "user": "user_id",
    "experience": "experience_name",
    "model": "model",
    "step": "step",
    "version": "use_case_version",
    "cost-source": "cost_source",
}
"""``by`` values of a cost series and the one column each stacks by."""

_STATUS_COUNTS: Final = tuple(
    (name, f"SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)") for name, status in totals.STATUS_COUNTS
)

_RUN_COLUMNS: Final = frozenset(("use_case", "run_id", "user_id", "experience_name", "experience_id",
                                 "use_case_version", "tags"))  # fmt: skip
_HOUR_COLUMNS: Final = frozenset(_HOUR_KEYS)
HOUR_COLUMNS: Final = _HOUR_COLUMNS
"""The key columns of the hour rollup (what :func:`group_sums_sql` can group by)."""


def hour_rollup_answers(view: ViewSQL, filters: ReportFilter) -> bool:
    """Whether :data:`HOUR_ROLLUP` gives exactly the ledger's sums for ``filters``: without a user or tag
    filter (the hour rollup is not kept per user or tag). A window that does not start or end on a whole
    hour reads its partial hours from the ledger (:func:`_edges`)."""
    return view.rollups and filters.user_id is None and not filters.tags


def run_rollup_answers(view: ViewSQL, filters: ReportFilter) -> bool:
    """Whether :data:`RUN_ROLLUP` gives exactly the ledger's figures for ``filters`` (partial hours of a
    window from the ledger, :func:`_edges`)."""
    return view.rollups


def _edges(
    since: int | None, until: int | None
) -> tuple[int | None, int | None, list[tuple[int | None, int | None]]]:
    """A window split into the whole hours a rollup answers (``[low, high)``, either end open) and the
    ranges of start times read from the ledger: the partial hours at its ends, a few thousand rows at
    most, instead of every row of a ``--since 7d`` that does not start on the hour. A window within one
    or two partial hours is read from the ledger alone (``low >= high``)."""
    low = None if since is None else since + (-since) % HOUR_NS
    high = None if until is None else until - until % HOUR_NS
    if low is not None and high is not None and low >= high:
        return low, low, [(since, until)]
    ranges: list[tuple[int | None, int | None]] = []
    if since is not None and since != low:
        ranges.append((since, low))
    if until is not None and until != high:
        ranges.append((high, until))
    return low, high, ranges


class _Source(NamedTuple):
    """Where a view query reads (the ledger or a rollup) and how it sums there."""

    table: str
    clause: str
    params: list[Any]
    measures: dict[str, str]
    """``calls``, each token column, ``cost_usd`` (NULL when no call has a cost), the status and error counts."""
    time: str
    """The column a time bucket is computed from."""
    first: str
    last: str
    end: str


_COUNTS: Final = ("unpriced_calls", "no_usage_calls", "partial_calls", "error_calls")


def _ledger(view: ViewSQL, filters: ReportFilter) -> _Source:
    clause, params = totals.where(filters, view.tag_value)
    measures = {
        "calls": "COUNT(*)",
        **{c: view.token_sum.format(c) if c in view.present else "0" for c in TOKEN_COLUMNS},
        "cost_usd": totals.COST,
        **dict(_STATUS_COUNTS),
        "error_calls": "SUM(error)" if "error" in view.present else "0",
    }
    return _Source(
        TABLE, clause, params, measures, "start_ns", "MIN(start_ns)", "MAX(start_ns)", "MAX(end_ns)"
    )


def ledger_sums(view: ViewSQL, filters: ReportFilter) -> _Source:
    """The ledger as a source of sums for ``filters``: its ``WHERE`` clause, parameters and the SQL of each
    measure (``calls``, the token columns, ``cost_usd``, the status and error counts)."""
    return _ledger(view, filters)


def _rollup(view: ViewSQL, filters: ReportFilter, table: str) -> _Source:
    clauses, params = filter_clauses(
        filters.use_case,
        None,
        user_id=filters.user_id,
        experience_name=filters.experience_name,
        use_case_version=filters.use_case_version,
        tags=filters.tags,
        tag_value=view.tag_value,
        use_cases=filters.use_cases,
    )
    low, high, ledger_ranges = _edges(filters.since_ns, filters.until_ns)
    # A run cell's last call is in its hour, so a cell of the window's hours has its last call in the
    # window too: the same cells, found through the index on last_ns instead of a read of every cell.
    latest = table == RUN_ROLLUP and low is not None
    source = _with_pending(table, "last_ns >= ?" if latest else "") if view.pending else table
    source_params: list[Any] = [low] if latest and view.pending else []
    if ledger_ranges:
        latest_here = latest and not view.pending
        source, edged_params = _edged(view, table, source, low, high, ledger_ranges, latest=latest_here)
        params = [*source_params, *edged_params, *params]
    else:
        params = [*source_params, *params]
        if latest and not view.pending:
            clauses.append("last_ns >= ?")
            params.append(low)
        if low is not None:
            clauses.append("hour_ns >= ?")
            params.append(low)
        if high is not None:
            clauses.append("hour_ns < ?")
            params.append(high)
    measures = {
        "calls": view.token_sum.format("calls"),
        **{c: view.token_sum.format(c) for c in TOKEN_COLUMNS},
        "cost_usd": "CASE WHEN SUM(cost_calls) > 0 THEN SUM(cost_usd) END",
        **{c: view.token_sum.format(c) for c in _COUNTS},
    }
    clause = " WHERE " + " AND ".join(clauses) if clauses else ""
    return _Source(
        source, clause, params, measures, "hour_ns", "MIN(first_ns)", "MAX(last_ns)", "MAX(end_ns)"
    )


def _edged(
    view: ViewSQL,
    table: str,
    source: str,
    low: int | None,
    high: int | None,
    ranges: list[tuple[int | None, int | None]],
    *,
    latest: bool = False,
) -> tuple[str, list[Any]]:
    """``table``'s cells of the whole hours ``[low, high)`` (from ``source``: the rollup, with the pending
    rows in SQLite) and, as cells of the same shape, the ledger's rows started in ``ranges``: a derived
    table with the rollup's columns and its parameters. Exact: the ledger holds every committed row.
    ``latest``: the whole hours' run cells are found through the index on ``last_ns`` (see :func:`_rollup`)."""
    run = table == RUN_ROLLUP
    keys = _run_key() if run else _hour_key()
    times = ("first_ns", "last_ns", "end_ns") if run else ()
    columns = ", ".join((*keys, *times, *MEASURES))
    whole: list[str] = []
    params: list[Any] = []
    for bound, op in ((low, ">="), (high, "<")):
        if bound is not None:
            whole.append(f"hour_ns {op} ?")
            params.append(bound)
    if latest and low is not None:
        whole.append("last_ns >= ?")
        params.append(low)
    values = _key_values(keys, "r")
    selected = [f"{v} AS {k}" for k, v in zip(keys, values)]
    if run:
        selected += ["MIN(r.start_ns) AS first_ns", "MAX(r.start_ns) AS last_ns", "MAX(r.end_ns) AS end_ns"]
    selected += [
        (_sqlite_total(_measure(m, "r"), m) if view.dialect == "sqlite" else f"SUM({_measure(m, 'r')})")
        + f" AS {m}"
        for m in MEASURES
    ]
    spans = []
    for start, end in ranges:
        parts = []
        for bound, op in ((start, ">="), (end, "<")):
            if bound is not None:
                parts.append(f"r.start_ns {op} ?")
                params.append(bound)
        spans.append("(" + " AND ".join(parts) + ")")
    rollup_part = f"SELECT {columns} FROM {source}" + (" WHERE " + " AND ".join(whole) if whole else "")
    ledger_part = f"SELECT {', '.join(selected)} FROM {TABLE} AS r WHERE {' OR '.join(spans)} GROUP BY {', '.join(values)}"
    return f"(SELECT * FROM ({rollup_part}) AS whole_hours UNION ALL {ledger_part}) AS {table}_edged", params


@cache
def _with_pending(table: str, where: str = "") -> str:
    """SQLite: ``table`` (its rows that meet ``where``, when given) with the rows still pending
    (:data:`PENDING`) added as cells of their own: a derived table with the rollup's columns, so a query
    reads everything committed."""
    run = table == RUN_ROLLUP
    keys = _run_key() if run else _hour_key()
    values = _key_values(keys, "r")
    selected = [f"{v} AS {k}" for k, v in zip(keys, values)]
    if run:  # the times of the rows added only (a replaced row's cell is recomputed by the fold)
        selected += [
            "MIN(CASE WHEN r.sign > 0 THEN r.start_ns END) AS first_ns",
            "MAX(CASE WHEN r.sign > 0 THEN r.start_ns END) AS last_ns",
            "MAX(CASE WHEN r.sign > 0 THEN r.end_ns END) AS end_ns",
        ]
    selected += [_sqlite_total("r.sign * (" + _measure(m, "r") + ")", m) + f" AS {m}" for m in MEASURES]
    columns = ", ".join((*keys, *(("first_ns", "last_ns", "end_ns") if run else ()), *MEASURES))
    return (
        f"(SELECT {columns} FROM {table}{' WHERE ' + where if where else ''} "
        f"UNION ALL SELECT {', '.join(selected)} FROM {PENDING} AS r "
        f"GROUP BY {', '.join(values)}) AS {table}_now"
    )


def _sums_source(view: ViewSQL, filters: ReportFilter, key: str | None = None) -> _Source:
    """The cheapest exact source of sums (optionally stacked by column ``key``)."""
    if hour_rollup_answers(view, filters) and (key is None or key in _HOUR_COLUMNS):
        return _rollup(view, filters, HOUR_ROLLUP)
    if run_rollup_answers(view, filters) and (key is None or key in _RUN_COLUMNS):
        return _rollup(view, filters, RUN_ROLLUP)
    return _ledger(view, filters)


def _runs_source(view: ViewSQL, filters: ReportFilter) -> _Source:
    """The cheapest exact source of per-run figures."""
    if run_rollup_answers(view, filters):
        return _rollup(view, filters, RUN_ROLLUP)
    return _ledger(view, filters)


def summary_sql(
    view: ViewSQL, filters: ReportFilter, *, per_run_table: bool = False, window_runs: bool = False
) -> tuple[str, list[Any]]:
    """One row: calls, :data:`~otel_usecase.store.base.TOKEN_COLUMNS` sums, cost, the unpriced, no-usage,
    partial and error counts, then the number of runs (of (use case, run id)): counted in the per-run
    table (``per_run_table``: the caller checked it answers, :mod:`.runs_sql`; ``window_runs``: it answers
    the filters but the time window, :func:`.runs_sql.window_count_sql`), else grouped. Under a kept
    tag's filter the per-run rows of the tag value hold the sums too: one range read
    (:mod:`.tag_runs_sql`), where the run rollup's cells would be read and their tags parsed."""
    if per_run_table and per_run.kept_tag_filter(filters, view.tag_value):
        runs_source, params = per_run.source(filters, view.tag_value)
        summed = [view.token_sum.format(c) for c in ("calls", *TOKEN_COLUMNS)] + [
            "CASE WHEN SUM(cost_calls) > 0 THEN SUM(cost_usd) END"
        ]
        summed += [view.token_sum.format(c) for c in _COUNTS] + ["COUNT(*)"]
        return f"SELECT {', '.join(summed)} FROM {runs_source}", params
    sums = _sums_source(view, filters)
    m = sums.measures
    if per_run_table or window_runs:
        count, count_params = (
            per_run.window_count_sql(view.dialect, filters, view.tag_value)
            if window_runs
            else per_run.count_sql(filters, view.tag_value)
        )
        selected = ", ".join(
            [
                m["calls"],
                *(m[c] for c in TOKEN_COLUMNS),
                m["cost_usd"],
                *(m[c] for c in _COUNTS),
                f"({count})",
            ]
        )
        return f"SELECT {selected} FROM {sums.table}{sums.clause}", [*count_params, *sums.params]
    runs = _runs_source(view, filters)
    selected = ", ".join(
        [
            m["calls"],
            *(m[c] for c in TOKEN_COLUMNS),
            m["cost_usd"],
            *(m[c] for c in _COUNTS),
            (
                f"(SELECT COUNT(*) FROM (SELECT 1 AS one FROM {runs.table}{runs.clause} "
                "GROUP BY use_case, run_id) AS runs)"
            ),
        ]
    )
    return f"SELECT {selected} FROM {sums.table}{sums.clause}", [*runs.params, *sums.params]


def group_sums_sql(
    view: ViewSQL, filters: ReportFilter, keys: tuple[str, ...], groups: list[tuple[Any, ...]] | None
) -> tuple[str, list[Any]] | None:
    """Per value of ``keys`` among ``groups`` (None: every group): those values, calls, tokens, the
    unpriced, no-usage and partial counts, read from the hour rollup (None when it cannot answer: a key it
    does not keep, a user or tag filter). A few hundred thousand narrow cells, not the rows of every run of
    those groups."""
    if not set(keys) <= _HOUR_COLUMNS or not hour_rollup_answers(view, filters):
        return None
    source = _rollup(view, filters, HOUR_ROLLUP)
    extra: list[Any] = []
    clause = source.clause
    if groups is not None:
        condition = per_run.any_group(keys, groups, extra)
        clause = f"{clause} AND {condition}" if clause else f" WHERE {condition}"
    m = source.measures
    group = ", ".join(keys)
    selected = ", ".join([group, m["calls"], *(m[c] for c in TOKEN_COLUMNS), *(m[c] for c in _COUNTS[:3])])
    return f"SELECT {selected} FROM {source.table}{clause} GROUP BY {group}", [*source.params, *extra]


def series_sql(view: ViewSQL, filters: ReportFilter, bucket_ns: int, key: str) -> tuple[str, list[Any]]:
    """(bucket start ns, key value, cost, calls) per bucket of ``bucket_ns`` (a whole number of hours) and
    value of column ``key``, in bucket then key order."""
    daily = _daily(view, filters, bucket_ns, key)
    if daily is not None:
        return daily
    source = _sums_source(view, filters, key)
    key_sql = key if key in view.present or source.table != TABLE else "NULL"
    width = int(bucket_ns)
    bucket = f"({source.time} - (({source.time} % {width}) + {width}) % {width})"
    calls = source.measures["calls"]
    sql = (
        f"SELECT {bucket} AS bucket, {key_sql} AS series, {source.measures['cost_usd']}, {calls} "
        f"FROM {source.table}{source.clause} GROUP BY {bucket}, {key_sql} HAVING {calls} > 0 "
        "ORDER BY bucket, series"
    )
    return sql, source.params


TAG_SERIES_KEYS: Final = frozenset(("use_case", "user_id", "experience_name", "use_case_version"))
"""The series keys :func:`tag_series_sql` answers: a run's own attributes."""


def tag_series_sql(view: ViewSQL, filters: ReportFilter, bucket_ns: int, key: str) -> tuple[str, list[Any]]:
    """:func:`series_sql` under a kept tag's filter (the caller checked that the per-run table answers it and
    that ``key`` is one of :data:`TAG_SERIES_KEYS`): the runs of the tag value whose calls all start in one
    bucket, from their copies (:mod:`.tag_runs_sql`, one range), and the cells of the few that span two
    buckets from the run rollup, instead of every cell of the run rollup with its tags parsed."""
    width = int(bucket_ns)

    def bucket(column: str) -> str:
        return f"({column} - (({column} % {width}) + {width}) % {width})"

    within, within_params = per_run.source(
        filters, view.tag_value, f"{bucket('first_ns')} = {bucket('last_ns')}"
    )
    across, across_params = per_run.source(
        filters, view.tag_value, f"{bucket('first_ns')} <> {bucket('last_ns')}"
    )
    cells = f"{bucket('c.hour_ns')}, c.{key}, c.cost_usd, c.cost_calls, c.calls"
    if view.dialect == "postgresql":  # (a join would read every cell: the planner expects thousands of runs)
        spanning = (
            f"SELECT {cells} FROM (SELECT use_case, run_id FROM {across}) AS t CROSS JOIN LATERAL "
            f"(SELECT * FROM {RUN_ROLLUP} AS r WHERE r.use_case = t.use_case AND r.run_id = t.run_id) AS c"
        )
    else:
        spanning = (
            f"SELECT {cells} FROM {RUN_ROLLUP} AS c WHERE (c.use_case, c.run_id) IN "
            f"(SELECT use_case, run_id FROM {across})"
        )
    calls = view.token_sum.format("x.calls")
    sql = (
        f"SELECT x.bucket, x.series, CASE WHEN SUM(x.cost_calls) > 0 THEN SUM(x.cost_usd) END, {calls} FROM ("
        f"SELECT {bucket('first_ns')} AS bucket, {key} AS series, cost_usd, cost_calls, calls FROM {within} "
        f"UNION ALL {spanning}) AS x GROUP BY x.bucket, x.series HAVING {calls} > 0 ORDER BY 1, 2"
    )
    return sql, [*within_params, *across_params]


def _daily(view: ViewSQL, filters: ReportFilter, bucket_ns: int, key: str) -> tuple[str, list[Any]] | None:
    """:func:`series_sql` from the day rollup, for buckets of whole days over a window of whole days (or none)
    the hour rollup would answer; None otherwise."""
    whole_days = all(t is None or t % DAY_NS == 0 for t in (filters.since_ns, filters.until_ns))
    if not (
        bucket_ns % DAY_NS == 0
        and whole_days
        and view.groups
        and not view.pending
        and hour_rollup_answers(view, filters)
        and key in _HOUR_COLUMNS
    ):
        return None
    clauses, params = filter_clauses(
        filters.use_case,
        None,
        experience_name=filters.experience_name,
        use_case_version=filters.use_case_version,
        use_cases=filters.use_cases,
    )
    for bound, op in ((filters.since_ns, ">="), (filters.until_ns, "<")):
        if bound is not None:
            clauses.append(f"day_ns {op} ?")
            params.append(bound)
    width = int(bucket_ns)
    bucket = f"(day_ns - ((day_ns % {width}) + {width}) % {width})"
    calls = view.token_sum.format("calls")
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    sql = (
        f"SELECT {bucket} AS bucket, {key} AS series, CASE WHEN SUM(cost_calls) > 0 THEN SUM(cost_usd) END, "
        f"{calls} FROM {DAY_ROLLUP}{where} GROUP BY {bucket}, {key} HAVING {calls} > 0 ORDER BY bucket, series"
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


def _run_columns(view: ViewSQL, source: _Source) -> list[str]:
    """:data:`RUN_FIELDS` of one run (grouped by use case and run id) from ``source``."""
    present = view.present if source.table == TABLE else _RUN_COLUMNS

    def latest(column: str) -> str:
        return f"MAX({column})" if column in present else "NULL"

    m = source.measures
    return [
        "use_case",
        "run_id",
        f"{source.first} AS first_ns",
        source.end,
        *(latest(c) for c in ("user_id", "experience_name", "experience_id", "use_case_version", "tags")),
        m["calls"],
        *(m[c] for c in TOKEN_COLUMNS),
        f"{m['cost_usd']} AS cost",
        " + ".join(m[c] for c in _COUNTS[:3]),
        f"{source.last} AS last_ns",
    ]


def runs_sql(
    view: ViewSQL, filters: ReportFilter, order: str, limit: int, offset: int
) -> tuple[str, list[Any]]:
    """A page of runs (:data:`RUN_FIELDS`, then the start of the run's latest call): ``newest`` (the most
    recently active first: latest call first) or ``cost`` (most expensive first, unknown cost last); ties by
    use case then run id."""
    source = _runs_source(view, filters)
    ordering = (
        "last_ns DESC, use_case, run_id"
        if order == "newest"
        else f"CASE WHEN {source.measures['cost_usd']} IS NULL THEN 1 ELSE 0 END, cost DESC, use_case, run_id"
    )
    sql = (
        f"SELECT {', '.join(_run_columns(view, source))} FROM {source.table}{source.clause} "
        f"GROUP BY run_id, use_case ORDER BY {ordering} LIMIT ? OFFSET ?"
    )
    return sql, [*source.params, int(limit), int(offset)]


def latest_runs_sql(view: ViewSQL, filters: ReportFilter, rows: int) -> tuple[str, list[Any]] | None:
    """The (use case, run id) of the ``rows`` run cells with the latest last call, latest first, read
    through the rollup's index on ``last_ns`` (None when the rollup cannot answer ``filters``).

    The first ``n`` distinct runs among them are the ``n`` most recently active runs: a run's latest
    call is in its latest cell. :func:`runs_of_sql` then sums just those runs."""
    if not run_rollup_answers(view, filters):
        return None
    source = _rollup(view, filters, RUN_ROLLUP)
    edged = bool(_edges(filters.since_ns, filters.until_ns)[2])  # the derived table has the pending rows
    table = source.table if edged else RUN_ROLLUP
    latest = f"SELECT use_case, run_id, last_ns FROM {table}{source.clause} ORDER BY last_ns DESC LIMIT ?"
    if edged or not view.pending:
        return latest, [*source.params, int(rows)]
    # The rollup's latest cells through its index, and the rows still pending (few): merged, latest first.
    pending = (
        f"SELECT use_case, run_id, start_ns AS last_ns FROM (SELECT {_hour('r')} AS hour_ns, r.* FROM {PENDING} "
        f"AS r WHERE r.sign > 0) AS p{source.clause}"
    )
    sql = f"SELECT use_case, run_id FROM (SELECT * FROM ({latest}) UNION ALL {pending}) ORDER BY last_ns DESC LIMIT ?"
    return sql, [*source.params, int(rows), *source.params, int(rows)]


def dearest_runs_sql(
    view: ViewSQL, filters: ReportFilter, limit: int, offset: int
) -> tuple[str, list[Any]] | None:
    """The (use case, run id) of a page of runs, most expensive first (unknown cost last, ties by use case
    then run id), summing only the cost (None when the run rollup cannot answer ``filters``);
    :func:`runs_of_sql` then sums everything of just those runs."""
    if not run_rollup_answers(view, filters):
        return None
    source = _rollup(view, filters, RUN_ROLLUP)
    cost = source.measures["cost_usd"]
    sql = (
        f"SELECT use_case, run_id FROM {source.table}{source.clause} GROUP BY use_case, run_id "
        f"ORDER BY CASE WHEN {cost} IS NULL THEN 1 ELSE 0 END, {cost} DESC, use_case, run_id LIMIT ? OFFSET ?"
    )
    return sql, [*source.params, int(limit), int(offset)]


def runs_of_sql(view: ViewSQL, filters: ReportFilter, run_ids: Sequence[str]) -> tuple[str, list[Any]]:
    """:data:`RUN_FIELDS` (then the latest call) of the runs ``run_ids`` (the caller keeps those of the
    right use case), read from the run rollup."""
    source = _rollup(view, filters, RUN_ROLLUP)
    marks = ", ".join("?" * len(run_ids))
    condition = f"{source.clause} AND run_id IN ({marks})" if source.clause else f" WHERE run_id IN ({marks})"
    sql = f"SELECT {', '.join(_run_columns(view, source))} FROM {source.table}{condition} GROUP BY run_id, use_case"
    return sql, [*source.params, *run_ids]


def run_costs_sql(view: ViewSQL, filters: ReportFilter) -> tuple[str, list[Any]]:
    """(cost, incomplete calls) of every run the filters select, in no particular order."""
    source = _runs_source(view, filters)
    m = source.measures
    incomplete = " + ".join(m[c] for c in _COUNTS[:3])
    sql = f"SELECT {m['cost_usd']}, {incomplete} FROM {source.table}{source.clause} GROUP BY run_id, use_case"
    return sql, source.params


def run_totals_sql(
    keys: Sequence[str],
    filters: ReportFilter,
    token_sum: str,
    summed: Collection[str],
    *,
    zeros: bool,
    tag_value: TagValue | None,
    dialect: str,
    pending: bool = False,
) -> tuple[str, list[Any]] | None:
    """:func:`.totals.run_totals_sql` read from :data:`RUN_ROLLUP`: the same columns, one row per run and
    value of ``keys``; None when the rollup cannot answer (a key it does not keep, a mid-hour window)."""
    view = ViewSQL(dialect, token_sum, frozenset(summed), True, tag_value, pending)
    if not set(keys) <= _RUN_COLUMNS or not run_rollup_answers(view, filters):
        return None
    source = _rollup(view, filters, RUN_ROLLUP)
    left_out = frozenset(() if zeros else totals.zero_columns(summed))
    expressions = {
        name: "0" if name in TOKEN_COLUMNS and name not in summed else source.measures[name]
        for name in RUN_TOTALS
    }
    selected = ", ".join(
        [
            *(f"{k} AS {k}" for k in keys),
            *(f"{expressions[n]} AS {n}" for n in RUN_TOTALS if n not in left_out),
        ]
    )
    group = ", ".join(dict.fromkeys(("use_case", "run_id", *keys)))
    return f"SELECT {selected} FROM {source.table}{source.clause} GROUP BY {group}", source.params


QUARTER_HOUR_NS: Final = 900_000_000_000


def cell_run_totals_sql(view: ViewSQL, filters: ReportFilter, *, rollup: bool) -> tuple[str, list[Any]]:
    """(cell start ns, use case, run id, :data:`~otel_usecase.store.base.RUN_TOTALS`) per run and cell of
    time: the run rollup's hours (``rollup``; the caller checks :func:`run_rollup_answers`), else the
    ledger's quarter hours. Reports by day, week or month in any time zone add cells up into periods."""
    source = _rollup(view, filters, RUN_ROLLUP) if rollup else _ledger(view, filters)
    width = HOUR_NS if rollup else QUARTER_HOUR_NS
    cell = f"({source.time} - (({source.time} % {width}) + {width}) % {width})"
    selected = ", ".join(source.measures[name] for name in RUN_TOTALS)
    sql = (
        f"SELECT {cell} AS cell, use_case, run_id, {selected} FROM {source.table}{source.clause} "
        f"GROUP BY {cell}, use_case, run_id"
    )
    return sql, source.params
