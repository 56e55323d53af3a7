"""The SQL of ``forget`` and ``prune``: which columns of which tables hold ids, and how each one changes.

:data:`ID_COLUMNS` is the one list of the (table, column) pairs that hold a user,
experience or run id. A table added later that holds one (a rollup keyed by run,
say) is one more row there, saying how its rows change:

* :data:`LEDGER` rows are updated in place; the rollup triggers then move their
  figures between cells, in the same transaction, exactly as for a replaced call.
* :class:`Cells` tables are the ones the triggers keep. After the ledger update
  what is left holding the id there has no ledger row behind it any more (calls
  pruned by the retention window, :mod:`otel_usecase.retention`): such a row is
  renamed, or added into the row of the tombstone that has the same key.
* :data:`PLAIN` columns hold the id as their whole value; :data:`JSON` columns
  hold it as a string inside a JSON document (a budget's selector, an alert's
  payload, an audit event's detail), replaced where it appears as a JSON string.

A forget is one transaction: PostgreSQL takes a ``SHARE ROW EXCLUSIVE`` lock on
the ledger first (writers queue, readers do not), SQLite's ``BEGIN IMMEDIATE``
is the same, so no call is written between the ledger update and the fix-ups of
the tables the triggers keep, and the rollups equal the ledger at the commit.
Prune deletes ledger and outcome rows only, in short transactions (the rollups
have no delete trigger: they keep the aggregates).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from . import groups_sql, outcome_runs_sql
from .alert_sql import ALERTS_TABLE
from .audit_sql import AUDIT_TABLE
from .base import META_TABLE, TABLE, Store, Transaction
from .budget_sql import BUDGETS_TABLE
from .groups_sql import GROUPS
from .outcome_runs_sql import OUTCOME_RUNS
from .outcome_sql import OUTCOMES_TABLE
from .rollup_sql import HOUR_ROLLUP, MEASURES, PENDING, RUN_ROLLUP, _run_keys, sqlite_fold
from .runs_sql import COMPLETE_COST, DEAR_COST, RUNS, _derived
from .tag_runs_sql import TAG_GROUPS, TAG_RUNS

__all__ = [
    "EXPERIENCE",
    "ID_COLUMNS",
    "JSON",
    "KINDS",
    "LEDGER",
    "PLAIN",
    "RUN",
    "USER",
    "Cells",
    "Erased",
    "IdColumn",
    "Totals",
    "claim_sql",
    "forget",
    "prune_batches",
    "totals",
    "write",
]

_T = TypeVar("_T")

USER: Final = "user"
EXPERIENCE: Final = "experience"
RUN: Final = "run"
KINDS: Final = (USER, EXPERIENCE, RUN)
ANY_ID: Final = frozenset(KINDS)


LEDGER: Final = "ledger"
PLAIN: Final = "plain"
JSON: Final = "json"


class Cells(NamedTuple):
    """How the rows of a table the rollup triggers keep add up, for rows that become one when an id is
    replaced: ``key`` (the columns that make a row; the id column is one of them or a plain attribute),
    the columns added (``sums``), kept lowest (``least``) or highest (``greatest``), ``derived`` columns
    recomputed from the others, and a ``flag`` set when the merged rows differ on ``dims``."""

    key: tuple[str, ...]
    sums: tuple[str, ...]
    least: tuple[str, ...] = ()
    greatest: tuple[str, ...] = ()
    derived: tuple[tuple[str, str], ...] = ()
    flag: str | None = None
    dims: tuple[str, ...] = ()
    nullable: tuple[str, ...] = ()
    """The text columns of ``key`` that may be NULL: compared through a sentinel, as the tables' unique
    indexes do, so that the database can hash-join on them (``IS NOT DISTINCT FROM`` cannot be hashed)."""
    ledger_key: tuple[str, ...] | None = None
    """The columns of ``key`` that find a row's calls in the ledger (None: all of them)."""


