"""Per-(run, group) rows for the call-level groupings, and every grouping's totals, kept by the database.

A report grouped by model or step has per-run
figures (runs, the average, p50 and p95 run cost) over the runs *of each group*:
a run that calls two models is one run of each, costing what its calls to that
model cost. The per-run table (:mod:`.runs_sql`) keeps whole runs, so those
groupings used to read every call of the ledger. Two tables end that:

* :data:`GROUPS`: one row per (grouping, group, run) for the groupings of
  :data:`CALL_GROUPINGS` and the kept tag keys (:mod:`.tags_sql`: ``tag:KEY``, with a
  "no value" group), with the run's calls in the group summed, and its
  cost when known (``dear_cost``) and when known and complete (``complete_cost``),
  exactly as :data:`.runs_sql.RUNS` holds them for whole runs, and times covering its calls
  (:data:`TIMES`, schema 11). Its indexes answer a group's p50 and p95 by rank, a use
  case's groups, and a group's rows in a time window (:func:`window_parts_sql`).
* :data:`TOTALS`: one row per group of every grouping of :data:`CALL_GROUPINGS`
  and :data:`RUN_GROUPINGS`: its runs, the sums of its runs' measures, the number
  and sum of their complete costs. A top list over all time is a read of a few
  rows (20 use cases, 5 models, 50,000 experiences) instead of a pass over
  every run; the all-time summary is the sum of the use cases' rows.

Kept exact in the transaction that writes the ledger, like the rollups:

* :data:`GROUPS` from the ledger rows written and replaced: the SQLite fold
  (:func:`sqlite_fold`, from the pending rows) and the PostgreSQL statement
  triggers (:func:`pg_apply`, in key order); a group row a replaced call emptied
  is removed.
* :data:`TOTALS` from the changes of the rows of :data:`GROUPS` and
  :data:`.runs_sql.RUNS` (whose values, such as a run's complete cost, are not
  sums of its calls' and so cannot be kept from the calls): SQLite's fold takes
  the rows of the runs it touches out of the totals, changes them, and adds them
  back (:func:`sqlite_before`, :func:`sqlite_after`: one upsert per group, where
  row triggers doubled the cost of a write); PostgreSQL's statement triggers with
  transition tables apply each statement's new rows minus its old ones, in key
  order. A group left without runs is removed (so that a forgotten user's id
  does not stay behind as a group key).

Costs are sums of doubles, so a total equals the sum over its runs to
floating-point rounding; counts and tokens are integers and exactly equal.
Created and filled from the ledger by the schema 8 migration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Final, NamedTuple

from . import tags_sql
from .base import TABLE, TOKEN_COLUMNS, ReportFilter
from .runs_sql import (
    AFTER_ALL,
    BEFORE_ALL,
    COMPLETE_COST,
    DEAR_COST,
    NULL_KEY,
    RUNS,
    Dearest,
    Walk,
    any_group,
    group_conditions,
    order_by,
    use_case_clauses,
    window_bounds,
    window_scope,
)

__all__ = [
    "CALL_GROUPINGS",
    "GROUPS",
    "RUN_GROUPINGS",
    "TOTALS",
    "TOTALS_FIELDS",
    "WITHIN_USE_CASE",
    "Dearest",
    "Kept",
    "WindowParts",
    "WindowSQL",
    "backfill",
    "change_totals",
    "column_definitions",
    "columns",
    "crossing_sql",
    "drop_empty",
    "groups_sql",
    "kept",
    "pg_apply",
    "pg_register",
    "ranked_sql",
    "sqlite_after",
    "sqlite_before",
    "sqlite_fold",
    "sqlite_register",
    "sqlite_totals",
    "summary_sql",
    "tables",
    "tag_totals_delta",
    "tags_backfill",
    "totals_ddl",
    "totals_rows_sql",
    "totals_sql",
    "window_groups_sql",
    "window_index",
    "window_ledger_sql",
    "window_parts_sql",
    "window_run_costs_sql",
    "window_run_groups_sql",
    "window_sql",
    "within_backfill",
    "within_use_case",
]

GROUPS: Final = "usecase_run_groups"
TOTALS: Final = "usecase_group_totals"


class Kept(NamedTuple):
    """A report grouping (a ``report --by`` value) the tables keep, and the ledger columns of its key (one
    or two: the group's ``k1`` and ``k2``)."""

    by: str
    keys: tuple[str, ...]


CALL_GROUPINGS: Final = (
    Kept("model", ("provider", "model")),
    Kept("step", ("use_case", "step")),
)
"""The groupings whose groups split a run (its calls can differ on them): kept per (run, group) in
:data:`GROUPS`. Adding one is one row here (its keys must be ledger columns); each costs every write one
more row per (run, group) it touches, so only the groupings the dashboard shows on every overview and use
case page are kept. Cost source and experience version were kept too at first: with the four, a fold
rewrote enough pages that a report running beside sustained writes let the WAL reach 130-196 MiB
(``test_the_wal_stays_bounded_under_sustained_writes_while_a_report_runs``: 60-86 MiB with two, 107 MiB
before the groups); cost source reads the ledger, and the experience version, a run's attribute like the
use case's version, became a column of the per-run table (a run grouping, schema 12)."""

RUN_GROUPINGS: Final = (
    Kept("use-case", ("use_case",)),
    Kept("user", ("user_id",)),
    Kept("experience", ("experience_name", "experience_id")),
    Kept("version", ("use_case", "use_case_version")),
    Kept("experience-version", ("experience_name", "experience_version")),
)
"""The groupings of whole runs (their keys are columns of :data:`.runs_sql.RUNS`): their totals are kept
from its rows. They hold while no run is ``mixed`` (the per-run table's own rule). The experience version
since schema 12 (:data:`.runs_sql.RUN_ONLY_DIMS`; a reader of an older store reads it from the ledger)."""


def kept(by: str, tag_keys: frozenset[str] = frozenset()) -> Kept | None:
    """The kept grouping ``by``, or None. ``tag_keys``: the store's kept tag keys (:mod:`.tags_sql`): a
    ``tag:KEY`` grouping of one of them is kept like a call-level one (its key is no ledger column)."""
    for grouping in (*CALL_GROUPINGS, *RUN_GROUPINGS):
        if grouping.by == by:
            return grouping
    if any(by == tags_sql.grouping(key) for key in tag_keys):
        return Kept(by, (by,))
    return None


def _grouping(by: str) -> Kept:
    """Grouping ``by`` of a query the caller knows is kept (:func:`kept` with the store's tag keys)."""
    grouping = kept(by)
    if grouping is None and by.startswith(tags_sql.grouping("")):
        return Kept(by, (by,))
    assert grouping is not None, by
    return grouping


def _ledger_keys(dialect: str, grouping: Kept) -> tuple[str, str]:
    """``k1, k2`` of ``grouping`` on the ledger's rows (:data:`.base.TABLE`): its columns, or a kept tag's
    value (:func:`.tags_sql.value_sql`, as the per-(run, group) rows hold it) and NULL."""
    if grouping in CALL_GROUPINGS or grouping in RUN_GROUPINGS:
        k1, k2 = (*grouping.keys, "NULL")[:2]
        return k1, k2
    key = grouping.by.removeprefix(tags_sql.grouping("")).replace("'", "''")
    return tags_sql.value_sql(dialect, TABLE, f"'{key}'"), "NULL"


def call_level(grouping: Kept) -> bool:
    """Whether ``grouping``'s groups split a run (model, step, a tag): kept per (run, group)."""
    return grouping not in RUN_GROUPINGS


def _measures() -> tuple[str, ...]:
    from .rollup_sql import MEASURES

    return MEASURES


def _dialect(dialect: str) -> Any:
    from .rollup_sql import _DIALECTS

    return _DIALECTS[dialect]


def _key(name: str, none: str) -> str:
    return f"COALESCE({name}, {none})"


def _measure_definitions(dialect: str) -> str:
    d = _dialect(dialect)
    kinds = {
        "cost_usd": f"{d.real} NOT NULL DEFAULT 0",
        **{t: f"{d.total} NOT NULL DEFAULT 0" for t in TOKEN_COLUMNS},
    }
    return ", ".join(f"{m} {kinds.get(m, f'{d.int} NOT NULL DEFAULT 0')}" for m in _measures())


def column_definitions(dialect: str) -> str:
    """:data:`GROUPS`' columns with their types (:func:`columns` order), as ``CREATE TABLE`` lists them."""
    d = _dialect(dialect)
    return (
        f"report_by TEXT NOT NULL, k1 TEXT, k2 TEXT, use_case TEXT NOT NULL, run_id TEXT NOT NULL, "
        f"{_measure_definitions(dialect)}, {DEAR_COST} {d.real}, {COMPLETE_COST} {d.real}"
    )


TIMES: Final = ("first_ns", "last_ns")
""":data:`GROUPS`' times (not in :func:`columns`: the copies of :mod:`.tag_runs_sql` do not keep them): the
lowest and the highest start of the calls ever added to the (run, group). They cover every call it holds
(a replaced call may leave them wider; they are never narrowed, so no write locks another row to keep them),
which is all a time window needs (:func:`window_parts_sql`): a part whose times are inside the window has
every call inside, so its figures are its figures in the window; the few whose times cross an end are read
from the ledger. The schema 11 migration fills them with the run's times (which cover its calls too)."""


def _times_definitions(dialect: str) -> str:
    return ", ".join(f"{t} {_dialect(dialect).int}" for t in TIMES)


def window_index() -> str:
    """The index a time window's rows of one group are one range of (:func:`window_parts_sql`): made after
    the schema 11 migration added the times."""
    return (
        f"CREATE INDEX IF NOT EXISTS {GROUPS}_window ON {GROUPS} "
        f"(report_by, k1, k2, last_ns, first_ns, use_case, run_id, {DEAR_COST}, {COMPLETE_COST})"
    )


def has_times_sql(dialect: str) -> str:
    """A row when :data:`GROUPS` has its :data:`TIMES` (schema 11)."""
    if dialect == "postgresql":
        return (
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            f"AND table_name = '{GROUPS}' AND column_name = '{TIMES[-1]}'"
        )
    return f"SELECT 1 FROM pragma_table_info('{GROUPS}') WHERE name = '{TIMES[-1]}'"


def add_times(dialect: str) -> list[str]:
    """The schema 11 migration of a store that has :data:`GROUPS`: add the times and fill them with the
    run's, which cover the calls of each of its rows (a row without a run, which no write leaves, gets the
    widest times: every window reads it from the ledger). PostgreSQL's triggers on the table (the group
    totals) are held off for the updates, which change no measure."""
    add = [f"ALTER TABLE {GROUPS} ADD COLUMN {t} {_dialect(dialect).int}" for t in TIMES]
    widest = f"UPDATE {GROUPS} SET first_ns = {BEFORE_ALL}, last_ns = {AFTER_ALL} WHERE first_ns IS NULL"
    if dialect == "postgresql":
        # The update writes every row anew: without the indexes, which are made again after (kept through
        # it, they took every entry twice, and the index the all-time p50/p95 walk had half its pages
        # dead: the models page went from 290 to 385 ms at 10M calls).
        indexes = _group_indexes(dialect)
        return [
            *add,
            *(f"DROP INDEX {name}" for name in indexes),
            f"ALTER TABLE {GROUPS} DISABLE TRIGGER USER",
            (
                f"UPDATE {GROUPS} AS g SET first_ns = r.first_ns, last_ns = r.last_ns FROM {RUNS} AS r "
                "WHERE r.use_case = g.use_case AND r.run_id = g.run_id"
            ),
            widest,
            f"ALTER TABLE {GROUPS} ENABLE TRIGGER USER",
            *indexes.values(),
        ]
    run = f"FROM {RUNS} AS r WHERE r.use_case = {GROUPS}.use_case AND r.run_id = {GROUPS}.run_id"
    return [
        *add,
        f"UPDATE {GROUPS} SET first_ns = (SELECT r.first_ns {run}), last_ns = (SELECT r.last_ns {run})",
        widest,
    ]


def _group_indexes(dialect: str) -> dict[str, str]:
    """:data:`GROUPS`' indexes (but the window index, :func:`window_index`) by name."""
    d = _dialect(dialect)
    k1, k2 = _key("k1", d.none), _key("k2", d.none)
    return {
        # (use case, run id) first: the fold and a forget find a run's rows through it
        f"{GROUPS}_key": f"CREATE UNIQUE INDEX IF NOT EXISTS {GROUPS}_key ON {GROUPS} (use_case, run_id, report_by, {k1}, {k2})",
        # a group's complete costs in order (p50, p95 by rank)
        f"{GROUPS}_rank": f"CREATE INDEX IF NOT EXISTS {GROUPS}_rank ON {GROUPS} (report_by, k1, k2, {COMPLETE_COST})",
        # a run's groups and costs from the index alone: a use case's groups, the runs of a filter
        f"{GROUPS}_parts": (
            f"CREATE INDEX IF NOT EXISTS {GROUPS}_parts ON {GROUPS} "
            f"(use_case, run_id, report_by, k1, k2, {DEAR_COST}, {COMPLETE_COST})"
        ),
    }


def tables(dialect: str) -> list[str]:
    """Both tables and their indexes (idempotent; the window index: :func:`window_index`)."""
    d = _dialect(dialect)
    measures = _measure_definitions(dialect)
    k1, k2 = _key("k1", d.none), _key("k2", d.none)
    return [
        f"CREATE TABLE IF NOT EXISTS {GROUPS} ({column_definitions(dialect)}, {_times_definitions(dialect)})",
        *_group_indexes(dialect).values(),
        (
            f"CREATE TABLE IF NOT EXISTS {TOTALS} (report_by TEXT NOT NULL, k1 TEXT, k2 TEXT, "
            f"runs {d.int} NOT NULL DEFAULT 0, {measures}, complete_runs {d.int} NOT NULL DEFAULT 0, "
            f"complete_sum {d.real} NOT NULL DEFAULT 0)"
        ),
        f"CREATE UNIQUE INDEX IF NOT EXISTS {TOTALS}_key ON {TOTALS} (report_by, {k1}, {k2})",
        f"CREATE INDEX IF NOT EXISTS {TOTALS}_empty ON {TOTALS} (runs) WHERE runs <= 0",
        *tags_sql.tables(dialect),
    ]


# --- the per-(run, group) rows, from the ledger's rows ---------------------------------------


def _groupings_table(dialect: str) -> str:
    """The kept call-level groupings as a derived table ``b(report_by)``."""
    del dialect
    return "(" + " UNION ALL ".join(f"SELECT '{g.by}' AS report_by" for g in CALL_GROUPINGS) + ") AS b"


def _key_case(position: int, row: str) -> str:
    """The ``k1`` (``position`` 0) or ``k2`` (1) of ledger row ``row`` in grouping ``b.report_by``."""
    whens = " ".join(
        f"WHEN '{g.by}' THEN {row}.{g.keys[position]}" for g in CALL_GROUPINGS if len(g.keys) > position
    )
    return f"CASE b.report_by {whens} END" if whens else "NULL"


def _selected(dialect: str, source: str, kind: str, tags_only: bool = False) -> str:
    """The rows of :data:`GROUPS` from the rows ``r`` of ``source``: ledger rows (``kind`` ``row``), pending
    rows with a ``sign`` (``signed``) or fold cells (``cell``, :data:`.rollup_sql.FOLD_CELLS`); only those of
    the kept tag keys when ``tags_only``."""
    from .rollup_sql import _sqlite_total, contribution
    from .runs_sql import _derived

    def total(m: str) -> str:
        added = contribution(m, "r", kind)
        return _sqlite_total(added, m) if dialect == "sqlite" else f"SUM({added})"

    measures = [total(m) for m in _measures()]
    first, last = ("r.first_ns", "r.last_ns") if kind == "cell" else ("r.start_ns", "r.start_ns")
    measures += [f"MIN({first})", f"MAX({last})"]
    names = ("report_by", "k1", "k2", "use_case", "run_id", *_measures(), *TIMES)

    def select(values: list[str], joined: str) -> str:
        inner = ", ".join(f"{v} AS {c}" for v, c in zip(values, names))
        return f"SELECT {inner} FROM {source} AS r CROSS JOIN {joined} GROUP BY 1, 2, 3, 4, 5"

    groupings = select(
        ["b.report_by", _key_case(0, "r"), _key_case(1, "r"), "r.use_case", "r.run_id", *measures],
        _groupings_table(dialect),
    )
    # the kept tag keys (.tags_sql): one group per value of each, and one for the calls without it
    tags = select(
        [
            f"'{tags_sql.grouping('')}' || k.tag_key",
            tags_sql.value_sql(dialect, "r", "k.tag_key"),
            "NULL",
            "r.use_case",
            "r.run_id",
            *measures,
        ],
        f"{tags_sql.TAG_KEYS} AS k",
    )
    derived = ", ".join(_derived(lambda m: f"g.{m}"))
    # (the WHERE: SQLite reads ON CONFLICT after a bare FROM as a join's ON)
    both = tags if tags_only else f"{groupings} UNION ALL {tags}"
    plain = ", ".join(f"g.{c}" for c in names[: -len(TIMES)])
    times = ", ".join(f"g.{t}" for t in TIMES)
    return f"{plain}, {derived}, {times} FROM ({both}) AS g WHERE true"


def columns() -> str:
    """:data:`GROUPS`' columns, in order, but its :data:`TIMES` (the columns of its copies)."""
    return ", ".join(("report_by", "k1", "k2", "use_case", "run_id", *_measures(), DEAR_COST, COMPLETE_COST))


def _written() -> str:
    """:data:`GROUPS`' columns as its writers list them: :func:`columns`, then :data:`TIMES`."""
    return ", ".join((columns(), *TIMES))


def _upsert(dialect: str, source: str, kind: str) -> str:
    from .runs_sql import added

    d = _dialect(dialect)
    t = "t" if dialect == "postgresql" else GROUPS
    alias = " AS t" if dialect == "postgresql" else ""
    k1, k2 = _key("g.k1", d.none), _key("g.k2", d.none)
    order = f" ORDER BY g.use_case, g.run_id, g.report_by, {k1}, {k2}" if dialect == "postgresql" else ""
    conflict = f"(use_case, run_id, report_by, {_key('k1', d.none)}, {_key('k2', d.none)})"
    times = (
        f"first_ns = {d.least}({t}.first_ns, excluded.first_ns), "
        f"last_ns = {d.greatest}({t}.last_ns, excluded.last_ns)"
    )
    return (
        f"INSERT INTO {GROUPS}{alias} ({_written()}) SELECT {_selected(dialect, source, kind)}{order} "
        f"ON CONFLICT {conflict} DO UPDATE SET {added(t)}, {times}"
    )


def _emptied(old: str, dialect: str) -> str:
    """Remove the group rows the replaced rows ``o`` of ``old`` emptied."""
    if dialect == "postgresql":
        return (
            f"DELETE FROM {GROUPS} USING (SELECT DISTINCT o.use_case, o.run_id FROM {old}) AS l "
            f"WHERE {GROUPS}.use_case = l.use_case AND {GROUPS}.run_id = l.run_id AND {GROUPS}.calls <= 0"
        )
    return (
        f"DELETE FROM {GROUPS} WHERE calls <= 0 AND (use_case, run_id) IN "
        f"(SELECT o.use_case, o.run_id FROM {old})"
    )


@cache
def sqlite_register() -> tuple[str, ...]:
    """SQLite, first in the fold: keep the new tag keys of the fold's cells (:mod:`.tags_sql`), add their
    "no value" rows (every stored run's) and those rows' totals."""
    from .rollup_sql import FOLD_CELLS

    measures = ", ".join((*_measures(), DEAR_COST, COMPLETE_COST))
    return (
        tags_sql.sqlite_register(f"temp.{FOLD_CELLS}"),
        *tags_sql.backfill_fresh("sqlite", GROUPS, RUNS, _written(), f"{measures}, {', '.join(TIMES)}"),
        sqlite_totals(GROUPS, 1, f"r.report_by IN ({tags_sql.fresh_groups()})")[0],
        tags_sql.unfresh(),
    )


@cache
def sqlite_fold() -> tuple[str, ...]:
    """SQLite: add the fold's cells (:data:`.rollup_sql.FOLD_CELLS`, the pending rows summed) to
    :data:`GROUPS`; before the pending rows are emptied."""
    from .rollup_sql import FOLD_CELLS, PENDING

    return (
        _upsert("sqlite", f"temp.{FOLD_CELLS}", "cell"),
        _emptied(f"{PENDING} AS o WHERE o.sign < 0", "sqlite"),
    )


def pg_register() -> list[str]:
    """PostgreSQL, after :func:`.tags_sql.pg_register` kept new keys in a writing transaction: their "no
    value" rows (every stored run's); the group totals follow by the triggers on :data:`GROUPS`."""
    measures = ", ".join((*_measures(), DEAR_COST, COMPLETE_COST))
    fresh = tags_sql.backfill_fresh("postgresql", GROUPS, RUNS, _written(), f"{measures}, {', '.join(TIMES)}")
    return [*fresh, tags_sql.unfresh()]


def pg_apply(source: str, signed: bool, old: str | None) -> list[str]:
    """PostgreSQL: the trigger statements adding ``source``'s rows (``old``: the replaced rows' table)."""
    kind = "signed" if signed else "row"
    return [
        tags_sql.pg_share_lock(),
        _upsert("postgresql", source, kind),
        *([_emptied(f"{old} AS o", "postgresql")] if old else []),
    ]


def backfill(dialect: str) -> list[str]:
    """Fill :data:`GROUPS` from the ledger (the migration; :func:`totals_ddl` fills the totals after)."""
    return [
        f"DELETE FROM {tags_sql.TAG_KEYS}",
        tags_sql.ledger_register(dialect, TABLE),
        tags_sql.unfresh(),  # (the ledger's rows give every group of the keys, "no value" too)
        f"DELETE FROM {GROUPS}",
        f"INSERT INTO {GROUPS} ({_written()}) SELECT {_selected(dialect, TABLE, 'row')}",
    ]


def tags_backfill(dialect: str) -> list[str]:
    """Keep the first tag keys of the ledger and fill their rows of :data:`GROUPS` and :data:`TOTALS` from
    it (the schema 9 migration of a store that has the other groups: read once more for the tags only).
    PostgreSQL's totals follow by the triggers on :data:`GROUPS` (:func:`totals_ddl` made them first)."""
    tag_rows = f"report_by LIKE '{tags_sql.grouping('')}%'"
    return [
        f"DELETE FROM {tags_sql.TAG_KEYS}",
        tags_sql.ledger_register(dialect, TABLE),
        tags_sql.unfresh(),
        f"DELETE FROM {TOTALS} WHERE {tag_rows}",
        f"DELETE FROM {GROUPS} WHERE {tag_rows}",
        f"INSERT INTO {GROUPS} ({_written()}) SELECT {_selected(dialect, TABLE, 'row', tags_only=True)}",
        *([sqlite_totals(GROUPS, 1, f"r.{tag_rows}")[0]] if dialect == "sqlite" else []),
    ]


# --- the totals, from the rows of GROUPS and RUNS ----------------------------------------------

_TOTAL_COLUMNS: Final = ("runs", "complete_runs", "complete_sum")


def _totals_columns() -> tuple[str, ...]:
    return ("report_by", "k1", "k2", "runs", *_measures(), "complete_runs", "complete_sum")


def _tail(row: str, sign: str) -> list[str]:
    """What a row ``row`` adds to a group of :data:`TOTALS` after its key (``sign`` times): one run, its
    measures, whether its cost is complete, and that cost."""
    measures = [f"{sign} * {row}.{m}" for m in _measures()]
    return [
        sign,
        *measures,
        f"{sign} * (CASE WHEN {row}.{COMPLETE_COST} IS NULL THEN 0 ELSE 1 END)",
        f"{sign} * COALESCE({row}.{COMPLETE_COST}, 0)",
    ]


def _keys_text(row: str, keys: tuple[str, ...]) -> str:
    """A group's key values of row ``row`` in one text (:func:`.tag_runs_sql.part_of`; one key padded)."""
    from .tag_runs_sql import part_of

    return part_of(*(f"{row}.{k}" for k in keys), *((None,) if len(keys) == 1 else ()))


def _contributions(table: str, row: str, sign: str) -> list[list[str]]:
    """Per grouping a row of ``table`` counts in: the values it adds to :data:`TOTALS` (``sign``: ``1`` or
    ``-1``, or a column), in :func:`_totals_columns` order."""
    tail = _tail(row, sign)
    if table == GROUPS:
        return [[f"{row}.report_by", f"{row}.k1", f"{row}.k2", *tail]]
    from .tag_runs_sql import TAG_GROUPS, TAG_RUNS, totals_grouping

    if table == TAG_GROUPS:
        return [
            [totals_grouping(f"{row}.report_by", f"{row}.tag_key"), f"{row}.tag_value", f"{row}.part", *tail]
        ]
    if table == TAG_RUNS:  # (the grouping's keys in one text: k1 holds the tag value)
        return [
            [
                totals_grouping(f"'{g.by}'", f"{row}.tag_key"),
                f"{row}.tag_value",
                _keys_text(row, g.keys),
                *tail,
            ]
            for g in RUN_GROUPINGS
        ]
    return _within_contributions(row, tail) + [
        [f"'{g.by}'", *(f"{row}.{k}" for k in g.keys), *(["NULL"] if len(g.keys) == 1 else []), *tail]
        for g in RUN_GROUPINGS
    ]


WITHIN_USE_CASE: Final = (
    Kept("user", ("user_id",)),
    Kept("experience", ("experience_name", "experience_id")),
    Kept("experience-version", ("experience_name", "experience_version")),
)
"""The run groupings whose totals are kept per use case too (``report_by`` :func:`within_use_case`, the use
case in ``k1``, the group's key values in one text in ``k2``: :func:`.tag_runs_sql.part_of`): a use case's
page lists its users and experiences from a few rows instead of its 25,000 runs (0.3-0.45 s each); its
experience versions likewise (their index, shared by every use case, read 300-550 ms of them at 10M)."""


def within_use_case(by: str) -> str:
    """The ``report_by`` of the totals of grouping ``by`` within a use case."""
    return f"{by}@use-case"


def _within_contributions(row: str, tail: list[str]) -> list[list[str]]:
    return [
        [
            f"'{within_use_case(g.by)}'",
            f"{row}.use_case",
            _keys_text(row, g.keys),
            *tail,
        ]
        for g in WITHIN_USE_CASE
    ]


def within_backfill(dialect: str) -> list[str]:
    """Fill the totals of :data:`WITHIN_USE_CASE` from the per-run table (the schema 10 migration of a store
    that has the other totals)."""
    tail = _tail("r", "1")
    within = ", ".join(f"'{within_use_case(g.by)}'" for g in WITHIN_USE_CASE)
    return [
        f"DELETE FROM {TOTALS} WHERE report_by IN ({within})",
        _apply(dialect, "(" + _union(_within_contributions("r", tail), f" FROM {RUNS} AS r") + ")"),
    ]


def totals_rows_sql(
    dialect: str, report_by: str, k1: str, read: Dearest | None = None
) -> tuple[str, list[Any]]:
    """The rows of :data:`TOTALS` of ``report_by`` and ``k1`` (found through its unique index, by its key
    expressions): ``k2``, runs, calls, the token columns, the unpriced, no-usage and partial counts, the
    cost (when known), the number and sum of the complete run costs; the groups ``read`` asks for (the
    dearest ones; unknown cost last, ties in no particular order)."""
    columns = ", ".join(("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls"))
    params: list[Any] = [report_by, k1]
    sql = (
        f"SELECT k2, runs, {columns}, CASE WHEN cost_calls > 0 THEN cost_usd END, complete_runs, complete_sum "
        f"FROM {TOTALS} WHERE report_by = ? AND {_key('k1', _dialect(dialect).none)} = ?"
    )
    if read is not None and read.floor is not None:
        sql += " AND cost_calls > 0 AND cost_usd >= ?"
        params.append(read.floor)
    if read is None or read.rows is None:
        return sql, params
    order = _UNKNOWN_LAST.format(known="cost_calls > 0", cost="cost_usd")
    return f"{sql} ORDER BY {order} LIMIT ?", [*params, int(read.rows)]


def _apply(dialect: str, rows: str) -> str:
    """Add the contributions of ``rows`` (a derived table with :func:`_totals_columns`) to :data:`TOTALS`,
    per group, in key order (PostgreSQL: concurrent writers queue instead of deadlocking)."""
    d = _dialect(dialect)
    t = "t" if dialect == "postgresql" else TOTALS
    alias = " AS t" if dialect == "postgresql" else ""
    sums = ", ".join(f"SUM(x.{c})" for c in _totals_columns()[3:])
    k1, k2 = _key("x.k1", d.none), _key("x.k2", d.none)
    order = f" ORDER BY x.report_by, {k1}, {k2}" if dialect == "postgresql" else ""
    added = ", ".join(f"{c} = {t}.{c} + excluded.{c}" for c in _totals_columns()[3:])
    return (
        f"INSERT INTO {TOTALS}{alias} ({', '.join(_totals_columns())}) "
        f"SELECT x.report_by, x.k1, x.k2, {sums} FROM {rows} AS x WHERE true GROUP BY x.report_by, x.k1, x.k2"
        f"{order} ON CONFLICT (report_by, {_key('k1', d.none)}, {_key('k2', d.none)}) DO UPDATE SET {added}"
    )


def _union(selects: Sequence[list[str]], source: str) -> str:
    names = _totals_columns()
    return " UNION ALL ".join(
        "SELECT " + ", ".join(f"{v} AS {n}" for v, n in zip(values, names)) + source for values in selects
    )


def drop_empty() -> str:
    """Remove the groups left without runs (through the partial index on them: a few rows at most)."""
    return f"DELETE FROM {TOTALS} WHERE runs <= 0"


def sqlite_totals(table: str, sign: int, where: str, params: Sequence[Any] = ()) -> tuple[str, list[Any]]:
    """SQLite: add (``sign`` 1) or take out (-1) the contributions of the rows ``r`` of ``table``
    (:data:`GROUPS` or :data:`.runs_sql.RUNS`) that meet ``where`` to :data:`TOTALS`, one upsert per group.

    The fold takes out the rows of the runs it is about to change, changes them, and adds them back: a
    few hundred groups per fold instead of a row trigger per changed row (which doubled the cost of a
    write); a forget does the same around the rows it renames outside the fold."""
    return change_totals("sqlite", table, sign, where, params)


def change_totals(
    dialect: str, table: str, sign: int, where: str, params: Sequence[Any] = ()
) -> tuple[str, list[Any]]:
    """:func:`sqlite_totals` in ``dialect``: PostgreSQL keeps the totals of :data:`GROUPS` and
    :data:`.runs_sql.RUNS` by triggers, but those of :data:`.tag_runs_sql.TAG_GROUPS` by these statements."""
    selects = _contributions(table, "r", str(sign))
    sql = _apply(dialect, "(" + _union(selects, f" FROM {table} AS r WHERE {where}") + ")")
    return sql, list(params) * len(selects)


def tag_totals_delta(dialect: str, changes: Sequence[tuple[str, str, int, str]]) -> str:
    """Apply ``changes`` to :data:`TOTALS` in one statement: for each (table, source, sign, where), add
    (sign 1) or take out (-1) the contributions of the rows ``r`` of ``source`` (that table, or a derived
    table with its columns) meeting ``where``. Its rows are locked once, in key order, so PostgreSQL writers
    of the same groups queue instead of deadlocking (:mod:`.tag_runs_sql`, whose tables no trigger keeps)."""
    selects = [
        _union(_contributions(table, "r", str(sign)), f" FROM {source} AS r WHERE {where}")
        for table, source, sign, where in changes
    ]
    return _apply(dialect, "(" + " UNION ALL ".join(selects) + ")")


def _sqlite_touched(sign: int) -> list[str]:
    from .rollup_sql import FOLD_RUNS

    runs = f"(r.use_case, r.run_id) IN (SELECT o.use_case, o.run_id FROM temp.{FOLD_RUNS} AS o)"
    return [sqlite_totals(RUNS, sign, runs)[0], sqlite_totals(GROUPS, sign, runs)[0]]


def sqlite_before() -> list[str]:
    """SQLite, before the fold changes :data:`.runs_sql.RUNS` and :data:`GROUPS`: take the rows of the
    runs the pending rows touch out of :data:`TOTALS` (:func:`sqlite_after` adds them back)."""
    return _sqlite_touched(-1)


def sqlite_after() -> list[str]:
    """SQLite, after the fold: add the touched runs' rows back, remove the groups left without runs."""
    return [*_sqlite_touched(1), drop_empty()]


def _pg_triggers(table: str) -> list[str]:
    """PostgreSQL: statement triggers on ``table`` with transition tables, applying each statement's new
    rows minus its old ones to :data:`TOTALS` (a forget's renames too)."""
    name = f"{table}_totals"

    def rows(*parts: tuple[str, str]) -> str:
        selects = [values for source, sign in parts for values in _contributions(table, "r", sign)]
        sources = [source for source, _ in parts for _ in _contributions(table, "r", "1")]
        names = _totals_columns()
        return (
            "("
            + " UNION ALL ".join(
                "SELECT " + ", ".join(f"{v} AS {n}" for v, n in zip(values, names)) + f" FROM {source} AS r"
                for values, source in zip(selects, sources)
            )
            + ")"
        )

    bodies = {
        "insert": ("REFERENCING NEW TABLE AS new_rows", [_apply("postgresql", rows(("new_rows", "1")))]),
        "update": (
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
            [_apply("postgresql", rows(("new_rows", "1"), ("old_rows", "-1"))), drop_empty()],
        ),
        "delete": (
            "REFERENCING OLD TABLE AS old_rows",
            [_apply("postgresql", rows(("old_rows", "-1"))), drop_empty()],
        ),
    }
    statements: list[str] = []
    for event, (referencing, body) in bodies.items():
        function = f"{name}_{event}"
        text = ";\n  ".join(body)
        statements += [
            (
                f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$\n"
                f"BEGIN\n  {text};\n  RETURN NULL;\nEND\n$$"
            ),
            f"DROP TRIGGER IF EXISTS {function} ON {table}",
            (
                f"CREATE TRIGGER {function} AFTER {event.upper()} ON {table} {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            ),
        ]
    return statements


def totals_ddl(dialect: str, *, backfill: bool) -> list[str]:
    """PostgreSQL: the triggers keeping :data:`TOTALS` from :data:`GROUPS` and :data:`.runs_sql.RUNS`
    (SQLite keeps it in the fold: :func:`sqlite_before`, :func:`sqlite_after`); then (``backfill``, the
    migration, after both are filled) the statements filling it from them."""
    triggers = [s for table in (RUNS, GROUPS) for s in _pg_triggers(table)] if dialect == "postgresql" else []
    if not backfill:
        return triggers
    selects = " UNION ALL ".join(
        _union(_contributions(table, table, "1"), f" FROM {table}") for table in (RUNS, GROUPS)
    )
    return [f"DELETE FROM {TOTALS}", _apply(dialect, f"({selects})"), *triggers]


# --- queries ------------------------------------------------------------------------------------


def _group_conditions(values: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """The conditions selecting the group whose key values are ``values`` (``k1``, then ``k2`` if any: a
    grouping of one key has no ``k2``)."""
    return group_conditions(("k1", "k2"), (*values, None)[:2])


TOTALS_FIELDS: Final = (
    "runs",
    "cost_usd",
    "complete_runs",
    "complete_sum",
    "calls",
    *TOKEN_COLUMNS,
    "unpriced_calls",
    "no_usage_calls",
    "partial_calls",
)
"""What :func:`totals_sql` and :func:`groups_sql` return per group, after ``k1, k2``."""

_UNKNOWN_LAST: Final = "CASE WHEN {known} THEN 0 ELSE 1 END, {cost} DESC"


def totals_sql(
    by: str, read: Dearest, use_case: str | None = None, use_cases: Sequence[str] | None = None
) -> tuple[str, list[Any]]:
    """The groups of grouping ``by`` with their :data:`TOTALS_FIELDS`, from :data:`TOTALS`, as ``read``
    says (unknown cost last; ties in no particular order). ``use_case``, ``use_cases``: only the groups of
    those use cases, for a grouping whose first key is the use case (``k1``)."""
    cost = "CASE WHEN cost_calls > 0 THEN cost_usd END"
    fields = [f if f != "cost_usd" else cost for f in TOTALS_FIELDS]
    clauses, params = use_case_clauses(use_case, use_cases, "k1")
    if read.floor is not None:
        clauses.append("cost_calls > 0 AND cost_usd >= ?")
        params.append(read.floor)
    where = " AND ".join(["report_by = ?", *clauses])
    sql = f"SELECT k1, k2, {', '.join(fields)} FROM {TOTALS} WHERE {where}"
    if read.rows is None:
        return sql, [by, *params]
    order = _UNKNOWN_LAST.format(known="cost_calls > 0", cost="cost_usd")
    return f"{sql} ORDER BY {order} LIMIT ?", [by, *params, int(read.rows)]


def window_groups_sql(
    by: str, use_case: str | None, use_cases: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """The groups of call-level grouping ``by`` (``k1, k2``) a window of :func:`window_parts_sql` reads:
    every group with runs (the totals' rows), those of the use cases asked for when the grouping's first
    key is the use case (steps)."""
    grouping = _grouping(by)
    scope, params = (
        use_case_clauses(use_case, use_cases, "k1") if grouping.keys[0] == "use_case" else ([], [])
    )
    where = "".join(f" AND {c}" for c in scope)
    return f"SELECT k1, k2 FROM {TOTALS} WHERE report_by = ?{where} ORDER BY k1, k2", [by, *params]


def groups_sql(
    by: str, read: Dearest, use_case: str | None, use_cases: Sequence[str] | None, token_sum: str
) -> tuple[str, list[Any]]:
    """:func:`totals_sql` from :data:`GROUPS`, within a use case (or a set of them): the groups of a
    call-level grouping ``by`` read from the index on (grouping, use case)."""
    clauses, params = use_case_clauses(use_case, use_cases)
    cost = f"SUM({DEAR_COST})"
    sums = {
        "runs": "COUNT(*)",
        "cost_usd": cost,
        "complete_runs": f"COUNT({COMPLETE_COST})",
        "complete_sum": f"SUM({COMPLETE_COST})",
    }
    fields = [sums.get(f) or token_sum.format(f) for f in TOTALS_FIELDS]
    where = " AND ".join(["report_by = ?", *clauses])
    sql = f"SELECT k1, k2, {', '.join(fields)} FROM {GROUPS} WHERE {where} GROUP BY k1, k2"
    if read.floor is not None:
        sql += f" HAVING {cost} >= ?"
        params.append(read.floor)
    if read.rows is None:
        return sql, [by, *params]
    order = _UNKNOWN_LAST.format(known=f"{cost} IS NOT NULL", cost=cost)
    return f"{sql} ORDER BY {order} LIMIT ?", [by, *params, int(read.rows)]


def ranked_sql(
    by: str, values: Sequence[Any], how: Walk, use_case: str | None, use_cases: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """The complete run costs ``how`` reads (:func:`.runs_sql.walk`) in the group ``values`` of ``by``: a
    walk of the index on the complete cost within the group (within a use case: its own index)."""
    scope, scope_params = use_case_clauses(use_case, use_cases)
    group, group_params = _group_conditions(values)
    where = " AND ".join(["report_by = ?", *scope, *group, f"{COMPLETE_COST} IS NOT NULL"])
    # the constant columns first: the planner then walks the group's part of the index (within a use case,
    # it reads the use case's part of the index of parts and sorts the group's costs)
    prefix = ("report_by", "use_case", "k1", "k2") if use_case is not None else ("report_by", "k1", "k2")
    sql = f"SELECT {COMPLETE_COST} FROM {GROUPS} WHERE {where}{order_by((*prefix, COMPLETE_COST), how)}"
    return sql, [by, *scope_params, *group_params]


def summary_sql(token_sum: str, tag: tuple[str, str] | None = None) -> tuple[str, list[Any]]:
    """The totals of every call, from the use cases' rows of :data:`TOTALS` (``tag``: of the calls whose
    kept tag key is the value, from that group's row): calls, the token columns, cost, the unpriced,
    no-usage, partial and error counts, runs (the order of :func:`.rollup_sql.summary_sql`)."""
    sums = ", ".join(
        [
            token_sum.format("calls"),
            *(token_sum.format(t) for t in TOKEN_COLUMNS),
            "CASE WHEN SUM(cost_calls) > 0 THEN SUM(cost_usd) END",
            *(
                token_sum.format(c)
                for c in ("unpriced_calls", "no_usage_calls", "partial_calls", "error_calls")
            ),
            token_sum.format("runs"),
        ]
    )
    if tag is None:
        return f"SELECT {sums} FROM {TOTALS} WHERE report_by = 'use-case'", []
    key, value = tag
    return f"SELECT {sums} FROM {TOTALS} WHERE report_by = ? AND k1 = ? AND k2 IS NULL", [
        tags_sql.grouping(key),
        value,
    ]


def run_parts_sql(by: str, runs_source: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """The rows of the runs selected by ``runs_source`` (a table of per-run rows and its ``WHERE`` clause,
    :func:`.runs_sql.source`, with its ``params``) in grouping ``by``: ``k1, k2``, then
    :data:`~.base.RUN_TOTALS` (the run's cost when known). A filter on a run's user, experience, version or
    tags finds its runs through the per-run table's indexes, then their rows here through (use case, run
    id)."""
    totals = ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls", DEAR_COST)
    sql = (
        f"SELECT k1, k2, {', '.join(totals)} FROM {GROUPS} WHERE report_by = ? AND (use_case, run_id) IN "
        f"(SELECT use_case, run_id FROM {runs_source})"
    )
    return sql, [by, *params]


class WindowSQL(NamedTuple):
    """The queries of a call-level grouping over a time window (:func:`window_sql`)."""

    runs: tuple[str, list[Any]]
    """One row per (run, group) of the runs whose every call is in the window: ``k1, k2``, its cost (None
    when unknown), its complete cost (None when not complete)."""
    sums: Callable[[Sequence[tuple[Any, ...]] | None], tuple[str, list[Any]]] | None
    """(``with_sums``) the query of the sums of the given groups ((``k1``, ``k2``) each; None: every group)
    over those runs: ``k1, k2``, calls, the token columns, the unpriced, no-usage and partial counts."""


def window_sql(
    dialect: str,
    by: str,
    since: int | None,
    until: int | None,
    use_case: str | None,
    use_cases: Sequence[str] | None,
    token_sum: str,
    with_sums: bool = True,
) -> WindowSQL:
    """A window's runs of grouping ``by``, found through the per-run table's index on the last call: what a
    run wholly inside ``[since, until)`` costs in the window is what it costs, so its per-(run, group) rows
    (a call-level grouping) or its per-run row (a grouping of whole runs) answer; only the runs crossing an
    end need the ledger (:func:`crossing_sql`). (A store with the per-(run, group) rows' times reads those
    of a call-level grouping by group instead: :func:`window_parts_sql`.)"""
    grouping = _grouping(by)
    counts = ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls")
    inside, inside_params = _runs_inside(dialect, since, until, use_case, use_cases)
    window = " AND ".join(inside)
    if grouping in RUN_GROUPINGS:
        k1, k2 = (*_run_keys(by), "NULL")[:2]
        source, params, row = f"FROM {RUNS} AS r WHERE {window}", inside_params, "r"
    else:
        k1, k2, row = "g.k1", "g.k2", "g"
        # (CROSS JOIN: SQLite then reads the runs first, through their index on the last call, as written)
        source = (
            f"FROM {RUNS} AS r CROSS JOIN {GROUPS} AS g WHERE g.use_case = r.use_case AND g.run_id = r.run_id "
            f"AND g.report_by = ? AND {window}"
        )
        params = [by, *inside_params]
    sums = ", ".join(token_sum.format(f"{row}.{c}") for c in counts)
    group_by = ", ".join(k for k in (k1, k2) if k != "NULL")

    columns = tuple(k for k in (k1, k2) if k != "NULL")

    def sums_of(groups: Sequence[tuple[Any, ...]] | None) -> tuple[str, list[Any]]:
        values: list[Any] = []
        condition = "" if groups is None else f" AND {_chosen(dialect, columns, groups, values)}"
        sql = f"SELECT {k1}, {k2}, {sums} {source}{condition} GROUP BY {group_by}"
        return sql, [*params, *values]

    return WindowSQL(
        (f"SELECT {k1}, {k2}, {row}.{DEAR_COST}, {row}.{COMPLETE_COST} {source}", params),
        sums_of if with_sums else None,
    )


def _runs_inside(
    dialect: str, since: int | None, until: int | None, use_case: str | None, use_cases: Sequence[str] | None
) -> tuple[list[str], list[Any]]:
    """The conditions (and their parameters) keeping the per-run rows ``r`` of the runs wholly inside
    ``[since, until)`` of ``use_case`` or ``use_cases``: one range of the per-run table's window index."""
    low, high = window_bounds(ReportFilter(since_ns=since, until_ns=until))
    scope, params = window_scope(dialect, use_case, use_cases, "r.")
    return ["r.last_ns >= ?", "r.first_ns >= ?", "r.last_ns < ?", *scope], [low, low, high, *params]


def _run_keys(by: str) -> tuple[str, ...]:
    """The per-run rows' ``r`` columns of run grouping ``by``'s key."""
    grouping = kept(by)
    assert grouping is not None and grouping in RUN_GROUPINGS
    return tuple(f"r.{k}" for k in grouping.keys)


def _chosen(
    dialect: str, columns: Sequence[str], groups: Sequence[tuple[Any, ...]], params: list[Any]
) -> str:
    """The condition a window's read keeps the rows of ``groups`` with (values of ``columns``; parameters
    appended to ``params``): one ``IN`` over expressions of the columns (NULL as :data:`~.runs_sql.NULL_KEY`). An
    expression, so that SQLite keeps to the window's index range and probes the list once per row: with an
    ``OR`` of equalities it read every run of those groups through their own index, table rows and all
    (141 ms for two use cases at 10M calls), and with an ``OR`` over expressions it compared each row with
    every group (72 ms for ten users). PostgreSQL, whose planner has statistics, gets the plain ``OR`` (ten
    experiences' sums through their index: 86 ms to a few as an expression)."""
    width = len(columns)
    if dialect == "postgresql":
        return any_group(tuple(columns), [tuple(g[:width]) for g in groups], params) if groups else "1 = 0"
    keys = ", ".join(f"COALESCE({c}, char(1))" for c in columns)
    rows = []
    for group in groups:
        rows.append("(" + ", ".join("?" for _ in range(width)) + ")")
        params.extend(NULL_KEY if v is None else v for v in group[:width])
    if not rows:
        return "1 = 0"
    if width == 1:
        return f"{keys} IN ({', '.join(r[1:-1] for r in rows)})"
    return f"({keys}) IN (VALUES {', '.join(rows)})"


def window_run_groups_sql(
    dialect: str,
    by: str,
    read: Dearest,
    since: int | None,
    until: int | None,
    use_case: str | None,
    use_cases: Sequence[str] | None,
    groups: Sequence[tuple[Any, ...]] | None = None,
) -> tuple[str, list[Any]]:
    """Run grouping ``by`` over a time window, summed in the database: per group of the runs wholly inside
    (the per-run table's index on the last call): ``k1, k2``, its runs, their cost (None when none is
    known), as ``read`` says, or of ``groups`` alone. A row per group instead of a row per run (39,000 for a
    week of 10M calls) read into Python. The dearest first, unknown cost last, ties by the key values as
    :func:`~otel_usecase.report.queries.order_key` orders them (NULL as ``''``, then code points: UTF-8 in
    binary order, PostgreSQL's ``C`` collation): the first ``read.rows`` are the report's."""
    clauses, params = _runs_inside(dialect, since, until, use_case, use_cases)
    columns = _run_keys(by)
    if groups is not None:
        clauses.append(_chosen(dialect, columns, groups, params))
    k1, k2 = (*columns, "NULL")[:2]
    cost = f"SUM(r.{DEAR_COST})"
    sql = (
        f"SELECT {k1}, {k2}, COUNT(*), {cost} FROM {RUNS} AS r WHERE {' AND '.join(clauses)} "
        f"GROUP BY {', '.join(columns)}"
    )
    assert read.floor is None, "ties are ordered here"
    if read.rows is None:
        return sql, params
    order = _UNKNOWN_LAST.format(known=f"{cost} IS NOT NULL", cost=cost)
    collate = ' COLLATE "C"' if dialect == "postgresql" else " COLLATE BINARY"
    ties = ", ".join(f"COALESCE({c}, ''){collate}" for c in columns)
    return f"{sql} ORDER BY {order}, {ties} LIMIT ?", [*params, int(read.rows)]


def window_run_costs_sql(
    dialect: str,
    by: str,
    since: int | None,
    until: int | None,
    use_case: str | None,
    use_cases: Sequence[str] | None,
    groups: Sequence[tuple[Any, ...]] | None,
) -> tuple[str, list[Any]]:
    """The complete costs of the runs wholly inside a time window of ``groups`` (None: every group) of run
    grouping ``by``: ``k1, k2``, cost (for their p50 and p95)."""
    clauses, params = _runs_inside(dialect, since, until, use_case, use_cases)
    columns = _run_keys(by)
    if groups is not None:
        clauses.append(_chosen(dialect, columns, groups, params))
    k1, k2 = (*columns, "NULL")[:2]
    where = " AND ".join(clauses)
    return (
        f"SELECT {k1}, {k2}, r.{COMPLETE_COST} FROM {RUNS} AS r WHERE {where} AND r.{COMPLETE_COST} IS NOT NULL",
        params,
    )


class WindowParts(NamedTuple):
    """The queries of a call-level grouping over a time window, group by group (:func:`window_parts_sql`).
    Each row starts with the group's position in the groups asked for."""

    totals: tuple[str, list[Any]]
    """Per group, from one range of the index: a row of its parts inside (position, NULL, NULL, their
    number, their cost: None when none is known), and a row per part whose times cross an end (position,
    use case, run id, 1, cost): their calls in the window are read from the ledger
    (:func:`window_ledger_sql`)."""
    costs: Callable[[Sequence[int]], tuple[str, list[Any]]]
    """The complete costs of the parts inside of the groups at the given positions: position, cost."""
    sums: Callable[[Sequence[int]], tuple[str, list[Any]]]
    """The sums of the parts inside of the groups at the given positions: position, calls, the token
    columns, the unpriced, no-usage and partial counts (where the hour rollup cannot give a group's: a
    kept tag, a window starting or ending mid-hour)."""
    ranked: Callable[[Mapping[int, Sequence[float]]], tuple[str, list[Any]]] | None
    """PostgreSQL: for the groups at the given positions, those costs and the given ones (the complete
    costs of the group's parts crossing an end, from the ledger) together: position, their number, sum, p50
    and p95 (``percentile_cont``: the arithmetic of :func:`~.totals.percentile`); sorted in the database
    instead of 150,000 costs read for a week's models of 10M calls. None in SQLite (no such function)."""


_MAX_PARAMETERS: Final = 999
"""The fewest parameters a statement may have: SQLite's limit before 3.32 (later 32,766)."""


def parts_per_query(use_cases: Sequence[str] | None) -> int:
    """Groups per statement of :func:`window_parts_sql`: each names its group, the window's bounds and the
    use cases asked for in each of its (at most two) passes, within :data:`_MAX_PARAMETERS`."""
    return max(1, _MAX_PARAMETERS // (16 + 2 * len(use_cases or ())))


def window_parts_sql(
    dialect: str,
    by: str,
    groups: Sequence[tuple[Any, Any]],
    since: int | None,
    until: int | None,
    use_case: str | None,
    use_cases: Sequence[str] | None,
    token_sum: str = "SUM({})",
) -> WindowParts:
    """A window's per-(run, group) rows of call-level grouping ``by`` and ``groups`` (``k1, k2`` each; at
    most :func:`parts_per_query`), each group one range of the window index (:func:`window_index`) by the
    times of its parts (:data:`TIMES`): those inside count whole; those crossing an end are few. One
    statement per question, the groups' ranges joined by ``UNION ALL``: no sort, no lookup per run, and only
    a row per group (the costs of the groups shown aside). Where the runs of a week were looked up one by
    one and their 155,000 rows (10M calls) read into Python: 0.5 s."""
    assert len(groups) <= parts_per_query(use_cases)
    low, high = window_bounds(ReportFilter(since_ns=since, until_ns=until))
    scope, scope_params = window_scope(dialect, use_case, use_cases)
    scoped = "".join(f" AND {c}" for c in scope)
    inside = "last_ns >= ? AND last_ns < ? AND first_ns >= ?"

    def union(
        positions: Sequence[int],
        selected: str,
        condition: str,
        bounds: list[Any],
        selected_bounds: Sequence[Any] = (),
        tail: str = "",
    ) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for i in positions:
            keys, values = group_conditions(("k1", "k2"), tuple(groups[i]))
            parts.append(
                f"SELECT {int(i)} AS i, {selected} FROM {GROUPS} WHERE report_by = ? AND "
                f"{' AND '.join(keys)} AND {condition}{scoped}{tail}"
            )
            params += [*selected_bounds, by, *values, *bounds, *scope_params]
        return " UNION ALL ".join(parts) or f"SELECT 0 AS i, {selected} FROM {GROUPS} WHERE 1 = 0", params

    everyone = range(len(groups))
    if dialect == "postgresql":  # the parts whose times meet the window in one pass (hashed by part kind)
        whole = "first_ns >= ? AND last_ns < ?"
        selected = (
            f"CASE WHEN {whole} THEN NULL ELSE use_case END AS u, "
            f"CASE WHEN {whole} THEN NULL ELSE run_id END AS r, COUNT(*), SUM({DEAR_COST})"
        )
        totals = union(
            everyone,
            selected,
            "last_ns >= ? AND first_ns < ?",
            [low, high],
            [low, high, low, high],
            " GROUP BY 2, 3",
        )
    else:  # two passes of the range: SQLite would sort for the grouping (3x the time of a pass)
        crosses = "last_ns >= ? AND first_ns < ? AND NOT (first_ns >= ? AND last_ns < ?)"
        summed, summed_params = union(
            everyone, f"NULL, NULL, COUNT(*), SUM({DEAR_COST})", inside, [low, high, low]
        )
        each, each_params = union(
            everyone, f"use_case, run_id, 1, {DEAR_COST}", crosses, [low, high, low, high]
        )
        totals = f"{summed} UNION ALL {each}", [*summed_params, *each_params]

    complete = f"{inside} AND {COMPLETE_COST} IS NOT NULL"

    def costs(positions: Sequence[int]) -> tuple[str, list[Any]]:
        return union(positions, COMPLETE_COST, complete, [low, high, low])

    def sums(positions: Sequence[int]) -> tuple[str, list[Any]]:
        counts = ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls")
        return union(positions, ", ".join(token_sum.format(c) for c in counts), inside, [low, high, low])

    def ranked(extra: Mapping[int, Sequence[float]]) -> tuple[str, list[Any]]:
        order = "WITHIN GROUP (ORDER BY x.cost)"
        selected = f"COUNT(*), SUM(x.cost), percentile_cont(0.5) {order}, percentile_cont(0.95) {order}"
        parts: list[str] = []
        params: list[Any] = []
        for i, more in extra.items():
            keys, values = group_conditions(("k1", "k2"), tuple(groups[i]))
            parts.append(
                f"SELECT {int(i)} AS i, {selected} FROM (SELECT {COMPLETE_COST} AS cost FROM {GROUPS} "
                f"WHERE report_by = ? AND {' AND '.join(keys)} AND {complete}{scoped} "
                "UNION ALL SELECT unnest(CAST(? AS double precision[]))) AS x"
            )
            params += [by, *values, low, high, low, *scope_params, [float(c) for c in more]]
        return " UNION ALL ".join(parts), params

    return WindowParts(totals, costs, sums, ranked if dialect == "postgresql" else None)


def crossing_sql(
    dialect: str,
    since: int | None,
    until: int | None,
    use_case: str | None,
    use_cases: Sequence[str] | None,
    table: str = RUNS,
    among: tuple[str, Sequence[Any]] = ("", ()),
) -> tuple[str, list[Any]]:
    """The (use case, run id) of the runs of ``use_case`` or ``use_cases`` with calls on both sides of an end
    of ``[since, until)``, from the per-run table's window index (or ``table``, copies of its rows ``r``,
    those ``among``'s condition and parameters keep: a kept tag value's): a few, whose calls in the window
    only the ledger knows (:func:`window_ledger_sql`)."""
    low, high = window_bounds(ReportFilter(since_ns=since, until_ns=until))
    scope, scope_params = window_scope(dialect, use_case, use_cases, "r.")
    scoped = "".join(f" AND {c}" for c in scope)
    condition, params = among
    crossing = (
        f"SELECT r.use_case, r.run_id FROM {table} AS r WHERE {condition + ' AND ' if condition else ''}"
        f"r.last_ns >= ? AND r.first_ns < ? AND NOT (r.first_ns >= ? AND r.last_ns < ?){scoped}"
    )
    return crossing, [*params, low, high, low, high, *scope_params]


def window_ledger_sql(
    dialect: str,
    by: str,
    measures: Sequence[str],
    clause: str,
    params: Sequence[Any],
    runs: Sequence[tuple[str, str]],
) -> tuple[str, list[Any]]:
    """The calls of ``runs`` that the ledger ``clause`` (its window and filters) keeps, per (run, group) of
    ``by`` (a kept tag's too): use case, run id, ``k1, k2``, then ``measures`` (:data:`~.base.RUN_TOTALS`,
    as the ledger sums them)."""
    k1, k2 = _ledger_keys(dialect, _grouping(by))
    pairs = " OR ".join("(run_id = ? AND use_case = ?)" for _ in runs)
    where = f"{clause} AND ({pairs})" if clause else f" WHERE ({pairs})"
    sql = (
        f"SELECT use_case, run_id, {k1}, {k2}, {', '.join(measures)} FROM {TABLE}{where} "
        f"GROUP BY use_case, run_id, 3{'' if k2 == 'NULL' else ', 4'}"
    )
    return sql, [*params, *(v for use_case, run_id in runs for v in (run_id, use_case))]
