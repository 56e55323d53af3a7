"""The store interface, store URLs and the ledger's columns.

The ledger has one row per LLM call, keyed by (trace id, span id): writing the
same call twice (an exporter retry, a resent OTLP batch) changes nothing, and a
second instrumentation of the same request replaces the first copy only when it
is more complete (usage where the first had none or only part). Reports read the
ledger through indexes; there is no read-modify-write anywhere, so many writers
can share one store.

A call the ledger cannot hold (a lone surrogate in a name, a count beyond int64,
a token count no real call has) is isolated by :func:`write_isolating`, decided
here once for both stores: the rest of its batch is written and the call comes
back as a :class:`RejectedCall` naming the field, the rule and the value.
"""

from __future__ import annotations

import json
import math
import os
import re
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

from .. import config
from ..cost import token_classes
from ..cost.call import NO_TAGS, Call
from ..cost.dedup import completeness_sql as _completeness
from ..cost.usage import MAX_TOKEN_COUNT
from ..scope.validation import check_name
from .alert_sql import ALERTS_DDL, AlertKey, ClaimedAlert

_T = TypeVar("_T")

if TYPE_CHECKING:
    from .budget_sql import SpendQuery, SpendSnapshot
    from .outcome_sql import Outcome, RejectedOutcome
    from .rollup_sql import ViewSQL

__all__ = [
    "COLUMNS",
    "GROUP_TOTALS",
    "INDEXED_CLASSES",
    "LEDGER",
    "MARKED_CLASSES",
    "META_TABLE",
    "PRICE_COLUMNS",
    "RUN_RECORD",
    "RUN_TOTALS",
    "SCHEMA_VERSION",
    "SEEN_PREFIX",
    "TAGS_COLUMN",
    "TOKEN_COLUMNS",
    "UPGRADES",
    "RejectedCall",
    "ReportFilter",
    "RepriceFilter",
    "Repricing",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TagValue",
    "Transaction",
    "Unstorable",
    "broken_rule",
    "call_of",
    "calls_to_reprice",
    "classes_to_mark",
    "create_statements",
    "default_store_url",
    "filter_clauses",
    "mark_params",
    "mark_sql",
    "migrate",
    "missing_column_statements",
    "one_line",
    "parse_store_url",
    "plausible",
    "redact_url",
    "register_fork_hooks",
    "reprice_select_sql",
    "reprice_update_params",
    "reprice_update_sql",
    "row_of",
    "seen_key",
    "tags_json",
    "tags_of",
    "upgrade_statements",
    "upsert_rows_sql",
    "write_isolating",
]

SCHEMA_VERSION: Final = 13
"""1: the first ledger. 2: ``start_ns`` in the covering index, no ``(use_case, start_ns)`` index.
3: the cost engine v2 columns (cost source, price context, unpriced reason, our price beside a billed one)
and one column per token class of :mod:`otel_usecase.cost.token_classes`. 4: the ``tags`` column.
5: the rollups (:mod:`otel_usecase.store.rollup_sql`), created with their triggers and filled from the ledger.
6: the per-run table (:mod:`otel_usecase.store.runs_sql`), kept by the same triggers, filled from the ledger.
7: use cases as shared containers: principals and members (:mod:`.access_sql`), definitions and experience
types (:mod:`.definition_sql`), the audit log (:mod:`.audit_sql`). 8: the per-(run, group) rows, the group
totals (:mod:`.groups_sql`) and the day rollup. 9: the kept tag keys and their groups (:mod:`.tags_sql`).
10: each kept tag value's runs (:mod:`.tag_runs_sql`). 11: the per-(run, group) rows' times. 12: each
run's experience version in the per-run table, and the experience-version grouping's totals. 13: each
outcome's runs together (:mod:`.outcome_runs_sql`)."""
TABLE: Final = "usecase_calls"

META_TABLE: Final = "otel_usecase_meta"

_BEFORE_TOKENS: Final[tuple[tuple[str, str, str], ...]] = (
    ("trace_id", "text", "NOT NULL"),
    ("span_id", "text", "NOT NULL"),
    ("start_ns", "int", "NOT NULL"),
    ("end_ns", "int", "NOT NULL"),
    ("service", "text", ""),
    ("use_case", "text", "NOT NULL"),
    ("run_id", "text", "NOT NULL"),
    ("use_case_version", "text", ""),
    ("step", "text", ""),
    ("experience_name", "text", ""),
    ("experience_id", "text", ""),
    ("user_id", "text", ""),
    ("provider", "text", ""),
    ("model", "text", ""),
    ("operation", "text", ""),
)
_AFTER_TOKENS: Final[tuple[tuple[str, str, str], ...]] = (
    ("cost_usd", "real", ""),
    ("status", "text", "NOT NULL"),
    ("cost_source", "text", ""),
    ("price_source", "text", ""),
    ("price_context", "text", ""),
    ("unpriced_reason", "text", ""),
    ("computed_cost_usd", "real", ""),
    ("error", "flag", "NOT NULL DEFAULT 0"),
    ("tags", "text", ""),
    ("experience_version", "text", ""),
)

TOKEN_COLUMNS: Final[tuple[str, ...]] = token_classes.COLUMNS
"""One column per token class, in table order (``input_tokens``, ``output_tokens``, ``cache_read_tokens`` ...)."""
_KNOWN_OR_NULL: Final = frozenset((token_classes.INPUT.column, token_classes.OUTPUT.column))
"""Input and output counts may be unknown (NULL, never 0); a part that is absent is 0."""

INDEXED_CLASSES: Final = token_classes.TOKEN_CLASSES[:5]
"""The token classes every report sums, in the covering index: input, output, cache reads and writes,
reasoning (the classes the ledger had before schema 3). The later ones are summed only once the ledger has
had one (:data:`MARKED_CLASSES`)."""

MARKED_CLASSES: Final = token_classes.TOKEN_CLASSES[5:]
"""The token classes added with schema 3 (1-hour cache writes, audio, image, video): 0 in most ledgers.
Not in the covering index (each one more makes every report read more: 14 classes took the PostgreSQL
index from 170 to 289 MiB and reports 25-64 % longer). The write that first stores a non-zero count of
one also stores its mark (:func:`mark_sql`) in the same transaction; a report sums only the marked ones
(:func:`.totals.summed_columns`), so a ledger without them is read from the index alone."""

