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

import math
import os
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

from .. import config
from ..cost import token_classes
from ..cost.call import Call
from ..cost.dedup import completeness_sql as _completeness
from ..cost.usage import MAX_TOKEN_COUNT

__all__ = [
    "COLUMNS",
    "LEDGER",
    "META_TABLE",
    "SCHEMA_VERSION",
    "TOKEN_COLUMNS",
    "UPGRADES",
    "RejectedCall",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Unstorable",
    "broken_rule",
    "create_statements",
    "default_store_url",
    "missing_column_statements",
    "one_line",
    "open_store",
    "parse_store_url",
    "plausible",
    "redact_url",
    "register_fork_hooks",
    "row_of",
    "upgrade_statements",
    "write_isolating",
]

SCHEMA_VERSION: Final = 3
"""1: the first ledger. 2: ``start_ns`` in the covering index, no ``(use_case, start_ns)`` index.
3: the cost engine v2 columns (cost source, price context, unpriced reason, our price beside a billed one)
and one column per token class of :mod:`otel_usecase.cost.token_classes`."""
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
)

TOKEN_COLUMNS: Final[tuple[str, ...]] = token_classes.COLUMNS
"""One column per token class, in table order (``input_tokens``, ``output_tokens``, ``cache_read_tokens`` ...)."""
_KNOWN_OR_NULL: Final = frozenset((token_classes.INPUT.column, token_classes.OUTPUT.column))
"""Input and output counts may be unknown (NULL, never 0); a part that is absent is 0."""

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

_PART_NAMES: Final = tuple(c.name for c in token_classes.TOKEN_CLASSES[2:])
assert (
    token_classes.TOKEN_CLASSES[0] is token_classes.INPUT
    and token_classes.TOKEN_CLASSES[1] is token_classes.OUTPUT
)


def row_of(call: Call) -> tuple[Any, ...]:
    """The ledger row of ``call``, in :data:`COLUMNS` order, read from the call by field name.

    Written out (not generated) because it runs once per stored call;
    ``tests/test_store.py`` checks it column by column against :data:`COLUMNS`.
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
    )


def create_statements(types: dict[str, str]) -> tuple[str, ...]:
    """``CREATE TABLE IF NOT EXISTS`` for the meta table and the ledger, with a store's column types."""
    columns = ",\n    ".join(
        f"{name} {types[kind]} {constraint}".rstrip() for name, kind, constraint in LEDGER
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {columns},\n    PRIMARY KEY (trace_id, span_id)\n)",
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


class Store(Protocol):
    """What the exporter, the receiver and the reports need of a store."""

    url: str

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``: lets a report use SQL one of them has and the other lacks."""

    def write(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """Write ``calls``; idempotent per (trace id, span id).

        Returns the calls the store could not take because of their own data
        (each with its reason); every other call of the batch is written. Raises
        :class:`StoreUnavailable` when the store cannot take writes now (locked,
        down, read-only, disk full): then nothing of the batch is written.
        """

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``?`` placeholders."""

    def close(self) -> None:
        """Release connections."""


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
    values = ", ".join([row] * rows)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _REPLACED_ON_BETTER_COPY)
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES {values} "
        f"ON CONFLICT (trace_id, span_id) DO UPDATE SET {updates} "
        f"WHERE {_completeness(TABLE)} < {_completeness('excluded')}"
    )


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
    # index in order and never the table. Also finds one run. It is the only index
    # besides the primary key: each one more costs every write (about 1.2 us per row
    # in SQLite), and a filtered report scanning this index takes well under a second
    # at a million rows.
    (
        f"CREATE INDEX IF NOT EXISTS {TABLE}_run_totals ON {TABLE} "
        "(run_id, use_case, input_tokens, output_tokens, cache_read_tokens, reasoning_tokens, cost_usd, status, "
        "start_ns)"
    ),
)

UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: the covering index gains start_ns (a --since report read the table for
    # every row: 2.4 s instead of 0.9 s at 1M rows); the (use_case, start_ns) index goes.
    1: (f"DROP INDEX IF EXISTS {TABLE}_use_case", f"DROP INDEX IF EXISTS {TABLE}_run_totals"),
}
"""Statements taking a store from schema version N to N + 1, run before ``INDEXES``.

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


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open (and create on first use) the store at ``url`` (default: :func:`default_store_url`).

    ``create=False`` is for commands that only read (reports): a store that does not
    exist, or has no ledger table, raises :class:`StoreError` naming the URL instead of
    being created empty (a mistyped URL must not read as "no calls recorded").
    """
    kind, target = parse_store_url(url if url is not None else default_store_url())
    if kind == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(target, create=create)
    from .sqlite import SQLiteStore

    return SQLiteStore(target, create=create)
