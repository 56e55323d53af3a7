"""The per-run table: one row per run (use case, run id) with its totals, kept beside the rollups.

The run rollup (:data:`.rollup_sql.RUN_ROLLUP`) is keyed by hour, so a question
about whole runs (how many runs, the dearest ones, the distribution of their
cost) has to group its cells. :data:`RUNS` holds each run once, with indexes on
its cost, so those questions become index seeks:

* the number of runs a filter selects: a count of rows;
* the dearest runs: the first rows of the index on :data:`dear_cost`;
* a percentile of the run cost: ``ORDER BY complete_cost LIMIT 2 OFFSET k``;
* per-run average, p50 and p95 of the few groups a ``top`` returns: the same
  seeks within a group's part of an index (use case, user, experience).

A run's user, experience, version and tags are columns of its row, so the
filters on them read the table exactly, as long as every call of the run has
the same values: a run whose calls disagree (or a replaced call that changed
them) is marked ``mixed`` (kept conservatively: once mixed, always mixed) and,
while any run is, the queries read the run rollup instead (:func:`mixed_sql`).
The table answers no time window (a run is not kept per hour): a filter with a
start or end reads the run rollup.

Kept exact like the rollups, in the same transaction as the ledger write: the
SQLite fold (:func:`sqlite_fold`, from the pending rows) and the PostgreSQL
statement triggers (:func:`pg_apply`, ordered by key so writers queue rather
than deadlock); a replaced call is subtracted and added, an emptied run
removed, the times of a run a call left recomputed from the ledger. Created and
filled by the schema 6 migration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Final, NamedTuple

from .base import TABLE, TOKEN_COLUMNS, ReportFilter, TagValue, filter_clauses

__all__ = [
    "AFTER_ALL",
    "BEFORE_ALL",
    "COMPLETE_COST",
    "DEAR_COST",
    "NAMED_GROUPS",
    "NULL_KEY",
    "OLD_INDEXES",
    "RUNS",
    "RUN_ONLY_DIMS",
    "AchievedSQL",
    "Dearest",
    "Walk",
    "achieved_sql",
    "added",
    "any_group",
    "backfill",
    "column_definitions",
    "columns",
    "costs_sql",
    "count_sql",
    "dearest_sql",
    "group_keys",
    "kept_tag_filter",
    "lacking_dims_sql",
    "mixed_sql",
    "named",
    "order_by",
    "order_sql",
    "pg_apply",
    "source",
    "sqlite_fold",
    "sums_sql",
    "tables",
    "use_case_clauses",
    "walk",
    "window_bounds",
    "window_count_sql",
    "window_scope",
]

RUNS: Final = "usecase_runs"
DEAR_COST: Final = "dear_cost"
"""The run's cost when any call has one, else NULL (the order of the dearest runs: unknown last)."""
COMPLETE_COST: Final = "complete_cost"
"""The run's cost when it is known, finite and complete (no unpriced, no-usage or partial call), else
NULL: the costs a histogram and the per-run figures of a report are over."""

GROUP_KEYS: Final[dict[tuple[str, ...], str]] = {
    ("use_case",): "use_case",
    ("user_id",): "user_id",
    ("experience_name", "experience_id"): "experience",
    ("use_case", "use_case_version"): "version",
    ("experience_name", "experience_version"): "experience_version",
}
"""The report groupings whose per-run figures an index of :data:`RUNS` answers (keys -> index suffix)."""


def _measures() -> tuple[str, ...]:
    from .rollup_sql import MEASURES

    return MEASURES


RUN_ONLY_DIMS: Final = ("experience_version",)
"""A run's attributes this table keeps that the run rollup does not (schema 12): an experience's version
is the scope's, like the use case's version, but no rollup splits by it."""


def _dims() -> tuple[str, ...]:
    from .rollup_sql import _run_keys

    return (*_run_keys(), *RUN_ONLY_DIMS)


def lacking_dims_sql(dialect: str, tables: Sequence[str]) -> str:
    """The names of ``tables`` that exist without :data:`RUN_ONLY_DIMS` (the schema 12 migration adds it)."""
    names = ", ".join(f"'{t}'" for t in tables)
    column = RUN_ONLY_DIMS[-1]
    if dialect == "postgresql":
        return (
            f"SELECT t.table_name FROM information_schema.tables AS t WHERE t.table_schema = current_schema() "
            f"AND t.table_name IN ({names}) AND NOT EXISTS (SELECT 1 FROM information_schema.columns AS c "
            f"WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND c.column_name = '{column}')"
        )
    return (
        f"SELECT m.name FROM sqlite_master AS m WHERE m.type = 'table' AND m.name IN ({names}) "
        f"AND NOT EXISTS (SELECT 1 FROM pragma_table_info(m.name) AS c WHERE c.name = '{column}')"
    )