LEDGER: Final[tuple[tuple[str, str, str], ...]] = (
    *_BEFORE_TOKENS,
    *((column, "int", "" if column in _KNOWN_OR_NULL else "NOT NULL DEFAULT 0") for column in TOKEN_COLUMNS),
    *_AFTER_TOKENS,
)
"""The ledger's columns as (name, kind, constraint): the fields of :class:`~otel_usecase.cost.call.Call`
by name, with ``tokens`` spread into one column per token class.

Defined once; each store maps the kinds (``text``, ``int``, ``real``, ``flag``) to its own types."""

COLUMNS: Final[tuple[str, ...]] = tuple(name for name, _, _ in LEDGER)
"""Ledger column names, in row order (see :func:`row_of`)."""

TAGS_COLUMN: Final = "tags"
"""The ledger column of a call's tags: NULL when it has none, else :func:`tags_json` of them."""

_PART_NAMES: Final = tuple(c.name for c in token_classes.TOKEN_CLASSES[2:])
assert (
    token_classes.TOKEN_CLASSES[0] is token_classes.INPUT
    and token_classes.TOKEN_CLASSES[1] is token_classes.OUTPUT
)


def row_of(call: Call) -> tuple[Any, ...]:
    """The ledger row of ``call``, in :data:`COLUMNS` order, read from the call by field name.

    Written out (not generated) because it runs once per stored call;
    ``tests/test_cost.py::test_ledger_columns_are_the_call_fields`` writes a call with a distinct value in every
    field and class and reads each back from its column.
    """
    tokens = call.tokens
    get = tokens.get
    return (
        call.trace_id,
        call.span_id,
        call.start_ns,
        call.end_ns,
        call.service,
        call.use_case,
        call.run_id,
        call.use_case_version,
        call.step,
        call.experience_name,
        call.experience_id,
        call.user_id,
        call.provider,
        call.model,
        call.operation,
        get("input"),
        get("output"),
        *[get(name, 0) for name in _PART_NAMES],
        call.cost_usd,
        call.status,
        call.cost_source,
        call.price_source,
        call.price_context,
        call.unpriced_reason,
        call.computed_cost_usd,
        call.error,
        tags_json(call.tags) if call.tags else None,
        call.experience_version,
    )


def tags_json(tags: Mapping[str, str]) -> str:
    """The ``tags`` column's text of non-empty ``tags``: one JSON object, keys sorted, no spaces, UTF-8 as is.

    One canonical text per set of tags, so equal tags are equal text (the dedup upsert and
    ``reprice``'s guard compare rows column by column)."""
    return json.dumps(dict(sorted(tags.items())), separators=(",", ":"), ensure_ascii=False)


def tags_of(text: object) -> Mapping[str, str]:
    """The tags of a ``tags`` column value (the inverse of :func:`tags_json`; NULL is no tags).

    A value no otel-usecase wrote (not a JSON object: a program writing rows past
    the store) is read as no tags rather than failing the report that reads it."""
    if text is None:
        return NO_TAGS
    try:
        found = json.loads(text) if isinstance(text, (str, bytes)) else None
    except ValueError:
        return NO_TAGS
    if not isinstance(found, dict) or not found:
        return NO_TAGS
    return {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in found.items()}


_AT: Final = {name: i for i, name in enumerate(COLUMNS)}
_TOKEN_AT: Final = tuple((c.name, _AT[c.column]) for c in token_classes.TOKEN_CLASSES)
_FIELD_AT: Final = tuple((name, _AT[name]) for name in Call._fields if name not in ("tokens", "tags"))
_TAGS_AT: Final = _AT[TAGS_COLUMN]


def call_of(row: Sequence[Any]) -> Call:
    """The :class:`Call` of a ledger row in :data:`COLUMNS` order (the inverse of :func:`row_of`).

    ``tokens`` holds input and output when known and every other class that is not 0,
    as the pricing code built it. Values are taken as stored (a report shows what
    is there, whatever its type)."""
    tokens = {
        name: row[at]
        for name, at in _TOKEN_AT
        if row[at] is not None and (row[at] != 0 or name in ("input", "output"))
    }
    return Call(tokens=tokens, tags=tags_of(row[_TAGS_AT]), **{name: row[at] for name, at in _FIELD_AT})


def create_statements(types: dict[str, str]) -> tuple[str, ...]:
    """``CREATE TABLE IF NOT EXISTS`` for the meta table and the ledger, with a store's column types."""
    from . import access_sql, audit_sql, budget_sql, definition_sql, outcome_sql  # import this module

    columns = ",\n    ".join(
        f"{name} {types[kind]} {constraint}".rstrip() for name, kind, constraint in LEDGER
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {columns},\n    PRIMARY KEY (trace_id, span_id)\n)",
        *ALERTS_DDL,  # alerts: the claims table (store/alert_sql.py)
        budget_sql.CREATE_BUDGETS,
        *outcome_sql.OUTCOMES_DDL,  # what runs achieved (record_outcome)
        *access_sql.DDL,  # principals and their roles per use case
        *definition_sql.DEFINITIONS_DDL,  # use case and experience type definitions (usecases/)
        *audit_sql.AUDIT_DDL,  # who changed what (audit.py)
    )


_REPLACED_ON_BETTER_COPY: Final = tuple(c for c in COLUMNS if c not in ("trace_id", "span_id"))


class RejectedCall(NamedTuple):
    """A call the store could not take because of its own data (not an outage), and why.

    ``Store.write`` isolates such calls and writes the rest of the batch; the caller
    counts and logs them (the exporter) or reports them to the sender (``serve``'s
    OTLP ``partial_success``). ``reason`` names the field and the rule, with the
    value's ``repr``.
    """

    call: Call
    reason: str


class StoreError(Exception):
    """The store cannot be used as configured (bad URL, newer schema, ...)."""


class StoreUnavailable(StoreError):
    """The store is there but cannot take writes right now (locked, down, disk full): retry later."""


class Unstorable(Exception):
    """Raised by a store's batch writer when the database refused the data itself, not an outage.

    Each store decides which of its database's errors mean this (SQLite: a value
    it cannot bind; PostgreSQL: SQLSTATE classes 22 and 23); :func:`write_isolating`
    then finds the calls responsible. Never leaves ``Store.write``.
    """


