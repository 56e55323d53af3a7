"""The per-run table's rows again, once per kept tag value they carry, stored together by (tag key, value).

A filter on a kept tag (:mod:`.tags_sql`) selects runs spread over the whole
per-run table (:data:`.runs_sql.RUNS`): its 50,000 runs of a 10M-call ledger
were 50,000 index lookups per statement, and a page asks a dozen statements of
them (0.2-0.35 s each). :data:`TAG_RUNS` holds, for every kept key a run has a
value of, a copy of the run's row with that key and value in front; SQLite
stores it ``WITHOUT ROWID``, ordered by (key, value, use case, run id), so the
runs of one tag value are one range of the table (20-70 ms for those 50,000);
PostgreSQL reads the same range through its primary key.

A run's tag value is its calls' (the per-run table answers only while no run is
``mixed``, and so does this one: :func:`.runs_sql.mixed_sql`). Kept exact in
the transaction that writes the ledger: after the per-run table changed, the
rows of the runs it touched are replaced by their current copies (SQLite's fold
from :data:`.rollup_sql.FOLD_RUNS`; PostgreSQL's statement triggers from the
transition tables, after the per-run table's row lock serialised the writers of
a run). A key registered later has no stored run with a value yet, so nothing
is backfilled then; the schema 10 migration fills the table from the per-run
table.

:data:`TAG_GROUPS` does the same for the per-(run, group) rows of the call-level
groupings (:data:`.groups_sql.CALL_GROUPINGS`: model, step): a top list of
models under a tag filter read 200,000 of them through 50,000 index lookups
(0.75-1 s in SQLite, 2.2-2.6 s in PostgreSQL); here they are one range per
(key, value, grouping), ordered by group, so the groups' sums stream out of it
without a sort. Its key orders a group's rows by :func:`part`, an encoding of
the group's two key values that no NULL can break (a primary key's columns
cannot be NULL; a provider or a step may be).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from . import groups_sql
from . import runs_sql as per_run
from .base import TOKEN_COLUMNS, ReportFilter, filter_clauses
from .runs_sql import RUNS
from .tags_sql import TAG_KEYS, value_sql
from .tags_sql import grouping as _tag_grouping

__all__ = [
    "TAG_GROUPS",
    "TAG_RUNS",
    "TagWindowSQL",
    "backfill",
    "group_sums_sql",
    "parsed_part",
    "part",
    "part_of",
    "pg_refresh",
    "ranked_sql",
    "sqlite_refresh",
    "tables",
    "totals_by",
    "totals_grouping",
    "totals_sql",
    "window_parts_sql",
]

TAG_RUNS: Final = "usecase_tag_runs"
TAG_GROUPS: Final = "usecase_tag_groups"
_TAG_PREFIX: Final = _tag_grouping("")


def part(row: str) -> str:
    """The text standing for the group of row ``row`` (its ``k1``, ``k2``) in :data:`TAG_GROUPS`' key: each
    value as its length, a colon and itself, or ``-`` when NULL; one text per pair of values, and the same
    in both dialects."""
    return part_of(f"{row}.k1", f"{row}.k2")


def part_of(first: str, second: str | None) -> str:
    """:func:`part` of two text expressions (``second`` None: a grouping of one key)."""
    texts = [f"COALESCE(length({v}) || ':' || {v}, '-')" for v in (first, second) if v is not None]
    return " || ".join(texts + (["'-'"] if second is None else []))


def _call_groupings() -> str:
    return ", ".join(f"'{g.by}'" for g in groups_sql.CALL_GROUPINGS)


def tables(dialect: str) -> list[str]:
    """Both tables and their indexes on (use case, run id), which the refresh of a run's rows seeks
    (idempotent)."""
    clustered = " WITHOUT ROWID" if dialect == "sqlite" else ""
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {TAG_RUNS} (tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, "
            f"{per_run.column_definitions(dialect)}, PRIMARY KEY (tag_key, tag_value, use_case, run_id)){clustered}"
        ),
        f"CREATE INDEX IF NOT EXISTS {TAG_RUNS}_run ON {TAG_RUNS} (use_case, run_id)",
        (
            f"CREATE TABLE IF NOT EXISTS {TAG_GROUPS} (tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, "
            f"part TEXT NOT NULL, {groups_sql.column_definitions(dialect)}, "
            f"PRIMARY KEY (tag_key, tag_value, report_by, part, use_case, run_id)){clustered}"
        ),
        f"CREATE INDEX IF NOT EXISTS {TAG_GROUPS}_run ON {TAG_GROUPS} (use_case, run_id)",
        # a group's complete costs in order (its p50 and p95 by rank)
        (
            f"CREATE INDEX IF NOT EXISTS {TAG_GROUPS}_rank ON {TAG_GROUPS} "
            f"(tag_key, tag_value, report_by, part, {per_run.COMPLETE_COST})"
        ),
    ]


def _lateral(table: str, alias: str, outer: str, extra: str = "") -> str:
    """PostgreSQL: the rows of ``table`` of the run of row ``outer``, looked up by key for each (a nested
    loop: without statistics on a transition table, and with a table's statistics older than its growth,
    the planner hash-joined whole tables per batch). ``OFFSET 0`` keeps the planner from flattening the
    subquery into a join it would plan the same way."""
    return (
        f"CROSS JOIN LATERAL (SELECT * FROM {table} AS x WHERE x.use_case = {outer}.use_case "
        f"AND x.run_id = {outer}.run_id{extra} OFFSET 0) AS {alias}"
    )


def _runs_copies(dialect: str, runs: str | None) -> str:
    """The rows :data:`TAG_RUNS` should hold for the runs ``runs`` (a query of ``use_case, run_id``; None:
    every run): a copy of a run's per-run row per kept key it has a value of. SQLite reads the keys first:
    with none kept, the per-run table is not read (PostgreSQL's triggers skip this with no key kept)."""
    value = value_sql(dialect, "r", "k.tag_key")
    copied = ", ".join(f"r.{c}" for c in per_run.columns().split(", "))
    selected = f"SELECT k.tag_key AS tag_key, {value} AS tag_value, {copied} FROM "
    if runs is None:
        return f"{selected}{TAG_KEYS} AS k CROSS JOIN {RUNS} AS r WHERE {value} IS NOT NULL"
    if dialect == "sqlite":
        return (
            f"{selected}{TAG_KEYS} AS k CROSS JOIN {RUNS} AS r WHERE (r.use_case, r.run_id) IN ({runs}) "
            f"AND {value} IS NOT NULL"
        )
    return f"{selected}({runs}) AS l {_lateral(RUNS, 'r', 'l')} CROSS JOIN {TAG_KEYS} AS k WHERE {value} IS NOT NULL"


def _insert_runs(dialect: str, runs: str | None) -> str:
    order = " ORDER BY 1, 2, 3, 4" if dialect == "postgresql" else ""  # (key, value, use case, run id)
    return f"INSERT INTO {TAG_RUNS} (tag_key, tag_value, {per_run.columns()}) {_runs_copies(dialect, runs)}{order}"


def _copies(dialect: str, source: str, runs: str | None) -> str:
    """The rows :data:`TAG_GROUPS` should hold for the runs of ``source`` (:data:`TAG_RUNS`, or the rows it
    should hold), of ``runs`` only (None: all of them): their call-level rows of
    :data:`.groups_sql.GROUPS`, once per kept tag value of the run."""
    copied = ", ".join(f"g.{c}" for c in groups_sql.columns().split(", "))
    selected = f"SELECT t.tag_key, t.tag_value, {part('g')} AS part, {copied} FROM "
    call_level = f"report_by IN ({_call_groupings()})"
    if dialect == "postgresql" and source != TAG_RUNS:  # (a few runs' new copies: their groups by key)
        return f"{selected}{source} AS t {_lateral(groups_sql.GROUPS, 'g', 't', f' AND x.{call_level}')}"
    if dialect == "postgresql" and runs is not None:
        groups = _lateral(groups_sql.GROUPS, "g", "t", f" AND x.{call_level}")
        return f"{selected}({runs}) AS l {_lateral(source, 't', 'l')} {groups}"
    joined = (
        f"{selected}{source} AS t JOIN {groups_sql.GROUPS} AS g ON g.use_case = t.use_case "
        f"AND g.run_id = t.run_id AND g.{call_level}"
    )
    return joined if runs is None else f"{joined} WHERE (t.use_case, t.run_id) IN ({runs})"


def _insert_groups(dialect: str, runs: str | None) -> str:
    order = (
        " ORDER BY 1, 2, 4, 3, 7, 8" if dialect == "postgresql" else ""
    )  # (key, value, grouping, part, run)
    return (
        f"INSERT INTO {TAG_GROUPS} (tag_key, tag_value, part, {groups_sql.columns()}) "
        f"{_copies(dialect, TAG_RUNS, runs)}{order}"
    )


def _stored(dialect: str, table: str, runs: str) -> str:
    """The rows of ``table`` of the runs ``runs``."""
    if dialect == "sqlite":
        return f"SELECT * FROM {table} AS r WHERE (r.use_case, r.run_id) IN ({runs})"
    return f"SELECT r.* FROM ({runs}) AS l {_lateral(table, 'r', 'l')}"


def _totals(dialect: str, runs: str) -> str:
    """The change of the tag groupings' totals (:func:`totals_grouping`) when the rows of the runs ``runs``
    in both tables are replaced by their copies: one statement, before they are (see
    :func:`.groups_sql.tag_totals_delta`); each set of rows read once (a run's rows count in four
    groupings)."""
    sets = {
        "tag_new_runs": _runs_copies(dialect, runs),
        "tag_new_groups": _copies(dialect, "tag_new_runs", None),
        "tag_old_runs": _stored(dialect, TAG_RUNS, runs),
        "tag_old_groups": _stored(dialect, TAG_GROUPS, runs),
    }
    change = groups_sql.tag_totals_delta(
        dialect,
        [
            (TAG_RUNS, "tag_new_runs", 1, "true"),
            (TAG_RUNS, "tag_old_runs", -1, "true"),
            (TAG_GROUPS, "tag_new_groups", 1, "true"),
            (TAG_GROUPS, "tag_old_groups", -1, "true"),
        ],
    )
    return (
        "WITH "
        + ", ".join(f"{name} AS MATERIALIZED ({query})" for name, query in sets.items())
        + " "
        + change
    )


def totals_grouping(report_by: str, key: str) -> str:
    """The ``report_by`` of :data:`.groups_sql.TOTALS`' rows of the groups of grouping ``report_by`` among
    the runs with a value of tag ``key`` (both SQL expressions; ``k1`` the value, ``k2`` the group's
    :func:`part`): ``model@tag:tenant``. A tag key is a name, so never an ``@``."""
    return f"{report_by} || '@' || '{_TAG_PREFIX}' || {key}"


def totals_by(by: str, key: str) -> str:
    """:func:`totals_grouping` of grouping ``by`` and tag ``key`` (values)."""
    return f"{by}@{_TAG_PREFIX}{key}"


def parsed_part(text: str) -> tuple[str | None, str | None]:
    """The (``k1``, ``k2``) a :func:`part` text stands for."""
    values: list[str | None] = []
    at = 0
    for _ in range(2):
        if text[at] == "-":
            values.append(None)
            at += 1
            continue
        colon = text.index(":", at)
        length = int(text[at:colon])
        values.append(text[colon + 1 : colon + 1 + length])
        at = colon + 1 + length
    return values[0], values[1]


def _delete(table: str, runs: str) -> str:
    return f"DELETE FROM {table} WHERE (use_case, run_id) IN ({runs})"


def sqlite_refresh(touched: str) -> list[str]:
    """SQLite: replace the rows of the runs of ``touched`` (a table of ``use_case, run_id``), after the
    per-run table and the groups changed."""
    runs = f"SELECT x.use_case, x.run_id FROM {touched} AS x"
    return [
        _totals("sqlite", runs),
        _delete(TAG_RUNS, runs),
        _insert_runs("sqlite", runs),
        _delete(TAG_GROUPS, runs),
        _insert_groups("sqlite", runs),
        groups_sql.drop_empty(),
    ]


def pg_refresh(touched: str) -> list[str]:
    """PostgreSQL: replace the rows of the runs of ``touched`` (a transition table or a query with
    ``use_case, run_id`` columns), after the per-run table and the groups changed. The writers of a run
    queue on its per-run row (upserted before), so each sees the rows the one before it committed."""
    runs = f"SELECT DISTINCT x.use_case, x.run_id FROM {touched} AS x"

    def delete(table: str) -> str:
        return (
            f"DELETE FROM {table} USING ({runs}) AS l "
            f"WHERE {table}.use_case = l.use_case AND {table}.run_id = l.run_id"
        )

    statements = [
        _totals("postgresql", runs),
        delete(TAG_RUNS),
        _insert_runs("postgresql", runs),
        delete(TAG_GROUPS),
        _insert_groups("postgresql", runs),
        groups_sql.drop_empty(),
    ]
    # (no key kept: no copies to change, and six statements a trigger need not plan and run)
    return [f"IF EXISTS (SELECT 1 FROM {TAG_KEYS}) THEN\n    " + ";\n    ".join(statements) + ";\n  END IF"]


def backfill(dialect: str) -> list[str]:
    """Fill both tables from the per-run table and the groups (the schema 10 migration, after the kept keys
    are known)."""
    return [
        f"DELETE FROM {TAG_RUNS}",
        f"DELETE FROM {TAG_GROUPS}",
        f"DELETE FROM {groups_sql.TOTALS} WHERE report_by LIKE '%@{_TAG_PREFIX}%'",
        _insert_runs(dialect, None),
        _insert_groups(dialect, None),
        groups_sql.change_totals(dialect, TAG_RUNS, 1, "true")[0],
        groups_sql.change_totals(dialect, TAG_GROUPS, 1, "true")[0],
    ]


# --- queries ------------------------------------------------------------------------------------


def _range(
    key: str, value: str, by: str, use_case: str | None, use_cases: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause of grouping ``by``'s rows of the runs whose tag ``key`` is ``value``, within a
    use case or the allowed set of them."""
    clauses, params = filter_clauses(use_case, None, use_cases=use_cases)
    where = " AND ".join(["tag_key = ?", "tag_value = ?", "report_by = ?", *clauses])
    return f" WHERE {where}", [key, value, by, *params]


def group_sums_sql(
    by: str,
    key: str,
    value: str,
    token_sum: str,
    use_case: str | None = None,
    use_cases: Sequence[str] | None = None,
) -> tuple[str, list[Any]]:
    """Per group of call-level grouping ``by`` among the runs whose kept tag ``key`` is ``value``: its
    :func:`part` (:func:`parsed_part` gives its ``k1``, ``k2``), runs, calls, the token columns, the
    unpriced, no-usage and partial counts, the sum of the runs' costs (when known), the number and sum of
    their complete costs. One range of :data:`TAG_GROUPS`, in :func:`part` order: the sums stream out
    without a sort."""
    where, params = _range(key, value, by, use_case, use_cases)
    sums = ", ".join(
        token_sum.format(c)
        for c in ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls")
    )
    dear, complete = per_run.DEAR_COST, per_run.COMPLETE_COST
    return (
        f"SELECT part, COUNT(*), {sums}, SUM({dear}), COUNT({complete}), SUM({complete}) "
        f"FROM {TAG_GROUPS}{where} GROUP BY part"
    ), params


def totals_sql(
    dialect: str, by: str, key: str, value: str, read: per_run.Dearest | None = None
) -> tuple[str, list[Any]]:
    """:func:`group_sums_sql` (the same columns) from :data:`.groups_sql.TOTALS`' rows of the tag grouping
    (:func:`totals_by`): for a tag value not limited to some use cases, the groups ``read`` asks for."""
    return groups_sql.totals_rows_sql(dialect, totals_by(by, key), value, read)


def ranked_sql(
    by: str,
    key: str,
    value: str,
    group: str,
    how: per_run.Walk,
    use_case: str | None = None,
    use_cases: Sequence[str] | None = None,
) -> tuple[str, list[Any]]:
    """The complete run costs ``how`` reads (:func:`.runs_sql.walk`) in the group of :func:`part` ``group``
    of :func:`group_sums_sql`: a walk of the index on the complete cost within the group."""
    where, params = _range(key, value, by, use_case, use_cases)
    complete = per_run.COMPLETE_COST
    columns = ("tag_key", "tag_value", "report_by", "part", complete)
    sql = f"SELECT {complete} FROM {TAG_GROUPS}{where} AND part = ? AND {complete} IS NOT NULL"
    return sql + per_run.order_by(columns, how), [*params, group]


class TagWindowSQL(NamedTuple):
    """The queries of a grouping over a time window under one kept tag (:func:`window_parts_sql`)."""

    sums: tuple[str, list[Any]]
    """Per group of the runs wholly inside the window: its key (two columns), runs, calls, the token
    columns, the unpriced, no-usage and partial counts, the sum of the costs when known."""
    costs: tuple[str, list[Any]]
    """The complete costs of those runs in each group: its key (two columns), cost (a row each)."""
    parts: bool
    """Whether a key is a :func:`part` text and NULL (a call-level grouping: :func:`parsed_part` gives its
    ``k1``, ``k2``) rather than ``k1``, ``k2`` themselves."""
    crossing: tuple[str, list[Any]]
    """The (use case, run id) of the tag value's runs crossing an end, whose calls in the window only the
    ledger knows."""


def window_parts_sql(
    dialect: str,
    by: str,
    key: str,
    value: str,
    since: int | None,
    until: int | None,
    token_sum: str,
    use_case: str | None = None,
    use_cases: Sequence[str] | None = None,
) -> TagWindowSQL:
    """Grouping ``by`` (a call-level one, or one of whole runs: :data:`.groups_sql.RUN_GROUPINGS`) over
    ``[since, until)`` among the runs whose kept tag ``key`` is ``value`` (:class:`TagWindowSQL`). A run's
    row in :data:`TAG_RUNS` (one range of the tag value, 3,900 of 50,000 runs inside a week at 10M calls)
    tells whether it is inside, and holds the keys of a run grouping; a call-level grouping's copies keep
    no times of their own, so each inside run's rows are looked up by the run (SQLite is told the index: it
    chose the tag's range of every group's rows and read it per run). Summed in the database: the rows
    themselves, tokens and all, took 0.35 s to cross into Python from PostgreSQL."""
    low, high = per_run.window_bounds(ReportFilter(since_ns=since, until_ns=until))
    scope, scope_params = per_run.use_case_clauses(use_case, use_cases, "r.use_case")
    scoped = "".join(f" AND {c}" for c in scope)
    tagged = "r.tag_key = ? AND r.tag_value = ?"
    inside = f"WHERE {tagged} AND r.first_ns >= ? AND r.last_ns < ?{scoped}"
    params: list[Any] = [key, value, low, high, *scope_params]
    whole = groups_sql.kept(by)
    if whole is not None and whole in groups_sql.RUN_GROUPINGS:
        row = "r"
        group = ", ".join([f"r.{k}" for k in whole.keys] + ["NULL"] * (2 - len(whole.keys)))
        source = f"FROM {TAG_RUNS} AS r {inside}"
    else:
        by_run = f" INDEXED BY {TAG_GROUPS}_run" if dialect == "sqlite" else ""
        row, group = "g", "g.part, NULL"
        source = (
            f"FROM {TAG_RUNS} AS r CROSS JOIN {TAG_GROUPS} AS g{by_run} {inside} AND g.use_case = r.use_case "
            "AND g.run_id = r.run_id AND g.tag_key = r.tag_key AND g.tag_value = r.tag_value AND g.report_by = ?"
        )
        params.append(by)
    sums = ", ".join(
        token_sum.format(f"{row}.{c}")
        for c in ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls")
    )
    complete = f"{row}.{per_run.COMPLETE_COST}"
    crossing = groups_sql.crossing_sql(
        dialect, since, until, use_case, use_cases, TAG_RUNS, (tagged, [key, value])
    )
    grouped = ", ".join(k for k in group.split(", ") if k != "NULL")
    return TagWindowSQL(
        (
            f"SELECT {group}, COUNT(*), {sums}, SUM({row}.{per_run.DEAR_COST}) {source} GROUP BY {grouped}",
            params,
        ),
        (f"SELECT {group}, {complete} {source} AND {complete} IS NOT NULL", params),
        row == "g",
        crossing,
    )