def column_definitions(dialect: str) -> str:
    """The table's columns with their types (:func:`columns` order), as ``CREATE TABLE`` lists them."""
    from .rollup_sql import _DIALECTS

    d = _DIALECTS[dialect]
    kinds = {
        "cost_usd": f"{d.real} NOT NULL DEFAULT 0",
        **{t: f"{d.total} NOT NULL DEFAULT 0" for t in TOKEN_COLUMNS},
    }
    measures = ", ".join(f"{m} {kinds.get(m, f'{d.int} NOT NULL DEFAULT 0')}" for m in _measures())
    dims = ", ".join(f"{k} TEXT" for k in _dims())
    return (
        f"use_case TEXT NOT NULL, run_id TEXT NOT NULL, {dims}, "
        f"mixed {d.int} NOT NULL DEFAULT 0, first_ns {d.int} NOT NULL, last_ns {d.int} NOT NULL, "
        f"end_ns {d.int} NOT NULL, {measures}, {DEAR_COST} {d.real}, {COMPLETE_COST} {d.real}"
    )


def tables(dialect: str) -> list[str]:
    """The table and its indexes (idempotent)."""
    desc = " DESC NULLS LAST" if dialect == "postgresql" else " DESC"
    return [
        f"CREATE TABLE IF NOT EXISTS {RUNS} ({column_definitions(dialect)})",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {RUNS}_key ON {RUNS} (use_case, run_id)",
        f"CREATE INDEX IF NOT EXISTS {RUNS}_mixed ON {RUNS} (mixed) WHERE mixed = 1",
        f"CREATE INDEX IF NOT EXISTS {RUNS}_dear ON {RUNS} ({DEAR_COST}{desc}, use_case, run_id)",
        f"CREATE INDEX IF NOT EXISTS {RUNS}_complete ON {RUNS} ({COMPLETE_COST})",
        # the runs of a time window: those with a call at or after its start (.groups_sql.window_sql), with
        # what a top list of a run grouping reads of each (its keys, its costs: the index alone, where table
        # rows one by one cost 80-230 ms per list for the 39,000 runs of a week at 10M calls)
        (
            f"CREATE INDEX IF NOT EXISTS {RUNS}_window ON {RUNS} (last_ns, first_ns, use_case, run_id, "
            f"{', '.join(k for k in _dims() if k != 'tags')}, {DEAR_COST}, {COMPLETE_COST})"
        ),
        # per group: the order of the groups (their cost) and their per-run figures, read from the index alone
        *(
            f"CREATE INDEX IF NOT EXISTS {RUNS}_{name} ON {RUNS} ({', '.join(keys)}, {COMPLETE_COST}, {DEAR_COST})"
            for keys, name in GROUP_KEYS.items()
        ),
    ]


def _derived(value: Callable[[str], str]) -> list[str]:
    """:data:`DEAR_COST` and :data:`COMPLETE_COST` of a row whose measure ``m`` is ``value(m)``. Plain
    columns, not generated ones: SQLite reads a generated column from the table even when an index has it,
    and the groups' figures must come from their index alone."""
    cost = value("cost_usd")
    incomplete = " + ".join(value(m) for m in ("unpriced_calls", "no_usage_calls", "partial_calls"))
    return [
        f"CASE WHEN {value('cost_calls')} > 0 THEN {cost} END",
        f"CASE WHEN {value('cost_calls')} > 0 AND {incomplete} = 0 AND {cost} BETWEEN -1e308 AND 1e308 THEN {cost} END",
    ]


def added(t: str) -> str:
    """The ``SET`` list of an upsert adding ``excluded``'s measures to row ``t`` and deriving its two costs
    from the sums (this table's and :data:`.groups_sql.GROUPS`')."""
    sums = ", ".join(f"{m} = {t}.{m} + excluded.{m}" for m in _measures())
    costs = ", ".join(
        f"{c} = {v}"
        for c, v in zip((DEAR_COST, COMPLETE_COST), _derived(lambda m: f"{t}.{m} + excluded.{m}"))
    )
    return f"{sums}, {costs}"


def columns() -> str:
    """The table's columns, in order."""
    return ", ".join(
        (
            "use_case",
            "run_id",
            *_dims(),
            "mixed",
            "first_ns",
            "last_ns",
            "end_ns",
            *_measures(),
            DEAR_COST,
            COMPLETE_COST,
        )
    )


def _base_columns() -> tuple[str, ...]:
    return ("use_case", "run_id", *_dims(), "mixed", "first_ns", "last_ns", "end_ns", *_measures())