class IdColumn(NamedTuple):
    """One column holding ids: ``kinds`` of ids (:data:`USER`, :data:`EXPERIENCE`, :data:`RUN`) and how a
    forgotten one is replaced (:data:`LEDGER`, :class:`Cells`, :data:`PLAIN`, :data:`JSON`)."""

    table: str
    column: str
    kinds: frozenset[str]
    how: str | Cells


_DIMS: Final = _run_keys()
RUN_CELLS: Final = Cells(
    key=("use_case", "run_id", "hour_ns", *_DIMS),
    sums=MEASURES,
    least=("first_ns",),
    greatest=("last_ns", "end_ns"),
    nullable=_DIMS,
)
"""The run rollup's cells (:data:`.rollup_sql.RUN_ROLLUP`)."""
RUN_ROWS: Final = Cells(
    key=("use_case", "run_id"),
    sums=MEASURES,
    least=("first_ns",),
    greatest=("last_ns", "end_ns", "mixed"),
    derived=tuple(zip((DEAR_COST, COMPLETE_COST), _derived(lambda m: m))),
    flag="mixed",
    dims=_DIMS,
)
"""The per-run table's rows (:data:`.runs_sql.RUNS`): one per run, its user, experience, version and tags
attributes (``mixed`` when its calls disagree on them)."""
TAG_RUN_ROWS: Final = RUN_ROWS._replace(
    key=("tag_key", "tag_value", "use_case", "run_id"), ledger_key=("use_case", "run_id")
)
"""The per-run rows of each kept tag value (:data:`.tag_runs_sql.TAG_RUNS`): copies of the per-run table's,
renamed alike."""
OUTCOME_RUN_ROWS: Final = RUN_ROWS._replace(
    key=("name", "use_case", "run_id"),
    sums=(*MEASURES, "outcomes", "outcome_value"),
    ledger_key=("use_case", "run_id"),
)
"""The per-run rows of each outcome's runs (:data:`.outcome_runs_sql.OUTCOME_RUNS`): renamed alike, then
copied again from the per-run table and the outcomes once every id is replaced (:func:`forget`)."""
GROUP_ROWS: Final = Cells(
    key=("report_by", "k1", "k2", "use_case", "run_id"),
    sums=MEASURES,
    least=("first_ns",),
    greatest=("last_ns",),
    derived=tuple(zip((DEAR_COST, COMPLETE_COST), _derived(lambda m: m))),
    nullable=("k1", "k2"),
)
"""The per-(run, group) rows (:data:`.groups_sql.GROUPS`). The group totals (:data:`.groups_sql.TOTALS`)
hold user and experience ids as group keys; the triggers on the per-run table move them with its rows and
remove a group left without runs, so they need no row here."""
TAG_GROUP_ROWS: Final = GROUP_ROWS._replace(
    key=("tag_key", "tag_value", "report_by", "part", "use_case", "run_id"),
    least=(),
    greatest=(),
    nullable=(),
)
"""The per-(run, group) rows of each kept tag value (:data:`.tag_runs_sql.TAG_GROUPS`): copies of the
call-level ones (but their times), renamed alike."""