class ReportFilter(NamedTuple):
    """Which calls a report reads: each field that is set must equal the call's (``since_ns``: started at or
    after; ``until_ns``: started before). ``user_id`` is the stored form (hashed when hashing is on).
    ``tags``: (key, value) pairs the call's tags must all have. ``use_cases``: the use cases the reader may
    see (a dashboard principal's ``visible_use_cases``): only their calls are read, whatever the other
    fields say; None = every use case, ``()`` = none. A ``use_case`` outside it selects nothing, exactly
    like a use case without calls."""

    use_case: str | None = None
    since_ns: int | None = None
    user_id: str | None = None
    experience_name: str | None = None
    use_case_version: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    until_ns: int | None = None
    use_cases: tuple[str, ...] | None = None


RUN_TOTALS: Final[tuple[str, ...]] = (
    "calls",
    *TOKEN_COLUMNS,
    "unpriced_calls",
    "no_usage_calls",
    "partial_calls",
    "cost_usd",
)
"""The totals of one run (of one group), in the order :meth:`Store.run_totals` returns them after the key
values: the number of calls, each token class's sum, the calls whose cost is unknown (``unpriced``,
``no_usage``) or a lower bound (``partial``), and the cost (None when no call of the run has one)."""

GROUP_TOTALS: Final[tuple[str, ...]] = (
    "runs",
    *RUN_TOTALS,
    "avg_run_cost_usd",
    "p50_run_cost_usd",
    "p95_run_cost_usd",
    "runs_left_out",
)
"""The totals of one group of runs, in the order :meth:`Store.group_totals` returns them after the key
values: :data:`RUN_TOTALS` summed, and the average, p50 and p95 (linear interpolation between closest
ranks) of the costs of the runs whose cost is complete, with the number of runs that leaves out."""

RUN_RECORD: Final[tuple[str, ...]] = (
    "use_case",
    "run_id",
    "runs",
    "calls",
    *TOKEN_COLUMNS,
    "cost_usd",
    "cost_complete",
    "unpriced_calls",
    "no_usage_calls",
    "partial_calls",
)
"""The fields, in order, of each record of :meth:`Store.runs_json` (``report --by run --format json``)."""