def _selected(dialect: str, source: str, kind: str) -> str:
    """The values of one run's row from the rows ``r`` of ``source``: ledger rows (``kind`` ``row``), pending
    rows with a ``sign`` (``signed``), or fold cells (``cell``, :data:`.rollup_sql.FOLD_CELLS`)."""
    from .rollup_sql import _DIALECTS, _sqlite_total, contribution

    d = _DIALECTS[dialect]
    differs = " OR ".join(
        f"MIN(COALESCE(r.{k}, {d.none})) <> MAX(COALESCE(r.{k}, {d.none}))" for k in _dims()
    )

    def total(m: str) -> str:
        added = contribution(m, "r", kind)
        return _sqlite_total(added, m) if dialect == "sqlite" else f"SUM({added})"

    first, last = ("r.first_ns", "r.last_ns") if kind == "cell" else ("r.start_ns", "r.start_ns")
    values = [
        "r.use_case",
        "r.run_id",
        *(f"MIN(r.{k})" for k in _dims()),
        f"CASE WHEN {differs} THEN 1 ELSE 0 END",
        f"MIN({first})",
        f"MAX({last})",
        "MAX(r.end_ns)",
        *(total(m) for m in _measures()),
    ]
    inner = ", ".join(f"{v} AS {c}" for v, c in zip(values, _base_columns()))
    derived = ", ".join(_derived(lambda m: f"g.{m}"))
    # (the WHERE: SQLite reads ON CONFLICT after a bare FROM as a join's ON)
    return f"g.*, {derived} FROM (SELECT {inner} FROM {source} AS r GROUP BY r.use_case, r.run_id) AS g WHERE true"


def _upsert(dialect: str, source: str, kind: str) -> str:
    from .rollup_sql import _DIALECTS

    d = _DIALECTS[dialect]
    t = "t" if dialect == "postgresql" else RUNS
    alias = " AS t" if dialect == "postgresql" else ""
    select = _selected(dialect, source, kind)
    order = " ORDER BY g.use_case, g.run_id" if dialect == "postgresql" else ""
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    changed = " OR ".join(f"{t}.{k} {distinct} excluded.{k}" for k in _dims())
    return (
        f"INSERT INTO {RUNS}{alias} ({columns()}) SELECT {select}{order} ON CONFLICT (use_case, run_id) DO UPDATE SET "
        f"mixed = {d.greatest}({t}.mixed, excluded.mixed, CASE WHEN {changed} THEN 1 ELSE 0 END), "
        f"first_ns = {d.least}({t}.first_ns, excluded.first_ns), last_ns = {d.greatest}({t}.last_ns, excluded.last_ns), "
        f"end_ns = {d.greatest}({t}.end_ns, excluded.end_ns), {added(t)}"
    )


def _left(old: str, dialect: str = "sqlite") -> list[str]:
    """Remove the runs replaced rows emptied; recompute the times of those they left (from the ledger).

    PostgreSQL joins the distinct runs of the replaced rows to the table by its key: written as
    ``(use_case, run_id) IN (SELECT ...)`` over a transition table (no statistics), it planned a nested loop
    over the use-case index. An UPDATE of the 40,000 calls of 2,000 runs (400,000-call ledger): 5.6 and 7.4 s
    before, 4.9 and 5.4 s after, alternating on a loaded host."""
    if dialect == "postgresql":
        left = f"(SELECT DISTINCT o.use_case, o.run_id FROM {old}) AS l"
        key = f"{RUNS}.use_case = l.use_case AND {RUNS}.run_id = l.run_id"
        times = ", ".join(
            f"{name} = COALESCE((SELECT {agg}(c.{column}) FROM {TABLE} AS c WHERE c.use_case = l.use_case "
            f"AND c.run_id = l.run_id), {RUNS}.{name})"
            for name, agg, column in (
                ("first_ns", "MIN", "start_ns"),
                ("last_ns", "MAX", "start_ns"),
                ("end_ns", "MAX", "end_ns"),
            )
        )
        return [
            f"DELETE FROM {RUNS} USING {left} WHERE {key} AND {RUNS}.calls <= 0",
            f"UPDATE {RUNS} SET {times} FROM {left} WHERE {key}",
        ]
    runs = f"(use_case, run_id) IN (SELECT o.use_case, o.run_id FROM {old})"
    times = ", ".join(
        f"{name} = COALESCE((SELECT {agg}(c.{column}) FROM {TABLE} AS c WHERE c.use_case = {RUNS}.use_case "
        f"AND c.run_id = {RUNS}.run_id), {name})"
        for name, agg, column in (
            ("first_ns", "MIN", "start_ns"),
            ("last_ns", "MAX", "start_ns"),
            ("end_ns", "MAX", "end_ns"),
        )
    )
    return [f"DELETE FROM {RUNS} WHERE calls <= 0 AND {runs}", f"UPDATE {RUNS} SET {times} WHERE {runs}"]