ID_COLUMNS: Final[tuple[IdColumn, ...]] = (
    IdColumn(TABLE, "user_id", frozenset((USER,)), LEDGER),
    IdColumn(TABLE, "experience_id", frozenset((EXPERIENCE,)), LEDGER),
    IdColumn(TABLE, "run_id", frozenset((RUN,)), LEDGER),
    IdColumn(RUN_ROLLUP, "user_id", frozenset((USER,)), RUN_CELLS),
    IdColumn(RUN_ROLLUP, "experience_id", frozenset((EXPERIENCE,)), RUN_CELLS),
    IdColumn(RUN_ROLLUP, "run_id", frozenset((RUN,)), RUN_CELLS),
    IdColumn(RUNS, "user_id", frozenset((USER,)), RUN_ROWS),
    IdColumn(RUNS, "experience_id", frozenset((EXPERIENCE,)), RUN_ROWS),
    IdColumn(RUNS, "run_id", frozenset((RUN,)), RUN_ROWS),
    IdColumn(TAG_RUNS, "user_id", frozenset((USER,)), TAG_RUN_ROWS),
    IdColumn(TAG_RUNS, "experience_id", frozenset((EXPERIENCE,)), TAG_RUN_ROWS),
    IdColumn(TAG_RUNS, "run_id", frozenset((RUN,)), TAG_RUN_ROWS),
    IdColumn(GROUPS, "run_id", frozenset((RUN,)), GROUP_ROWS),
    IdColumn(TAG_GROUPS, "run_id", frozenset((RUN,)), TAG_GROUP_ROWS),
    IdColumn(OUTCOMES_TABLE, "run_id", frozenset((RUN,)), PLAIN),
    IdColumn(OUTCOME_RUNS, "user_id", frozenset((USER,)), OUTCOME_RUN_ROWS),
    IdColumn(OUTCOME_RUNS, "experience_id", frozenset((EXPERIENCE,)), OUTCOME_RUN_ROWS),
    IdColumn(OUTCOME_RUNS, "run_id", frozenset((RUN,)), OUTCOME_RUN_ROWS),
    IdColumn(BUDGETS_TABLE, "spec", frozenset((USER,)), JSON),  # a budget's user selector
    IdColumn(ALERTS_TABLE, "payload", frozenset((USER,)), JSON),  # the selector in a pending alert
    IdColumn(AUDIT_TABLE, "target", ANY_ID, PLAIN),
    IdColumn(AUDIT_TABLE, "detail", ANY_ID, JSON),
)
"""Every (table, column) that holds a user, experience or run id, in the order a forget changes them
(the ledger first: its triggers move the figures of the tables they keep). The hour rollup holds no id;
SQLite's pending rows (:data:`.rollup_sql.PENDING`) are folded before and after the ledger update, so they
hold none at the commit. Tags are the application's own data and are not searched."""


class _Dialect(NamedTuple):
    same: str
    least: str
    greatest: str
    contains: str
    none: str
    """A text no id holds (a control character), standing for NULL in a comparison."""


_DIALECTS: Final = {
    "sqlite": _Dialect("IS", "MIN", "MAX", "instr({}, ?) > 0", "char(1)"),
    "postgresql": _Dialect("IS NOT DISTINCT FROM", "LEAST", "GREATEST", "strpos({}, ?) > 0", "chr(1)"),
}

_TABLES_SQL: Final = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
}

_FORGET_LIMITS: Final = (
    "SELECT set_config('lock_timeout', '60000', true), set_config('statement_timeout', '0', true)"
)
"""PostgreSQL: a forget waits up to a minute for the writers in progress and is not cut short after 15 s
(a batch's limit); the writers it holds up wait for their own lock timeout, then retry later."""


_DIALECT_OF: Final[weakref.WeakKeyDictionary[Store, str]] = weakref.WeakKeyDictionary()


def write(store: Store, what: str, op: Callable[[Transaction], _T]) -> _T:
    """Run ``op`` in one writing transaction of ``store``: SQLite ``BEGIN IMMEDIATE`` (the write lock up
    front, as every writer); PostgreSQL ``READ COMMITTED`` without the schema's advisory lock (a forget
    locks the ledger itself, a prune batch needs no lock beyond its rows), so that a process opening the
    store meanwhile is not held up."""
    dialect = _DIALECT_OF.get(store)
    if dialect is None:
        dialect = _DIALECT_OF[store] = store.transact(
            "reading the store's kind", lambda tx: tx.dialect, write=False
        )
    return store.transact(what, op, write=dialect == "sqlite")


class Totals(NamedTuple):
    """The dashboard's totals of one use case, read from the rollups: calls, cost (None: no call has one)
    and runs."""

    calls: int
    cost_usd: float | None
    runs: int