class Transaction(Protocol):
    """One open transaction of :meth:`Store.transact`."""

    dialect: str
    """``sqlite`` or ``postgresql``: for the statements whose SQL is not portable (``forget``, ``prune``)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement written with ``?`` placeholders; the rows it returns (``[]`` when none)."""

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` exists (a store written by an older version may lack a newer table)."""

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement written with ``?`` placeholders; the number of rows it inserted, updated or
        deleted."""


class Store(Protocol):
    """What the exporter, the receiver and the reports need of a store.

    The report primitives (:meth:`run_totals`, :meth:`group_totals`,
    :meth:`runs_json`, :meth:`run_calls`) are each store's own SQL; the report
    package only aggregates and formats what they return.
    """

    url: str

    def write(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """Write ``calls``; idempotent per (trace id, span id).

        Returns the calls the store could not take because of their own data
        (each with its reason); every other call of the batch is written. Raises
        :class:`StoreUnavailable` when the store cannot take writes now (locked,
        down, read-only, disk full): then nothing of the batch is written.
        """

    def run_totals(self, keys: Sequence[str], filters: ReportFilter) -> list[tuple[Any, ...]]:
        """One row per run and value of the ledger columns ``keys``: those values, then :data:`RUN_TOTALS`."""

    def group_totals(self, keys: Sequence[str], filters: ReportFilter) -> list[tuple[Any, ...]]:
        """One row per value of the ledger columns ``keys``: those values, then :data:`GROUP_TOTALS`."""

    def runs_json(self, filters: ReportFilter) -> str | None:
        """Every run as a JSON array of :data:`RUN_RECORD` records, most expensive first (unpriced last,
        ties by use case then run id), written by the database; None when this database cannot."""

    def run_calls(self, run_id: str) -> list[Call]:
        """The calls of one run, in time order (then span id)."""

    def view_sql(self) -> ViewSQL:
        """What the dashboard's view queries (store/rollup_sql.py) need to know of this store."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``?`` placeholders (for tools and tests; reports use the above)."""

    def read_together(self, reads: Sequence[Callable[[Store], _T]]) -> list[_T]:
        """Each of ``reads`` called with a store of this database, at the same time on as many connections
        as :mod:`.readers` keeps (a dashboard page's panels); their results in their order."""

    def close(self) -> None:
        """Release connections."""

    def reprice(self, changes: Sequence[Repricing]) -> list[Repricing]:
        """Write the new price columns of ``changes`` in one transaction; returns the changes applied.

        A row is updated only while it is still exactly ``change.old``
        (:func:`reprice_update_sql`): one a writer replaced meanwhile is left as
        the writer stored it. Raises :class:`StoreUnavailable` like ``write``.
        """

    # --- alerts ---
    # The claims of budget alerts (store/alert_sql.py); each raises StoreUnavailable/StoreError like ``write``.

    def alerts_prepare(self) -> None:
        """Create the alerts table if this store predates it (a current ledger runs no ``migrate`` DDL)."""

    def alert_claim(self, alert: ClaimedAlert, owner: str) -> bool:
        """Insert the row of ``alert`` claimed by ``owner``; False when another process has it already."""

    def alert_renew(self, key: AlertKey, owner: str) -> bool:
        """Renew ``owner``'s lease on a pending alert; False when ``owner`` no longer holds it."""

    def alert_attempted(self, key: AlertKey, owner: str, error: str | None, retry_in_ns: int | None) -> bool:
        """Record an attempt: delivered (``error`` None), to retry in ``retry_in_ns``, or given up (None)."""

    def alert_take_over(self, owner: str, lease_ns: int, has_default: bool, limit: int) -> list[ClaimedAlert]:
        """Claim up to ``limit`` pending alerts whose lease is older than ``lease_ns`` (those sent to the
        default webhook only when ``has_default``); the rows now ``owner``'s."""

    def alert_release(self, owner: str) -> int:
        """Let other processes take over ``owner``'s pending alerts at once (it is stopping)."""

    # --- budgets --- (SQL in store/budget_sql.py; each store runs it in its own transactions)

    def save_budget(self, name: str, spec: str, updated_ns: int) -> None:
        """Insert or replace budget ``name`` (``spec``: its JSON); creates the budgets table and spend index."""

    def delete_budget(self, name: str) -> bool:
        """Delete budget ``name``; whether there was one."""

    def load_budgets(self) -> list[tuple[str, str, int]]:
        """Every budget as ``(name, spec, updated_ns)``, by name; ``[]`` when the store has no budgets table."""

    def budget_spend(
        self,
        windows: Sequence[SpendQuery],
        runs: Sequence[tuple[SpendQuery, Sequence[str]]],
        keys: Sequence[tuple[str, str]],
    ) -> SpendSnapshot:
        """The spend of each window, of each run asked for and the stored cost of each call key, on one snapshot."""

    def latest_run(self, query: SpendQuery) -> str | None:
        """The run id of the most recent call ``query`` selects (``budgets status`` of a ``run`` budget)."""

    # --- outcomes --- (SQL in store/outcome_sql.py; each store runs it in its own transactions)

    def write_outcomes(self, outcomes: Sequence[Outcome]) -> list[RejectedOutcome]:
        """Insert ``outcomes``, idempotent per (trace id, span id); creates the table if this store predates it.

        Returns those refused for their own data (each with its reason); raises
        :class:`StoreUnavailable` like ``write`` (then nothing is written)."""

    def outcome_totals(self, name: str, use_case: str | None = None) -> list[tuple[Any, ...]]:
        """Per run, the outcomes named ``name``: ``(use_case, run_id, count, sum, first recorded_ns)``;
        ``[]`` when the store has no outcomes table."""

    def run_outcomes(self, run_id: str) -> list[Outcome]:
        """The outcomes of one run in the order recorded; ``[]`` when the store has no outcomes table."""

    def read_outcomes(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only query of the outcomes table or of each outcome's runs (``?`` placeholders;
        store/outcome_sql.py, :func:`~.runs_sql.achieved_sql`); ``[]`` when the store has no outcomes table."""

    # --- small tables (principals and members: store/access_sql.py) ---

    def transact(self, what: str, op: Callable[[Transaction], _T], *, write: bool) -> _T:
        """Run ``op`` in one transaction of its own and return what it returns.

        For the small administrative tables whose SQL is portable (``?``
        placeholders): ``op`` gets a :class:`Transaction`. A write transaction
        takes the store's write lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL the
        schema's advisory lock, so a table created on first use cannot collide
        with ``migrate``); anything ``op`` raises rolls everything back and
        propagates. ``op`` may run again after a rollback the database forced
        (PostgreSQL), so it must do nothing outside the transaction. ``what``
        names the work in a :class:`StoreUnavailable`.
        """


def upsert_sql(placeholder: str, rows: int = 1) -> str:
    """The idempotent insert of ``rows`` rows, shared by SQLite and PostgreSQL (both speak ``ON CONFLICT``).

    A conflicting row is replaced only when the new copy is more complete
    (the one ranking, :mod:`otel_usecase.cost.dedup`: ``no_usage`` < ``partial`` <
    ``priced``/``unpriced`` < provider-billed, then more token classes read): that is
    a second instrumentation of the same request that saw more of the usage. Equal
    copies (a retry, a resent batch) change nothing. The condition is only
    evaluated on a conflict, so new rows cost nothing more.
    (PostgreSQL refuses one statement that updates a row twice; it is sent one row
    per statement. SQLite takes many rows per statement, see ``SQLiteStore.write``.)
    """
    row = "(" + ", ".join([placeholder] * len(COLUMNS)) + ")"
    return upsert_rows_sql("VALUES " + ", ".join([row] * rows))


def upsert_rows_sql(rows: str) -> str:
    """:func:`upsert_sql` of the rows of ``rows`` (``VALUES ...`` or a ``SELECT`` of the ledger's columns):
    PostgreSQL sends a whole batch as one ``SELECT * FROM unnest(...)``, one statement per batch."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in _REPLACED_ON_BETTER_COPY)
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) {rows} "
        f"ON CONFLICT (trace_id, span_id) DO UPDATE SET {updates} "
        f"WHERE {_completeness(TABLE)} < {_completeness('excluded')}"
    )


# --- the token classes a ledger has had ------------------------------------------------------

SEEN_PREFIX: Final = "token_class_seen:"
"""A :data:`META_TABLE` key ``token_class_seen:<class name>`` marks a class of :data:`MARKED_CLASSES` that
some write stored a non-zero count of. Marks are only ever added: re-pricing changes no token count, and
an upgraded version 2 ledger has none of these classes (it had no column for them), so none to backfill.
A program writing rows past the store (plain SQL) must add the mark of such a class itself, or reports
read that class as 0."""

_MARKED_AT: Final = tuple((c.name, COLUMNS.index(c.column)) for c in MARKED_CLASSES)
_WIDTH: Final = len(COLUMNS)


def seen_key(name: str) -> str:
    """The :data:`META_TABLE` key marking token class ``name`` as written (see :data:`SEEN_PREFIX`)."""
    return SEEN_PREFIX + name


def classes_to_mark(flat: Sequence[Any], marked: Collection[str]) -> list[str]:
    """The classes of :data:`MARKED_CLASSES` not in ``marked`` with a non-zero count in ``flat`` (rows in
    column order, one after the other, as :func:`plausible` reads them).

    ``marked`` is a store's in-memory set of the marks it has written (or found)
    since it connected: once a ledger's classes are marked this is a few set
    lookups per batch; until then one C-level pass over a column slice per class.
    """
    return [name for name, at in _MARKED_AT if name not in marked and any(flat[at::_WIDTH])]


def mark_sql(placeholder: str, marks: int) -> str:
    """The insert of ``marks`` marks (key, value = the class's column) in :data:`META_TABLE`; an existing
    mark is left alone (``ON CONFLICT DO NOTHING``, both stores). A store runs it in the transaction that
    writes the rows with those tokens, so that a report can never see the rows without the mark."""
    values = ", ".join([f"({placeholder}, {placeholder})"] * marks)
    return f"INSERT INTO {META_TABLE} (key, value) VALUES {values} ON CONFLICT (key) DO NOTHING"


def mark_params(names: Iterable[str]) -> list[str]:
    """The parameters of :func:`mark_sql` for the classes ``names``."""
    return [value for name in names for value in (seen_key(name), token_classes.BY_NAME[name].column)]


# --- calls the ledger cannot hold ------------------------------------------------------------

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_TOKEN_COLUMNS: Final = frozenset(TOKEN_COLUMNS)
_NULLABLE: Final = frozenset(name for name, _, constraint in LEDGER if "NOT NULL" not in constraint)
_COUNTS: Final = tuple(COLUMNS.index(c) for c in TOKEN_COLUMNS if c not in _NULLABLE)
_NULLABLE_COUNTS: Final = tuple(COLUMNS.index(c) for c in TOKEN_COLUMNS if c in _NULLABLE)
_COST: Final = COLUMNS.index("cost_usd")


def plausible(flat: tuple[Any, ...]) -> bool:
    """True when, in ``flat`` (rows in column order, one after the other), every token count is within
    0..MAX_TOKEN_COUNT and every cost is finite.

    The check every batch gets before it is written, since neither is an error
    a database would raise: a token count beyond
    :data:`~otel_usecase.cost.usage.MAX_TOKEN_COUNT` fits in int64 but makes the sums
    of every report overflow, and a NaN or infinite cost poisons every total it
    enters. It reads each column as one slice (C-level passes, a fraction of a
    microsecond per call); a store's batch writer raises :class:`Unstorable` when
    it fails, and :func:`write_isolating` then finds the calls with
    :func:`broken_rule`.
    """
    width = len(COLUMNS)
    try:
        counts: tuple[Any, ...] = ()
        for column in _COUNTS:
            counts += flat[column::width]
        for column in _NULLABLE_COUNTS:
            counts += tuple(filter(None, flat[column::width]))
        if counts and (min(counts) < 0 or max(counts) > MAX_TOKEN_COUNT):
            return False
        total = sum(filter(None, flat[_COST::width]))
        return bool(total - total == 0)  # NaN or infinity anywhere leaves NaN here
    except TypeError:  # a value of the wrong type: let broken_rule name it
        return False


def broken_rule(call: Call) -> str | None:
    """Why the ledger cannot hold ``call`` (the field, the rule and the value's repr), or ``None``.

    The rules: text is valid Unicode (a lone surrogate such as ``"\\udcff"``, which
    any JSON sender can produce, cannot be encoded); integers fit in int64 (both
    stores' integer columns); token counts are 0..``MAX_TOKEN_COUNT``; the cost is a
    finite number; ``NOT NULL`` columns have a value.
    """
    for (name, kind, constraint), value in zip(LEDGER, row_of(call)):
        if value is None:
            if "NOT NULL" in constraint:
                return f"{name} is required (NOT NULL), got None"
            continue
        if kind == "text":
            if not isinstance(value, str):
                return f"{name} must be text, got {value!r}"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{name} must be valid Unicode text (no lone surrogates), got {value!r}"
        elif kind in ("int", "flag"):
            if not isinstance(value, int):
                return f"{name} must be an integer, got {value!r}"
            if name in _TOKEN_COLUMNS:
                if not 0 <= value <= MAX_TOKEN_COUNT:
                    return f"{name} must be a token count from 0 to {MAX_TOKEN_COUNT}, got {value!r}"
            elif not INT64_MIN <= value <= INT64_MAX:
                return f"{name} must fit in a 64-bit integer, got {value!r}"
        elif kind == "real":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{name} must be a number, got {value!r}"
            if not math.isfinite(value):
                return f"{name} must be a finite number, got {value!r}"
    return None


def write_isolating(
    calls: Sequence[Call], write_batch: Callable[[Sequence[Call]], None]
) -> list[RejectedCall]:
    """Write ``calls`` with ``write_batch``, setting apart the calls the ledger cannot hold.

    ``write_batch`` is a store's atomic write of a batch: it raises
    :class:`Unstorable` when the database refused the data or :func:`plausible`
    failed (nothing written), or :class:`StoreUnavailable`/:class:`StoreError`,
    which pass through. The happy path is one ``write_batch``. When a batch is
    refused, every call is checked against :func:`broken_rule` and the rest
    written again; if the database still refuses (a rule only it knows), the batch
    is halved until the refused calls stand alone: ``k`` bad calls among ``n`` cost
    about ``2 k log2(n)`` more writes, and every other call is written.

    Once the batch is split, the halves are separate transactions: a
    :class:`StoreUnavailable` half-way leaves part of the batch written, which the
    caller's retry of the whole batch cannot count twice (the upsert is idempotent).
    """
    rejected: list[RejectedCall] = []
    try:
        write_batch(calls)
        return rejected
    except Unstorable:
        pass
    calls = _set_apart(calls, rejected)
    if rejected:
        try:
            if calls:
                write_batch(calls)
            return rejected
        except Unstorable:
            pass
    _bisect(calls, write_batch, rejected)
    return rejected


def _set_apart(calls: Sequence[Call], rejected: list[RejectedCall]) -> Sequence[Call]:
    """``calls`` without those breaking a :func:`broken_rule`, which are added to ``rejected``."""
    keep: list[Call] = []
    for call in calls:
        reason = broken_rule(call)
        if reason is None:
            keep.append(call)
        else:
            rejected.append(RejectedCall(call, reason))
    return keep if len(keep) < len(calls) else calls


_REASON_CHARS: Final = 300
"""A database's own refusal is quoted up to this length (PostgreSQL's repeats the whole row)."""


def _bisect(
    calls: Sequence[Call], write_batch: Callable[[Sequence[Call]], None], rejected: list[RejectedCall]
) -> None:
    """Write the halves of a refused batch in turn, down to the single calls the database refuses."""
    if len(calls) == 1:
        try:
            write_batch(calls)
        except Unstorable as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            said = one_line(cause)
            said = said if len(said) <= _REASON_CHARS else said[: _REASON_CHARS - 3] + "..."
            rejected.append(RejectedCall(calls[0], f"the store refused it: {said}"))
        return
    middle = len(calls) // 2
    for half in (calls[:middle], calls[middle:]):
        try:
            write_batch(half)
        except Unstorable:
            _bisect(half, write_batch, rejected)


def one_line(exc: BaseException) -> str:
    """Database messages span lines (``DETAIL:``, ``HINT:``); reasons and log lines should not."""
    return " ".join(str(exc).split()) or type(exc).__name__


# --- fork ----------------------------------------------------------------------------------


def register_fork_hooks(
    store: object,
    *,
    before: Callable[[Any], None] | None = None,
    after_in_parent: Callable[[Any], None] | None = None,
    after_in_child: Callable[[Any], None],
) -> None:
    """Run ``hook(store)`` around every ``os.fork()`` for as long as ``store`` lives.

    A forked child has one thread; a lock another thread of the parent held at
    the fork stays held forever, and a connection shared with the parent must
    never be used (nor closed) by the child. Each store resets its own state in
    ``after_in_child`` and opens afresh on next use, as the SDK's batch span
    processor does. The hooks hold the store by weak reference, so registering
    (which cannot be undone) keeps no closed store alive.
    """
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - not on Windows
        return
    ref = weakref.ref(store)

    def call(hook: Callable[[Any], None] | None) -> Callable[[], None] | None:
        if hook is None:
            return None

        def run() -> None:
            target = ref()
            if target is not None:
                hook(target)

        return run

    hooks = {
        "before": call(before),
        "after_in_parent": call(after_in_parent),
        "after_in_child": call(after_in_child),
    }
    os.register_at_fork(**{k: v for k, v in hooks.items() if v is not None})


INDEXES: Final[tuple[str, ...]] = (
    # Covering for the per-run totals every report starts from (GROUP BY run_id, ...),
    # with the columns of its filters (--use-case, --since): the database reads this
    # index in order and never the table. Also finds one run. Each index more costs
    # every write (about 1.2 us per row in SQLite), and a filtered report scanning this
    # index takes well under a second at a million rows. Only the classes every report sums are in it (INDEXED_CLASSES);
    # a ledger that has any of the others is read from the table too, correct and slower.
    (
        f"CREATE INDEX IF NOT EXISTS {TABLE}_run_totals ON {TABLE} "
        f"(run_id, use_case, {', '.join(c.column for c in INDEXED_CLASSES)}, cost_usd, status, start_ns)"
    ),
    # The calls of a time range: the partial hours at the ends of a window the rollups answer (a
    # dashboard's "last 7 days" starts mid-hour; without it they are a read of every call: 10.5 s at
    # 10,000,000 calls instead of 0.2 s).
    f"CREATE INDEX IF NOT EXISTS {TABLE}_start ON {TABLE} (start_ns)",
)

UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: the covering index gains start_ns (a --since report read the table for
    # every row: 2.4 s instead of 0.9 s at 1M rows); the (use_case, start_ns) index goes.
    1: (f"DROP INDEX IF EXISTS {TABLE}_use_case", f"DROP INDEX IF EXISTS {TABLE}_run_totals"),
    # 2 -> 3: the covering index gains cache_write_tokens. The classes added with 3 need no
    # marks (MARKED_CLASSES): a version 2 ledger had no column for them, so no such tokens.
    2: (f"DROP INDEX IF EXISTS {TABLE}_run_totals",),
}
"""Statements taking a store from schema version N to N + 1, run before the missing columns are added
and ``INDEXES`` (re)created.

Columns are not listed here: :func:`missing_column_statements` adds every column of
:data:`LEDGER` an older ledger lacks (2 -> 3 added the cost-engine-v2 columns), so a
new field or token class needs no upgrade code."""


def upgrade_statements(found: int) -> list[str]:
    """The statements taking a store at schema version ``found`` to :data:`SCHEMA_VERSION`."""
    return [statement for version in range(found, SCHEMA_VERSION) for statement in UPGRADES.get(version, ())]


def missing_column_statements(existing: Iterable[str], types: dict[str, str]) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for each :data:`LEDGER` column not in ``existing``, with a store's types.

    Both stores run it when they open a ledger of an older schema: added columns
    take their default (0 for a token part, NULL otherwise), which is what those
    calls had, so old rows read the same as before.
    """
    have = {name.lower() for name in existing}
    return [
        f"ALTER TABLE {TABLE} ADD COLUMN {name} {types[kind]} {constraint}".rstrip()
        for name, kind, constraint in LEDGER
        if name not in have
    ]


Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Run one statement written with ``?`` placeholders; the rows it returns (``[]`` for DDL)."""


def migrate(
    execute: Execute,
    *,
    tables: Collection[str],
    columns: Callable[[], Iterable[str]],
    types: Mapping[str, str],
    create: bool,
    store: str,
    dialect: str = "sqlite",
) -> frozenset[str]:
    """Bring a store's schema to :data:`SCHEMA_VERSION`, or check a reader can read it; the ledger's columns.

    The one place that decides the schema, for both stores: each calls it inside
    its own transaction (SQLite ``BEGIN IMMEDIATE``, PostgreSQL under an advisory
    lock), with ``execute`` on that transaction, ``tables`` (which of
    :data:`META_TABLE` and the ledger exist), ``columns`` (lists the ledger's
    columns), its column ``types`` and ``store`` (how errors name it).

    * A schema newer than this version, or an unreadable version: :class:`StoreError`
      (upgrade otel-usecase; retrying will not help).
    * A reader (``create=False``, the report commands) never changes the schema: a
      missing ledger is a :class:`StoreError`; an older ledger is read as it is, and
      the columns it has are returned so that reports read only those (a column a
      newer version added reads as its default: 0 tokens, no cost source).
    * A current ledger: nothing is executed (a role that may not run DDL can open it).
    * Otherwise the tables are created if missing; an older ledger (a ledger without
      a version row counts as version 1) gets :data:`UPGRADES` from its version on,
      then every missing :data:`LEDGER` column (:func:`missing_column_statements`),
      then the version row and :data:`INDEXES`, then the rollups of ``dialect`` (``sqlite``,
      ``postgresql``) with their triggers, filled from the ledger when it predates them
      (:func:`.rollup_sql.ddl`; the triggers first, so that no write is missed or counted twice).
    """
    from . import groups_sql, rollup_sql, runs_sql, tag_runs_sql  # import this module

    has_meta, has_ledger = META_TABLE in tables, TABLE in tables
    version: int | None = None
    if has_meta:
        found = execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'", ())
        if found:
            try:
                version = int(found[0][0])
            except (TypeError, ValueError):
                raise StoreError(f"{store} has an unreadable schema version {found[0][0]!r}") from None
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{store} has schema version {version}, newer than this otel-usecase understands "
            f"({SCHEMA_VERSION}): upgrade otel-usecase"
        )
    if not create:
        if not has_ledger:
            raise StoreError(f"{store} has no ledger table ({TABLE}): not an otel-usecase store")
        return frozenset(COLUMNS) if version == SCHEMA_VERSION else frozenset(c.lower() for c in columns())
    if has_ledger and version == SCHEMA_VERSION:
        return frozenset(COLUMNS)
    for statement in create_statements(dict(types)):
        execute(statement, ())
    if has_ledger:
        for statement in upgrade_statements(version if version is not None else 1):
            execute(statement, ())
        for statement in missing_column_statements(columns(), dict(types)):
            execute(statement, ())
    execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    for statement in INDEXES:
        execute(statement, ())
    backfill = has_ledger and (version is None or version < _ROLLUPS_SINCE)
    runs_backfill = has_ledger and (version is None or version < _RUNS_SINCE)
    groups_backfill = has_ledger and (version is None or version < _GROUPS_SINCE)
    tags_backfill = has_ledger and (version is None or version < _TAGS_SINCE)
    tag_runs_backfill = has_ledger and (version is None or version < _TAG_RUNS_SINCE)
    outcome_runs_backfill = has_ledger and (version is None or version < _OUTCOME_RUNS_SINCE)
    group_times = (
        has_ledger
        and (version is None or version < _GROUP_TIMES_SINCE)
        and not execute(groups_sql.has_times_sql(dialect), ())
    )
    # the tables a run's experience version is added to (schema 12): those of an older schema that have it
    kept = (runs_sql.RUNS, tag_runs_sql.TAG_RUNS, *((rollup_sql.PENDING,) if dialect == "sqlite" else ()))
    run_dims = (
        [str(r[0]) for r in execute(runs_sql.lacking_dims_sql(dialect, kept), ())] if has_ledger else []
    )
    for statement in rollup_sql.ddl(
        dialect,
        backfill=backfill,
        runs_backfill=runs_backfill,
        groups_backfill=groups_backfill,
        tags_backfill=tags_backfill,
        tag_runs_backfill=tag_runs_backfill,
        group_times=group_times,
        run_dims=run_dims,
        outcome_runs_backfill=outcome_runs_backfill,
    ):
        execute(statement, ())
    return frozenset(COLUMNS)


_ROLLUPS_SINCE: Final = 5
"""The schema version that brought the rollups: a ledger of an older one is rolled up by the migration."""

_RUNS_SINCE: Final = 6
"""The schema version that brought the per-run table (:mod:`.runs_sql`): filled from the ledger when older."""

_GROUPS_SINCE: Final = 8
"""The schema version that brought the per-(run, group) rows and the group totals (:mod:`.groups_sql`)."""
_TAGS_SINCE: Final = 9
"""The schema version that brought the kept tag keys and their groups (:mod:`.tags_sql`)."""
_TAG_RUNS_SINCE: Final = 10
"""The schema version that brought the per-run rows of each kept tag value (:mod:`.tag_runs_sql`)."""
_GROUP_TIMES_SINCE: Final = 11
"""The schema version that brought the times of the per-(run, group) rows (:data:`.groups_sql.TIMES`)."""
_OUTCOME_RUNS_SINCE: Final = 13
"""The schema version that brought each outcome's runs together (:mod:`.outcome_runs_sql`)."""
# Schema 12: each run's experience version in the per-run table (:data:`.runs_sql.RUN_ONLY_DIMS`); added
# where a table lacks it (:func:`.runs_sql.lacking_dims_sql`), whatever the version says.


_URL_PASSWORD: Final = re.compile(
    r"^(?P<head>[a-z+]+://[^/@:?#]*:)(?P<secret>[^@/?#]*)(?P<tail>@)", re.IGNORECASE
)
_KEYWORD_PASSWORD: Final = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^&#\s]+)", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: store URLs end up in logs and reports.

    Covers ``scheme://user:secret@host``, ``?password=secret`` and the keyword form
    ``password=secret`` (or ``password='se cret'``).
    """
    url = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", url, count=1)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", url)


def default_store_url() -> str:
    """``OTEL_USECASE_STORE``, else SQLite at ``$XDG_DATA_HOME/otel-usecase/costs.db``.

    ``XDG_DATA_HOME`` defaults to ``~/.local/share``. A value of
    ``OTEL_USECASE_STORE`` that is not a store URL (``mysql://...``,
    ``sqlite://costs.db``) is warned about, naming it and the accepted forms, and
    the default is used: this runs while ``opentelemetry-instrument`` configures
    the SDK, where an exception would switch every exporter off, not just ours.
    """
    configured = config.store_url()
    if configured:
        return configured
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return "sqlite:///" + str(Path(data_home) / "otel-usecase" / "costs.db")


def parse_store_url(url: str) -> tuple[str, str]:
    """Split a store URL into ``("sqlite", path)`` or ``("postgresql", conninfo)``.

    SQLite: ``sqlite:///relative/costs.db``, ``sqlite:////absolute/costs.db`` (as in
    SQLAlchemy), ``sqlite:///:memory:``, or a plain file path. PostgreSQL:
    ``postgresql://user:pass@host:port/db`` (``postgres://`` too).
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"store URL {url!r} is empty: use sqlite:///path/costs.db or postgresql://...")
    url = url.strip()
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return "postgresql", url.replace("postgresql+psycopg://", "postgresql://", 1)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or len(rest) < 2:
            raise StoreError(
                f"store URL {url!r} has no file path: use sqlite:///relative/costs.db "
                "or sqlite:////absolute/costs.db"
            )
        return "sqlite", rest[1:]
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"store URL {url!r} has an unknown scheme {scheme!r}: use sqlite:///path/costs.db "
            "or postgresql://user@host/db"
        )
    return "sqlite", url


# --- re-pricing (``otel-usecase reprice``) ---------------------------------------------------
# ``reprice`` reads the calls to re-price in key order (:func:`calls_to_reprice`) and each store writes
# their new price columns back only where the row is still the one read (``Store.reprice``).

PRICE_COLUMNS: Final[tuple[str, ...]] = (
    "cost_usd",
    "status",
    "cost_source",
    "price_source",
    "price_context",
    "unpriced_reason",
    "computed_cost_usd",
)
"""The columns re-pricing may change; every other column is what the span said and stays."""
assert set(PRICE_COLUMNS) <= set(COLUMNS)

_KEY_COLUMNS: Final = ("trace_id", "span_id")
_GUARDED: Final = tuple(c for c in COLUMNS if c not in _KEY_COLUMNS)


class RepriceFilter(NamedTuple):
    """Which stored calls ``otel-usecase reprice`` looks at."""

    since_ns: int | None = None
    """Only calls that started at or after this time (ns since the epoch)."""
    use_case: str | None = None
    """Only the calls of this use case."""
    only_unpriced: bool = False
    """Only calls stored ``unpriced`` (a model unknown when they were recorded, say)."""


class Repricing(NamedTuple):
    """One stored call and the same call with its price columns (:data:`PRICE_COLUMNS`) recomputed."""

    old: Call
    """The row as it was read: the update applies only while the row is still exactly this."""
    new: Call


TagValue = Callable[[str], tuple[str, Any]]
"""A store's SQL for the value of one tag in the ``tags`` column (its JSON): ``tag_value(key)`` is an
expression with one ``?`` placeholder and that placeholder's parameter (SQLite ``json_extract(tags, ?)``
with the JSON path of the key, PostgreSQL ``(tags::jsonb ->> ?)`` with the key). NULL when the call has
no such tag. Keys are names (the name rule), so a key never needs quoting inside a path."""


def filter_clauses(
    use_case: str | None,
    since_ns: int | None,
    *,
    user_id: str | None = None,
    experience_name: str | None = None,
    use_case_version: str | None = None,
    tags: Sequence[tuple[str, str]] = (),
    tag_value: TagValue | None = None,
    until_ns: int | None = None,
    use_cases: Sequence[str] | None = None,
) -> tuple[list[str], list[Any]]:
    """The ``WHERE`` conditions (``?`` placeholders) and parameters of the filters reports and ``reprice`` share.

    ``tags`` need the store's ``tag_value`` (its SQL dialect); a key that breaks the name
    rule is a ``ValueError`` naming it (the CLI checks keys before they get here). ``use_cases``: the
    allowed set (:attr:`ReportFilter.use_cases`; ``()``: a condition nothing meets). Every table read
    with these conditions has a ``use_case`` column, so this one condition scopes every read."""
    clauses: list[str] = []
    params: list[Any] = []
    if use_cases is not None:
        allowed = tuple(dict.fromkeys(use_cases))
        clauses.append(f"use_case IN ({', '.join('?' * len(allowed))})" if allowed else "1 = 0")
        params.extend(allowed)
    for column, value in (
        ("use_case", use_case),
        ("user_id", user_id),
        ("experience_name", experience_name),
        ("use_case_version", use_case_version),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since_ns is not None:
        clauses.append("start_ns >= ?")
        params.append(since_ns)
    if until_ns is not None:
        clauses.append("start_ns < ?")
        params.append(until_ns)
    if tags:
        if tag_value is None:
            raise ValueError("this query cannot filter by tag: no tag_value SQL given for its store")
        for key, value in tags:
            expression, param = tag_value(check_name("tag key", key))
            clauses.append(f"{expression} = ?")
            params.extend((param, value))
    return clauses, params


def calls_to_reprice(
    store: Store, filters: RepriceFilter, after: tuple[str, str] | None, limit: int
) -> list[Call]:
    """Up to ``limit`` stored calls matching ``filters`` whose key comes after ``after``, in key order.

    Through :meth:`Store.query`, so both stores read them the same way.
    """
    sql, params = reprice_select_sql(filters, after=after is not None)
    if after is not None:
        params.extend(after)
    params.append(limit)
    return [call_of(row) for row in store.query(sql, params)]


def reprice_select_sql(filters: RepriceFilter, *, after: bool) -> tuple[str, list[Any]]:
    """The query of the next batch of calls to re-price, ``?`` placeholders, and its filter parameters.

    Key order with a keyset (``(trace_id, span_id) > (?, ?)`` when ``after``; the
    caller appends the key and then the batch size to the parameters): each batch
    is one primary-key range scan however large the ledger, and rows that writers
    add meanwhile are neither skipped before the cursor nor read twice.
    """
    where, params = filter_clauses(filters.use_case, filters.since_ns)
    if filters.only_unpriced:
        where.append("status = 'unpriced'")
    if after:
        where.append("(trace_id, span_id) > (?, ?)")
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} {condition}ORDER BY trace_id, span_id LIMIT ?"
    return sql, params


def reprice_update_sql(placeholder: str, same: str) -> str:
    """The conditional update of one call's price columns.

    ``same`` is the dialect's NULL-safe equality (SQLite ``IS``, PostgreSQL ``IS
    NOT DISTINCT FROM``). The row is updated only while every column still holds
    the value read: a writer that replaced it meanwhile (a more complete copy of
    the call, a provider-billed figure) wins, and the update changes nothing.
    """
    sets = ", ".join(f"{c} = {placeholder}" for c in PRICE_COLUMNS)
    keys = " AND ".join(f"{c} = {placeholder}" for c in _KEY_COLUMNS)
    guard = " AND ".join(f"{c} {same} {placeholder}" for c in _GUARDED)
    return f"UPDATE {TABLE} SET {sets} WHERE {keys} AND {guard}"


_PRICE_INDEXES: Final = tuple(COLUMNS.index(c) for c in PRICE_COLUMNS)
_KEY_INDEXES: Final = tuple(COLUMNS.index(c) for c in _KEY_COLUMNS)
_GUARD_INDEXES: Final = tuple(COLUMNS.index(c) for c in _GUARDED)


def reprice_update_params(change: Repricing) -> tuple[Any, ...]:
    """The parameters of :func:`reprice_update_sql` for ``change``."""
    old = row_of(change.old)
    new = row_of(change.new)
    return (
        *(new[i] for i in _PRICE_INDEXES),
        *(old[i] for i in _KEY_INDEXES),
        *(old[i] for i in _GUARD_INDEXES),
    )