@cache
def sqlite_fold(cells: bool = True) -> tuple[str, ...]:
    """SQLite: add the pending rows (:data:`.rollup_sql.PENDING`) to the table, from the fold's cells
    (:data:`.rollup_sql.FOLD_CELLS`) or (not ``cells``) the rows themselves; before they are emptied."""
    from .rollup_sql import FOLD_CELLS, PENDING

    source = f"temp.{FOLD_CELLS}" if cells else PENDING
    return (
        _upsert("sqlite", source, "cell" if cells else "signed"),
        *_left(f"{PENDING} AS o WHERE o.sign < 0"),
    )


def pg_apply(source: str, signed: bool, old: str | None) -> list[str]:
    """PostgreSQL: the trigger statements adding ``source``'s rows (``old``: the replaced rows' table)."""
    return [
        _upsert("postgresql", source, "signed" if signed else "row"),
        *(_left(f"{old} AS o", "postgresql") if old else []),
    ]


OLD_INDEXES: Final = (f"{RUNS}_last",)
"""Indexes of the table a newer one replaces (dropped by the schema 10 migration)."""


def backfill(dialect: str) -> list[str]:
    """Fill the table from the ledger (the migration, which then fills what is kept from this table: the
    totals, the tag values' runs; so PostgreSQL's triggers on it are held off meanwhile)."""
    fill = [
        f"DELETE FROM {RUNS}",
        f"INSERT INTO {RUNS} ({columns()}) SELECT {_selected(dialect, TABLE, 'row')}",
    ]
    if dialect != "postgresql":
        return fill
    return [f"ALTER TABLE {RUNS} DISABLE TRIGGER USER", *fill, f"ALTER TABLE {RUNS} ENABLE TRIGGER USER"]


# --- queries ------------------------------------------------------------------------------------


def answers(filters: ReportFilter) -> bool:
    """Whether the table can answer ``filters`` at all (no time window); :func:`mixed_sql` then decides."""
    return filters.since_ns is None and filters.until_ns is None


def mixed_sql() -> str:
    """A row when some run is mixed (its calls disagree on a dimension): then the table does not answer."""
    return f"SELECT 1 FROM {RUNS} WHERE mixed = 1 LIMIT 1"