class Erased(NamedTuple):
    """What one forget changed: rows per table, and the totals per use case before and after."""

    rows: dict[str, int]
    tombstones: tuple[str, ...]
    """The tombstones that replaced something (a form of the id the store never held replaced nothing)."""
    before: dict[str, Totals]
    after: dict[str, Totals]


def _tables(tx: Transaction) -> frozenset[str]:
    return frozenset(str(row[0]) for row in tx.execute(_TABLES_SQL[tx.dialect], ()))


def _fold(tx: Transaction, tables: frozenset[str]) -> None:
    """SQLite: the pending rows into the rollups (the fold every writer runs), inside this transaction."""
    if tx.dialect == "sqlite" and PENDING in tables:
        for statement in sqlite_fold():
            tx.changed(statement, ())


def totals(tx: Transaction) -> dict[str, Totals]:
    """Per use case: calls and cost from the hour rollup, runs from the per-run table (what the dashboard
    and ``report`` show); ``{}`` for a store without rollups."""
    tables = _tables(tx)
    if HOUR_ROLLUP not in tables or RUNS not in tables:
        return {}
    _fold(tx, tables)
    sums = tx.execute(
        f"SELECT use_case, SUM(calls), SUM(cost_usd), SUM(cost_calls) FROM {HOUR_ROLLUP} GROUP BY use_case",
        (),
    )
    runs = dict(tx.execute(f"SELECT use_case, COUNT(*) FROM {RUNS} GROUP BY use_case", ()))
    found = {
        str(use_case): Totals(int(calls), float(cost) if cost_calls else None, int(runs.get(use_case, 0)))
        for use_case, calls, cost, cost_calls in sums
        if calls
    }
    return dict(sorted(found.items()))