def source(
    filters: ReportFilter, tag_value: TagValue | None, *extra: str, table: str | None = None
) -> tuple[str, list[Any]]:
    """The table and ``WHERE`` clause of ``filters`` (no time window: :func:`answers`), then ``extra``: what
    follows ``FROM`` in a query of the per-run rows (``table``: of copies of them with the same columns,
    :mod:`.outcome_runs_sql`'s).

    A tag the store keeps (``tag_value`` a :class:`.tags_sql.KeptTagValue`) reads its runs' copies in
    :data:`.tag_runs_sql.TAG_RUNS`, one range of that table (the first such tag of ``filters``; another
    kept one selects its runs through the group rows' index); any other is read from each run's tags."""
    from .tag_runs_sql import TAG_RUNS
    from .tags_sql import KeptTagValue, runs_with_sql

    kept = tag_value.kept if isinstance(tag_value, KeptTagValue) else frozenset()
    clauses, params = filter_clauses(
        filters.use_case,
        None,
        user_id=filters.user_id,
        experience_name=filters.experience_name,
        use_case_version=filters.use_case_version,
        tags=[(key, value) for key, value in filters.tags if key not in kept],
        tag_value=tag_value,
        use_cases=filters.use_cases,
    )
    table = table or _table(filters, tag_value)
    tagged = table == TAG_RUNS
    for key, value in filters.tags:
        if key not in kept:
            continue
        if tagged:
            tagged = False
            clauses[:0] = ["tag_key = ?", "tag_value = ?"]
            params[:0] = [key, value]
        else:
            clause, more = runs_with_sql(key, value)
            clauses.append(clause)
            params.extend(more)
    clauses += extra
    return table + (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class AchievedSQL(NamedTuple):
    """The queries of the runs that achieved an outcome (:func:`achieved_sql`)."""

    groups: tuple[str, list[Any]]
    """Per group (every one, or those named): its key values, its runs that achieved the outcome, their
    outcomes, the sum of the outcomes' values, of the runs' :data:`DEAR_COST`, then the outcomes and their
    values again of the runs whose first outcome is in the time window (every run's without one)."""
    total: tuple[str, list[Any]] | None
    """With groups named: the last two sums over every group (None: the rows of every group add up to it)."""


NULL_KEY: Final = "\x01"
"""A text no key holds (a control character), standing for NULL where a read names groups by an ``IN`` over
expressions of their keys (a real value equal to it is only read too: the rows keep their own keys)."""


def achieved_sql(
    keys: tuple[str, ...],
    filters: ReportFilter,
    tag_value: TagValue | None,
    outcome: str,
    groups: Sequence[tuple[Any, ...]] | None = None,
) -> AchievedSQL:
    """The groups of ``keys`` among the runs of ``filters`` that recorded ``outcome`` (:class:`AchievedSQL`),
    every group or ``groups`` (a page's: the others' rows are summed apart, which a sort of every group's
    rows cost more than: 0.27-0.38 s for the 50,000 experiences of 166,667 runs in PostgreSQL, 60 ms named).
    One range of :data:`.outcome_runs_sql.OUTCOME_RUNS` (each outcome's runs' rows, kept together), summed
    in the database.

    Over a time window, the runs wholly inside it only (every call in the window: what they cost in it is
    what they cost); those crossing an end are the caller's (:func:`~otel_usecase.report.views.crossing_runs`).
    Each one's first outcome is read through the outcomes' index on the run (13,000 runs of a week at 10M
    calls)."""
    chosen: list[str] = []
    chosen_params: list[Any] = []
    if groups is not None:
        # an IN over expressions: a hash (PostgreSQL) or a probe (SQLite) per row, where an OR of each
        # group's equalities is tried per row and group (0.84 s)
        width = len(keys)
        row = ", ".join(f"COALESCE({k}, ?)" for k in keys)
        values = ", ".join("(" + ", ".join("?" * width) + ")" for _ in groups)
        chosen.append((f"({row})" if width > 1 else row) + f" IN (VALUES {values})" if groups else "1 = 0")
        if groups:
            chosen_params = [NULL_KEY] * width
            for key in groups:
                chosen_params.extend(NULL_KEY if v is None else v for v in key[:width])
    runs, params, first = _achieving(keys, filters, tag_value, outcome, chosen, chosen_params)
    group = ", ".join(keys)
    query = (
        f"SELECT {group}, COUNT(*), SUM(outcomes), SUM(outcome_value), SUM({DEAR_COST}), {first} "
        f"FROM {runs} GROUP BY {group}"
    )
    if groups is None:
        return AchievedSQL((query, params), None)
    every, every_params, first = _achieving(keys, filters, tag_value, outcome, [], [])
    return AchievedSQL((query, params), (f"SELECT {first} FROM {every}", every_params))


def _achieving(
    keys: tuple[str, ...],
    filters: ReportFilter,
    tag_value: TagValue | None,
    outcome: str,
    chosen: list[str],
    chosen_params: list[Any],
) -> tuple[str, list[Any], str]:
    """What :func:`achieved_sql`'s queries read (``FROM`` it), its parameters, and the sums of the outcomes
    and values of the runs whose first outcome is in the window."""
    from .outcome_runs_sql import OUTCOME_RUNS
    from .outcome_sql import OUTCOMES_TABLE

    if filters.since_ns is None and filters.until_ns is None:
        clause, params = source(filters, tag_value, "name = ?", *chosen, table=OUTCOME_RUNS)
        # (every run's first outcome is in the window)
        return clause, [*params, outcome, *chosen_params], "SUM(outcomes), SUM(outcome_value)"
    low, high = window_bounds(filters)
    clause, params = source(
        filters, tag_value, "name = ?", "first_ns >= ?", "last_ns < ?", *chosen, table=OUTCOME_RUNS
    )
    # each run's first outcome from the outcomes' index on the run, once per run (a correlated subquery in
    # the sums was run once per use: 4 times 13,000 in PostgreSQL, 0.39 s); CROSS JOIN: SQLite reads the
    # window's copies first, as written, where it chose every outcome of the name and a copy for each (0.16 s)
    copied = ", ".join(
        dict.fromkeys((*keys, "name", "use_case", "run_id", "outcomes", "outcome_value", DEAR_COST))
    )
    per_run = ", ".join(f"c.{k}" for k in dict.fromkeys((*keys, "use_case", "run_id")))
    runs = (
        f"(SELECT {', '.join(f'c.{k}' for k in keys)}, c.outcomes, c.outcome_value, c.{DEAR_COST}, "
        "CASE WHEN MIN(o.recorded_ns) >= ? AND MIN(o.recorded_ns) < ? THEN 1 ELSE 0 END AS first_in "
        f"FROM (SELECT {copied} FROM {clause}) AS c CROSS JOIN {OUTCOMES_TABLE} AS o "
        "WHERE o.name = c.name AND o.use_case = c.use_case AND o.run_id = c.run_id "
        f"GROUP BY {per_run}, c.outcomes, c.outcome_value, c.{DEAR_COST}) AS runs"
    )
    params = [low, high, *params, outcome, low, high, *chosen_params]
    return runs, params, "SUM(outcomes * first_in), SUM(outcome_value * first_in)"


def _table(filters: ReportFilter, tag_value: TagValue | None) -> str:
    """The table :func:`source` reads: the copies of a kept tag value's runs under a filter on one."""
    from .tag_runs_sql import TAG_RUNS
    from .tags_sql import KeptTagValue

    kept = tag_value.kept if isinstance(tag_value, KeptTagValue) else frozenset()
    return TAG_RUNS if any(key in kept for key, _ in filters.tags) else RUNS


def count_sql(filters: ReportFilter, tag_value: TagValue | None) -> tuple[str, list[Any]]:
    """The number of runs."""
    clause, params = source(filters, tag_value)
    return f"SELECT COUNT(*) FROM {clause}", params


BEFORE_ALL: Final = -(2**63)
AFTER_ALL: Final = 2**63 - 1


def window_bounds(filters: ReportFilter) -> tuple[int, int]:
    """``filters``' window as ``[low, high)`` (an open end as the lowest or highest 64-bit integer)."""
    low = BEFORE_ALL if filters.since_ns is None else int(filters.since_ns)
    high = AFTER_ALL if filters.until_ns is None else int(filters.until_ns)
    return low, high


def window_scope(
    dialect: str, use_case: str | None, use_cases: Sequence[str] | None, alias: str = ""
) -> tuple[list[str], list[Any]]:
    """The conditions keeping the rows of ``use_case`` and of ``use_cases`` (the allowed set) in a time
    window's read of the per-run or per-(run, group) rows (``alias``: their table's, with its dot). The use
    case is compared as an expression, so that no index on it is used: SQLite (without statistics) preferred
    an equality on the use case to the range of the window's index and read every run of the use case,
    table rows and all (65-79 ms per list of a week's use case page at 10M calls, where the window's range
    of the index alone is a few). PostgreSQL's planner, which has statistics, gets the column."""
    column = f"({alias}use_case || '')" if dialect == "sqlite" else f"{alias}use_case"
    return use_case_clauses(use_case, use_cases, column)


def use_case_clauses(
    use_case: str | None, use_cases: Sequence[str] | None, column: str = "use_case"
) -> tuple[list[str], list[Any]]:
    """The conditions keeping the rows of ``use_case`` and of ``use_cases`` (the allowed set) in ``column``."""
    clauses: list[str] = []
    params: list[Any] = []
    if use_case is not None:
        clauses.append(f"{column} = ?")
        params.append(use_case)
    if use_cases is not None:
        clauses.append(f"{column} IN ({', '.join('?' for _ in use_cases)})" if use_cases else "1 = 0")
        params.extend(use_cases)
    return clauses, params


def window_count_sql(
    dialect: str, filters: ReportFilter, tag_value: TagValue | None
) -> tuple[str, list[Any]]:
    """The number of runs with a call in ``filters``' time window (and its other filters, which the table
    answers: :func:`answers` of them without the window): those whose every call is in it, counted in the
    index on the last call, plus the few with calls on both sides of an end that have one inside (their
    calls in the ledger's index on the run). Where the run rollup's cells of every run of the window were
    grouped by run (107 ms for a week of a 10M-call ledger in SQLite; 5 ms this way)."""
    low, high = window_bounds(filters)
    outside = filters._replace(since_ns=None, until_ns=None, use_case=None, use_cases=None)
    table = _table(outside, tag_value)
    scope, scope_params = window_scope(dialect, filters.use_case, filters.use_cases)
    inside, inside_params = source(outside, tag_value, *scope, "last_ns >= ?", "first_ns >= ?", "last_ns < ?")
    # (an aggregate, not EXISTS: PostgreSQL made EXISTS a semi-join with every call of the window, 430 ms)
    has_call = (
        f"(SELECT MIN(c.start_ns) FROM {TABLE} AS c WHERE c.run_id = {table}.run_id "
        f"AND c.use_case = {table}.use_case AND c.start_ns >= ? AND c.start_ns < ?) IS NOT NULL"
    )
    crossing, crossing_params = source(
        outside,
        tag_value,
        *scope,
        "last_ns >= ?",
        "first_ns < ?",
        "NOT (first_ns >= ? AND last_ns < ?)",
        has_call,
    )
    sql = f"SELECT (SELECT COUNT(*) FROM {inside}) + (SELECT COUNT(*) FROM {crossing})"
    window = [low, low, high]
    return sql, [
        *inside_params, *scope_params, *window,
        *crossing_params, *scope_params, low, high, low, high, low, high,
    ]  # fmt: skip


def dearest_sql(
    dialect: str, filters: ReportFilter, tag_value: TagValue | None, limit: int, offset: int
) -> tuple[str, list[Any]]:
    """(use case, run id) of a page of runs, dearest first, unknown cost last, ties by use case, run id."""
    clause, params = source(filters, tag_value)
    nulls = " NULLS LAST" if dialect == "postgresql" else ""
    sql = f"SELECT use_case, run_id FROM {clause} ORDER BY {DEAR_COST} DESC{nulls}, use_case, run_id LIMIT ? OFFSET ?"
    return sql, [*params, int(limit), int(offset)]


def spread_sql(filters: ReportFilter, tag_value: TagValue | None) -> tuple[str, list[Any]]:
    """(runs, runs with a complete cost, their lowest and highest cost, their sum)."""
    clause, params = source(filters, tag_value)
    sql = (
        f"SELECT COUNT(*), COUNT({COMPLETE_COST}), MIN({COMPLETE_COST}), MAX({COMPLETE_COST}), "
        f"SUM({COMPLETE_COST}) FROM {clause}"
    )
    return sql, params


class Dearest(NamedTuple):
    """Which groups a top list reads: the ``rows`` dearest (None: all), or every group costing at least
    ``floor`` (the groups tied with the last one shown, and those before it)."""

    rows: int | None = None
    floor: float | None = None


class Walk(NamedTuple):
    """A ranked read: ``take`` values ``offset`` rows from the cheapest end of an index on the complete cost,
    or (``descending``) from its dearest end, in that order."""

    offset: int
    take: int
    descending: bool


def walk(rank: int, n: int) -> Walk:
    """The read of the values of rank ``rank`` and the next (0 = cheapest) among ``n``, from the nearer end:
    a p95 walks 5 % of the index instead of 95 % (the values then come dearest first)."""
    if rank * 2 <= n:
        return Walk(rank, 2, False)
    take = min(2, n - rank)
    return Walk(n - rank - take, take, True)


def order_by(columns: Sequence[str], how: Walk) -> str:
    """``ORDER BY`` ``columns`` in the direction of ``how``, then its ``LIMIT`` and ``OFFSET``."""
    direction = " DESC" if how.descending else ""
    return f" ORDER BY {', '.join(c + direction for c in columns)} LIMIT {int(how.take)} OFFSET {int(how.offset)}"


def ranked_sql(
    filters: ReportFilter,
    tag_value: TagValue | None,
    how: Walk,
    group: tuple[list[str], list[Any]] = ([], []),
) -> tuple[str, list[Any]]:
    """The complete costs ``how`` reads (:func:`walk`); ``group``: one group's conditions
    (:func:`group_conditions`)."""
    clause, params = source(filters, tag_value, f"{COMPLETE_COST} IS NOT NULL", *group[0])
    # Constant columns first in the order: the planner then reads the index of the group (or of the
    # filter) instead of walking the index of every run's cost.
    columns = (*_constant_columns(filters, group[0]), COMPLETE_COST)
    return f"SELECT {COMPLETE_COST} FROM {clause}{order_by(columns, how)}", [*params, *group[1]]


def kept_tag_filter(filters: ReportFilter, tag_value: TagValue | None) -> bool:
    """Whether ``filters`` select runs by a kept tag (:func:`source`): their runs are one range of
    :data:`.tag_runs_sql.TAG_RUNS`, with no index on a group's cost within it, so their costs are better
    read once (:func:`costs_sql`) than by rank (each ranked read would sort the range)."""
    from .tags_sql import KeptTagValue

    return isinstance(tag_value, KeptTagValue) and any(key in tag_value.kept for key, _ in filters.tags)


def costs_sql(
    keys: tuple[str, ...],
    filters: ReportFilter,
    tag_value: TagValue | None,
    groups: list[tuple[Any, ...]] | None,
) -> tuple[str, list[Any]]:
    """The values of ``keys`` and the complete cost of every run of ``groups`` (None, or no ``keys``: of
    every group) that ``filters`` select, in one read."""
    extra: list[Any] = []
    condition = [any_group(keys, groups, extra)] if keys and groups is not None else []
    clause, params = source(filters, tag_value, f"{COMPLETE_COST} IS NOT NULL", *condition)
    columns = ", ".join((*keys, COMPLETE_COST))
    return f"SELECT {columns} FROM {clause}", [*params, *extra]


def _constant_columns(filters: ReportFilter, group: list[str]) -> tuple[str, ...]:
    """The columns of the index a ranked read should walk: the group's keys, else a filter's column."""
    for keys in sorted(GROUP_KEYS, key=len, reverse=True):  # the most specific index first
        if group and all(any(c.startswith(f"{k} ") for c in group) for k in keys):
            return keys
    if filters.use_case is not None:
        return ("use_case",)
    if filters.user_id is not None:
        return ("user_id",)
    return ()


def bins_sql(
    dialect: str, filters: ReportFilter, tag_value: TagValue | None, low: float, width: float
) -> tuple[str, list[Any]]:
    """(bin, runs) of the complete costs: bin ``int((cost - low) / width)``, as Python computes it."""
    clause, params = source(filters, tag_value, f"{COMPLETE_COST} IS NOT NULL")
    ratio = f"({COMPLETE_COST} - ?) / ?"
    binned = f"CAST({ratio} AS INTEGER)" if dialect == "sqlite" else f"CAST(trunc({ratio}) AS BIGINT)"
    return f"SELECT {binned} AS bin, COUNT(*) FROM {clause} GROUP BY bin", [
        float(low),
        float(width),
        *params,
    ]


def group_keys(keys: tuple[str, ...]) -> bool:
    """Whether the per-run figures of a report grouped by ``keys`` come from an index of the table."""
    return keys in GROUP_KEYS


def order_sql(
    keys: tuple[str, ...], filters: ReportFilter, tag_value: TagValue | None, read: Dearest | None = None
) -> tuple[str, list[Any]]:
    """Per value of ``keys``: those values, runs, their cost (the sum of the runs' costs, as the report
    sums them), the number and sum of the complete costs; read from the group's index alone. ``read``:
    only the dearest groups, or those costing at least a floor (:class:`Dearest`; unknown cost last, ties
    in no particular order: the caller orders them, and asks for every tie)."""
    clause, params = source(filters, tag_value)
    group = ", ".join(keys)
    cost = f"SUM({DEAR_COST})"
    sql = (
        f"SELECT {group}, COUNT(*), {cost}, COUNT({COMPLETE_COST}), SUM({COMPLETE_COST}) "
        f"FROM {clause} GROUP BY {group}"
    )
    if read is not None and read.floor is not None:
        sql += f" HAVING {cost} >= ?"
        params = [*params, read.floor]
    if read is None or read.rows is None:
        return sql, params
    sql += f" ORDER BY CASE WHEN {cost} IS NULL THEN 1 ELSE 0 END, {cost} DESC LIMIT ?"
    return sql, [*params, int(read.rows)]


def sums_sql(
    keys: tuple[str, ...],
    filters: ReportFilter,
    tag_value: TagValue | None,
    token_sum: str,
    groups: list[tuple[Any, ...]] | None,
) -> tuple[str, list[Any]]:
    """Per value of ``keys`` among ``groups`` (None: every group): those values, calls, tokens, the
    unpriced, no-usage and partial counts."""
    extra: list[Any] = []
    condition = [any_group(keys, groups, extra)] if groups is not None else []
    clause, filter_params = source(filters, tag_value, *condition)
    group = ", ".join(keys)
    selected = ", ".join(
        [
            group,
            *(
                token_sum.format(c)
                for c in ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls")
            ),
        ]
    )
    return f"SELECT {selected} FROM {clause} GROUP BY {group}", [*filter_params, *extra]


NAMED_GROUPS: Final = 200
"""The most groups a read names (:func:`any_group`); a read of more reads every group of its filter and
the caller keeps those it asked for (one pass of the filter's rows costs less than thousands of terms)."""


def named(groups: list[tuple[Any, ...]]) -> list[tuple[Any, ...]] | None:
    """``groups`` for a read that names them, or None (every group) past :data:`NAMED_GROUPS`."""
    return groups if len(groups) <= NAMED_GROUPS else None


def any_group(keys: tuple[str, ...], groups: list[tuple[Any, ...]], params: list[Any]) -> str:
    """The condition selecting any of ``groups`` (its parameters appended to ``params``). An ``OR`` of one
    term per group: a few hundred at most (:data:`NAMED_GROUPS`), as SQLite parses a longer one into an
    expression deeper than it allows (1,000)."""
    alternatives = []
    for values in groups:
        clauses, more = group_conditions(keys, values)
        alternatives.append("(" + " AND ".join(clauses) + ")")
        params.extend(more)
    return "(" + " OR ".join(alternatives) + ")"


def group_conditions(keys: tuple[str, ...], values: tuple[Any, ...]) -> tuple[list[str], list[Any]]:
    """The conditions selecting one group (a NULL value too)."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in zip(keys, values):
        if value is None:
            clauses.append(f"{key} IS NULL")
        else:
            clauses.append(f"{key} = ?")
            params.append(value)
    return clauses, params