def _lock(tx: Transaction, tables: frozenset[str]) -> None:
    """Hold the writers off the ledger until the commit (PostgreSQL; SQLite's write lock does it), and fold
    SQLite's pending rows so that the rollups hold every call before the ledger changes."""
    if tx.dialect == "postgresql":
        tx.execute(_FORGET_LIMITS, ())
        tx.changed(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE", ())  # (the outcome writers' too)
    _fold(tx, tables)


def forget(tx: Transaction, kind: str, tombstones: Mapping[str, str]) -> Erased:
    """Replace each stored id ``form`` of ``tombstones`` by its tombstone in every :data:`ID_COLUMNS` column
    of ``kind``, in the open transaction ``tx``. Returns the rows changed per table (the ledger's calls;
    for the other tables their rows), the tombstones that replaced something, and the totals before and
    after."""
    tables = _tables(tx)
    _lock(tx, tables)
    before = totals(tx)
    columns = [c for c in ID_COLUMNS if kind in c.kinds and c.table in tables]
    rows: dict[str, int] = {}
    used: dict[str, int] = dict.fromkeys(tombstones.values(), 0)
    d = _DIALECTS[tx.dialect]

    def count(column: IdColumn, tomb: str, changed: int) -> None:
        rows[column.table] = rows.get(column.table, 0) + changed
        used[tomb] += changed

    flags = {
        (c, form): _flags_before(tx, c, form)
        for c in columns
        if isinstance(c.how, Cells) and c.how.flag
        for form in tombstones
    }
    for column in columns:
        if column.how == LEDGER:
            for form, tomb in tombstones.items():
                count(column, tomb, _update_plain(tx, column, form, tomb))
    _fold(tx, tables)
    for column in columns:
        for form, tomb in tombstones.items():
            if isinstance(column.how, Cells):
                count(column, tomb, _update_cells(tx, d, column, column.how, form, tomb))
                _restore_flags(tx, d, column, column.how, flags.get((column, form), []))
            elif column.how == PLAIN:
                count(column, tomb, _update_plain(tx, column, form, tomb))
            elif column.how == JSON:
                count(column, tomb, _update_json(tx, d, column, form, tomb))
    if OUTCOME_RUNS in tables and rows:
        # each outcome's runs copied again: their rows and outcomes were renamed apart (the outcomes after
        # the ledger's triggers copied the runs), and their flags restored after the copies were made
        for statement in outcome_runs_sql.backfill(tx.dialect):
            tx.changed(statement, ())
    replaced = tuple(tomb for tomb, n in used.items() if n)
    return Erased(rows, replaced, before, totals(tx))


def _update_plain(tx: Transaction, column: IdColumn, form: str, tomb: str) -> int:
    return tx.changed(
        f"UPDATE {column.table} SET {column.column} = ? WHERE {column.column} = ?", (tomb, form)
    )


def _json_strings(value: str) -> list[str]:
    """``value`` as a JSON string, as the writers of those columns encode it (ASCII-escaped or not)."""
    return list(dict.fromkeys((json.dumps(value), json.dumps(value, ensure_ascii=False))))


def _update_json(tx: Transaction, d: _Dialect, column: IdColumn, form: str, tomb: str) -> int:
    name = column.column
    sql = f"UPDATE {column.table} SET {name} = REPLACE({name}, ?, ?) WHERE {d.contains.format(name)}"
    return sum(tx.changed(sql, (encoded, json.dumps(tomb), encoded)) for encoded in _json_strings(form))


def _match(d: _Dialect, cells: Cells, keys: Sequence[str], left: str, right: str) -> str:
    """Null-safe equality of ``keys`` between two rows, as hashable equalities."""

    def equal(k: str) -> str:
        if k in cells.nullable:
            return f"COALESCE({left}.{k}, {d.none}) = COALESCE({right}.{k}, {d.none})"
        return f"{left}.{k} = {right}.{k}"

    return " AND ".join(equal(k) for k in keys) or "true"


def _update_cells(tx: Transaction, d: _Dialect, column: IdColumn, cells: Cells, form: str, tomb: str) -> int:
    """The rows still holding a forgotten id once the ledger moved its calls (rows of pruned calls, and
    attributes the triggers do not rewrite): added into the tombstone's row of the same key, else renamed."""
    table, name = column.table, column.column
    held = tx.execute(f"SELECT 1 FROM {table} WHERE {name} = ? LIMIT 1", (form,))
    if not held:  # the usual case: the triggers moved every row along with its calls
        return 0
    # SQLite's group totals are kept by the fold, not by triggers: the rows renamed here are taken out of
    # them and added back (PostgreSQL's statement triggers do the same)
    # (and in both dialects those of the tag groupings, which no trigger keeps: .tag_runs_sql)
    totals = table in (TAG_RUNS, TAG_GROUPS) or (tx.dialect == "sqlite" and table in (RUNS, GROUPS))
    if totals:
        tx.changed(*groups_sql.change_totals(tx.dialect, table, -1, f"r.{name} IN (?, ?)", (form, tomb)))
    changed = _rename_cells(tx, d, cells, table, name, form, tomb)
    if totals:
        tx.changed(*groups_sql.change_totals(tx.dialect, table, 1, f"r.{name} IN (?, ?)", (form, tomb)))
        tx.changed(groups_sql.drop_empty(), ())
    return changed


def _rename_cells(
    tx: Transaction, d: _Dialect, cells: Cells, table: str, name: str, form: str, tomb: str
) -> int:
    changed = 0
    if name in cells.key:
        others = [k for k in cells.key if k != name]
        match = _match(d, cells, others, "o", table)
        sets = [f"{s} = {table}.{s} + o.{s}" for s in cells.sums]
        sets += [f"{c} = {d.least}({table}.{c}, o.{c})" for c in cells.least]
        sets += [f"{c} = {d.greatest}({table}.{c}, o.{c})" for c in cells.greatest if c != cells.flag]
        if cells.flag:
            differ = " OR ".join(f"NOT ({table}.{k} {d.same} o.{k})" for k in cells.dims) or "false"
            sets.append(
                f"{cells.flag} = {d.greatest}({table}.{cells.flag}, o.{cells.flag}, "
                f"CASE WHEN {differ} THEN 1 ELSE 0 END)"
            )
        merged = tx.changed(
            f"UPDATE {table} SET {', '.join(sets)} FROM {table} AS o "
            f"WHERE {table}.{name} = ? AND o.{name} = ? AND {match}",
            (tomb, form),
        )
        if merged:
            tx.changed(
                f"DELETE FROM {table} WHERE {name} = ? AND EXISTS (SELECT 1 FROM {table} AS o "
                f"WHERE o.{name} = ? AND {_match(d, cells, others, 'o', table)})",
                (form, tomb),
            )
            if cells.derived:
                derived = ", ".join(f"{c} = {expression}" for c, expression in cells.derived)
                tx.changed(f"UPDATE {table} SET {derived} WHERE {name} = ?", (tomb,))
        changed += merged
    changed += tx.changed(f"UPDATE {table} SET {name} = ? WHERE {name} = ?", (tomb, form))
    return changed


def _flags_before(tx: Transaction, column: IdColumn, form: str) -> list[tuple[Any, ...]]:
    """The keys of the rows holding a forgotten id as an attribute whose flag is clear before the ledger
    changes (the triggers set it when the calls' attribute changes, which a forget does not mean)."""
    cells = column.how
    assert isinstance(cells, Cells) and cells.flag
    if column.column in cells.key:
        return []
    keys = ", ".join(cells.key)
    return tx.execute(
        f"SELECT {keys} FROM {column.table} WHERE {column.column} = ? AND {cells.flag} = 0", (form,)
    )


_CHUNK: Final = 200
"""Keys per statement (each key binds its columns: well under SQLite's 32,766 and PostgreSQL's 65,535)."""


def _restore_flags(
    tx: Transaction,
    d: _Dialect,
    column: IdColumn,
    cells: Cells,
    clear: list[tuple[Any, ...]],
) -> None:
    """Clear the flag again on the rows of ``clear`` whose ledger calls all agree with the row's attributes
    (calls pruned before the forget agreed already: the flag was clear)."""
    if not clear:
        return
    table, flag = column.table, cells.flag
    differ = " OR ".join(f"NOT (c.{k} {d.same} {table}.{k})" for k in cells.dims) or "false"
    ledger = " AND ".join(f"c.{k} = {table}.{k}" for k in cells.ledger_key or cells.key)
    key = "(" + ", ".join(cells.key) + ")"
    one = "(" + ", ".join("?" * len(cells.key)) + ")"
    for start in range(0, len(clear), _CHUNK):
        chunk = clear[start : start + _CHUNK]
        tx.changed(
            f"UPDATE {table} SET {flag} = 0 WHERE {key} IN (VALUES {', '.join([one] * len(chunk))}) "
            f"AND NOT EXISTS (SELECT 1 FROM {TABLE} AS c WHERE {ledger} AND ({differ}))",
            [value for row in chunk for value in row],
        )


# --- prune ------------------------------------------------------------------------------------

_PRUNED: Final = ((TABLE, "start_ns"), (OUTCOMES_TABLE, "recorded_ns"))
"""The per-call tables prune deletes from, and the time each row is judged by."""

_SQLITE_ROWS: Final = 5_000
"""SQLite: rows deleted per transaction (about 50 ms of the write lock on a loaded machine)."""
_PG_BLOCKS: Final = 128
"""PostgreSQL: heap blocks (1 MiB) visited per transaction (a few thousand rows)."""


def prune_batches(store: Store, cutoff_ns: int) -> dict[str, int]:
    """Delete the rows of :data:`_PRUNED` older than ``cutoff_ns`` in short transactions of ``store``, one
    pass over each table: SQLite by rowid (a range per batch; rows are in the order written, so the old
    ones come first), PostgreSQL by heap block (a TID range scan per batch). Neither needs an index on
    time, so writes pay nothing for retention. Returns the rows deleted per table."""
    dialect = write(store, "pruning", lambda tx: tx.dialect)
    deleted: dict[str, int] = {}
    for table, time in _PRUNED:
        deleted[table] = (_prune_sqlite if dialect == "sqlite" else _prune_postgresql)(
            store, table, time, cutoff_ns
        )
    return deleted


def _prune_sqlite(store: Store, table: str, time: str, cutoff_ns: int) -> int:
    count, after = 0, 0
    while True:

        def batch(tx: Transaction, after: int = after) -> tuple[int, int | None]:
            if table not in _tables(tx):
                return 0, None
            found = tx.execute(
                f"SELECT rowid FROM {table} WHERE rowid > ? AND {time} < ? ORDER BY rowid LIMIT ?",
                (after, cutoff_ns, _SQLITE_ROWS),
            )
            if not found:
                return 0, None
            last = int(found[-1][0])
            delete = f"DELETE FROM {table} WHERE rowid > ? AND rowid <= ? AND {time} < ?"
            if table == OUTCOMES_TABLE:
                gone = _outcomes_pruned(tx, delete, (after, last, cutoff_ns))
            else:
                gone = tx.changed(delete, (after, last, cutoff_ns))
            return gone, last if len(found) == _SQLITE_ROWS else None

        gone, last = write(store, f"pruning {table}", batch)
        count += gone
        if last is None:
            return count
        after = last


def _prune_postgresql(store: Store, table: str, time: str, cutoff_ns: int) -> int:
    def size(tx: Transaction) -> int:
        if table not in _tables(tx):
            return 0
        found = tx.execute("SELECT pg_relation_size(?) / current_setting('block_size')::int", (table,))
        return int(found[0][0])

    count, block = 0, 0
    for _ in range(2):  # the table's blocks, then once more those added meanwhile (an update moves rows)
        blocks = write(store, f"pruning {table}", size)
        while block < blocks:

            def batch(tx: Transaction, block: int = block) -> int:
                delete = f"DELETE FROM {table} WHERE ctid >= ?::tid AND ctid < ?::tid AND {time} < ?"
                params = (f"({block},0)", f"({block + _PG_BLOCKS},0)", cutoff_ns)
                if table == OUTCOMES_TABLE:
                    tx.changed(outcome_runs_sql.PG_OUTCOME_WRITES_LOCK, ())  # (as an outcome write)
                    return _outcomes_pruned(tx, delete, params)
                return tx.changed(delete, params)

            count += write(store, f"pruning {table}", batch)
            block += _PG_BLOCKS
    return count


def _outcomes_pruned(tx: Transaction, delete: str, params: Sequence[Any]) -> int:
    """Delete outcomes with ``delete``, then copy their runs again (:mod:`.outcome_runs_sql`: each
    outcome's runs hold the outcomes the table holds, as the report outside those copies reads them)."""
    deleted = tx.execute(f"{delete} RETURNING use_case, run_id", params)
    if deleted and OUTCOME_RUNS in _tables(tx):
        runs = sorted({(str(use_case), str(run_id)) for use_case, run_id in deleted})
        for sql, more in outcome_runs_sql.refresh_runs(tx.dialect, runs):
            tx.changed(sql, more)
    return len(deleted)


def claim_sql() -> str:
    """Take the day's prune for this store (parameters: now, the last time it may have run before): one
    row changed when this process is the one to prune, none when another did within the day."""
    return (
        f"INSERT INTO {META_TABLE} (key, value) VALUES ('retention_pruned_ns', ?) "
        f"ON CONFLICT (key) DO UPDATE SET value = excluded.value "
        f"WHERE CAST({META_TABLE}.value AS BIGINT) <= ?"
    )
