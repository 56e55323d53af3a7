"""The shared store: one PostgreSQL database for many processes on many hosts.

SQLite is enough on one host; when exporters on several hosts (or an OTLP
receiver behind a load balancer) feed one ledger, they share a PostgreSQL
database instead. The ledger, its key and its idempotent upsert are the same as
SQLite's (:mod:`otel_usecase.store.base`), so reports and de-duplication behave
identically on both stores.

Why it is built this way:

* **Concurrent first use.** Several processes starting at once all try to create
  the schema; ``CREATE TABLE IF NOT EXISTS`` alone races in PostgreSQL (duplicate
  catalog rows), so the creation runs in one transaction serialised by a
  transaction-scoped advisory lock.
* **No deadlocks between writers.** Two transactions upserting overlapping keys
  in different orders can deadlock; every batch is written in key order, so all
  writers take row locks in the same order. A deadlock or serialisation failure
  that still happens rolls the whole batch back, and the batch is retried (the
  upsert is idempotent, so a retry can never count a call twice).
* **Fast batches.** ``executemany`` pipelines the rows (libpq pipeline mode),
  so a batch costs about one network round trip, not one per call.
* **Outages are the caller's to buffer.** A down, restarted or read-only server
  (a standby after a failover) makes a call raise
  :class:`~otel_usecase.store.StoreUnavailable` quickly instead of hanging the
  application; the exporter keeps the calls and retries, ``serve`` answers 503
  with ``Retry-After``, and the next call reconnects. Which server errors mean
  "unavailable", which "this data cannot be stored" and which "misconfigured"
  is decided by SQLSTATE class in one place, :func:`classify`. The bounds: a
  connection is given up after :data:`CONNECT_TIMEOUT_S` (also when the server
  accepts TCP and never answers), a write waits at most
  :data:`_LOCK_TIMEOUT_MS` for a lock and runs at most
  :data:`_STATEMENT_TIMEOUT_MS` per statement, sent data left unacknowledged
  for :data:`_TCP_USER_TIMEOUT_MS` (a vanished host) breaks the connection, and a
  server that stops answering mid-write (frozen, yet acknowledging TCP) has the
  connection cut after :data:`_WRITE_DEADLINE_S`.
* **One bad call never blocks the others.** A value the server refuses
  (SQLSTATE classes 22 and 23, or one psycopg cannot send) makes the batch
  fail; :func:`~otel_usecase.store.base.write_isolating` finds the calls
  responsible, writes the rest and returns them with the reason.
* **Same Python values as SQLite.** ``SUM`` of integer columns is ``numeric`` in
  PostgreSQL; those values are returned as ``int`` (or ``float`` when
  fractional) rather than ``Decimal``, so report code works on either store.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..cost.call import Call
from . import alert_sql, groups_sql, outcome_runs_sql, postgres_reports, tags_sql, totals
from .base import (
    COLUMNS,
    LEDGER,
    META_TABLE,
    TABLE,
    RejectedCall,
    ReportFilter,
    StoreError,
    StoreUnavailable,
    Unstorable,
    call_of,
    classes_to_mark,
    mark_params,
    mark_sql,
    migrate,
    one_line,
    plausible,
    redact_url,
    register_fork_hooks,
    row_of,
    upsert_rows_sql,
    write_isolating,
)
from .readers import Readers
from .rollup_sql import HOUR_ROLLUP, RUN_ROLLUP, ViewSQL
from .runs_sql import RUNS, lacking_dims_sql
from .tag_runs_sql import TAG_RUNS

if TYPE_CHECKING:
    from types import ModuleType

    import psycopg

    from .base import Repricing, Store, Transaction
    from .budget_sql import SpendQuery, SpendSnapshot
    from .outcome_sql import Outcome, RejectedOutcome

__all__ = ["CONNECT_TIMEOUT_S", "QUERY_WORK_MEM", "PostgresStore", "classify", "translate_placeholders"]

QUERY_WORK_MEM: Final = "64MB"
"""``work_mem`` for report queries (per query, in their own read-only transaction)."""

CONNECT_TIMEOUT_S: Final = 5
"""Seconds to wait for a connection (libpq ``connect_timeout``) unless the URL sets one."""

_TCP_USER_TIMEOUT_MS: Final = 30_000
"""Give up on a connection whose sent data stays unacknowledged this long (a vanished host)."""

_LOCK_TIMEOUT_MS: Final = 5_000
"""How long a write waits for row or table locks before reporting the store unavailable.

The equivalent of SQLite's busy timeout: a long-running ``LOCK TABLE`` or
``VACUUM FULL`` makes writes fail and be buffered, never hang the exporter.
"""

_ADVISORY_LOCK_KEY: Final = 0x6F74_656C_7573_6563
"""``pg_advisory_xact_lock`` key serialising schema creation ("otelusec" in ASCII)."""

_STATEMENT_TIMEOUT_MS: Final = 15_000
"""The longest one statement of a write may run (a row's upsert takes well under a millisecond)."""

_WRITE_DEADLINE_S: Final = 20.0
"""The longest a write waits for the server whatever it does, plus :data:`_WRITE_DEADLINE_PER_ROW_S`.

The server-side timeouts need a server that runs; a frozen one (a stopped process,
a paused VM) still acknowledges TCP, so neither they nor the TCP user timeout end
the wait. Past this deadline the connection's socket is shut down from another
thread: the write fails as unavailable, and the next one connects afresh."""
_WRITE_DEADLINE_PER_ROW_S: Final = 0.001

_ROLLBACK_RETRIES: Final = 8
"""Attempts at a batch rolled back by a deadlock or serialisation failure. An upsert runs an insert and an
update trigger, each in key order, so two writers replacing stored copies can still meet in a deadlock;
with three attempts, four concurrent writers of the same runs gave up on a batch in about one run in ten
of ``test_four_concurrent_writers_count_every_call_once`` (the exporter would have kept it and tried
again). The waits between attempts grow and are spread at random, so that the same writers do not meet
again at once."""

_TYPES: Final = {"text": "TEXT", "int": "BIGINT", "real": "DOUBLE PRECISION", "flag": "SMALLINT"}

_WRITE_LIMITS: Final = (
    f"SELECT set_config('lock_timeout', '{_LOCK_TIMEOUT_MS}', true), "
    f"set_config('statement_timeout', '{_STATEMENT_TIMEOUT_MS}', true)"
)
"""The limits of one write transaction, set for it alone (``SET LOCAL``) in one round trip."""

_INSTALL_HINT: Final = "pip install 'otel-usecase[postgres]'"

_INHERITED: list[Any] = []
"""Connections a forked child inherited: kept, never used, never closed (see ``_after_fork_in_child``)."""

_T = TypeVar("_T")


def _psycopg() -> ModuleType:
    """Import psycopg on first use, so SQLite users never need it installed."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(f"a postgresql:// store needs psycopg 3 ({exc}): {_INSTALL_HINT}") from exc
    return psycopg


# --- placeholders --------------------------------------------------------------------------

_DOLLAR_TAG: Final = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT_CHAR: Final = re.compile(r"[A-Za-z0-9_$]")


@lru_cache(maxsize=256)
def translate_placeholders(sql: str) -> str:
    """Turn a ``?``-placeholder query (the SQLite style reports use) into psycopg's ``%s`` style.

    Every ``?`` outside string literals, quoted identifiers, dollar-quoted strings
    and comments becomes ``%s``; every ``%`` anywhere becomes ``%%``, because
    psycopg reads ``%`` as the start of a placeholder even inside a literal. So
    ``LIKE 'a%'`` and ``'?'`` survive as written. (The PostgreSQL jsonb operators
    ``?``, ``?|`` and ``?&`` cannot be written in such a query; none is needed.)
    """
    out: list[str] = []
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        elif ch == "'":
            # E'...' strings treat backslash as an escape; standard strings only ''.
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR.match(sql[i - 2]))
            end = _literal_end(sql, i, "'", backslash=escapes)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == '"':
            end = _literal_end(sql, i, '"', backslash=False)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "-" and sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline + 1
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "/" and sql.startswith("/*", i):
            end = _block_comment_end(sql, i)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "$" and (i == 0 or not _IDENT_CHAR.match(sql[i - 1])):
            tag = _DOLLAR_TAG.match(sql, i)
            if tag is None:
                out.append(ch)
                i += 1
                continue
            close = sql.find(tag.group(), tag.end())
            end = n if close < 0 else close + len(tag.group())
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _literal_end(sql: str, start: int, quote: str, *, backslash: bool) -> int:
    """Index just past the quoted token opening at ``start`` (or the end of an unterminated one)."""
    i = start + 1
    n = len(sql)
    while i < n:
        ch = sql[i]
        if backslash and ch == "\\":
            i += 2
        elif ch == quote:
            if i + 1 < n and sql[i + 1] == quote:  # doubled quote: an escaped quote
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _block_comment_end(sql: str, start: int) -> int:
    """Index just past the (possibly nested, as PostgreSQL allows) block comment at ``start``."""
    depth = 0
    i = start
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


# --- URLs and values -----------------------------------------------------------------------


def _clean(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with NUL characters in text replaced by U+FFFD.

    PostgreSQL text cannot hold NUL (SQLite can); span attributes are untrusted
    input, and one such value must not make a batch fail on every retry.
    """
    if not any(isinstance(v, str) and "\x00" in v for v in row):
        return row
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)


def _key(row: tuple[Any, ...]) -> tuple[str, str]:
    return row[0], row[1]


_BATCH_UPSERT: Final = upsert_rows_sql(
    "SELECT * FROM unnest(" + ", ".join(f"%s::{_TYPES[kind]}[]" for _, kind, _ in LEDGER) + ")"
)
"""A whole batch in one statement: one array parameter per ledger column."""


def _most_complete(calls: Sequence[Call]) -> Sequence[Call]:
    """``calls`` with one copy per (trace id, span id): the most complete, the first of equals."""
    if len({(c.trace_id, c.span_id) for c in calls}) == len(calls):
        return calls
    from ..cost.dedup import completeness

    kept: dict[tuple[str, str], Call] = {}
    for call in calls:
        key = (call.trace_id, call.span_id)
        held = kept.get(key)
        if held is None or completeness(held) < completeness(call):
            kept[key] = call
    return list(kept.values())


@lru_cache(maxsize=1)
def _number_loader() -> type[Any]:
    """A loader giving ``numeric`` results as ``int`` (or ``float``), as SQLite's sums are."""
    from psycopg.adapt import Loader

    class NumberLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data)
            try:
                return int(text)
            except ValueError:
                return float(text)

    return NumberLoader


# --- what a server error means --------------------------------------------------------------

UNAVAILABLE: Final = "unavailable"
"""Retry later: the server cannot take writes now (the caller buffers; ``serve`` answers 503)."""
RETRY: Final = "retry"
"""Rolled back by a deadlock or serialisation failure: run the transaction again at once."""
BAD_DATA: Final = "bad data"
"""The server refused a value of the batch: find the call responsible, write the others."""
MISCONFIGURED: Final = "misconfigured"
"""Anything else (a missing privilege, a changed table): retrying will not help."""

_CLASSES: Final[dict[str, str]] = {
    "08": UNAVAILABLE,  # connection exception
    "25": UNAVAILABLE,  # invalid transaction state: 25006 read-only (a standby, default_transaction_read_only),
    #                     25P03 idle-in-transaction timeout; this module never misuses transactions itself
    "40": RETRY,  # transaction rollback: deadlock, serialization failure
    "53": UNAVAILABLE,  # insufficient resources: disk full, out of memory, too many connections
    "55": UNAVAILABLE,  # object not in prerequisite state: 55P03 lock_timeout
    "57": UNAVAILABLE,  # operator intervention: shutdown, cannot connect now, 57014 statement_timeout
    "58": UNAVAILABLE,  # system error: I/O error
    "22": BAD_DATA,  # data exception: a value out of range, an untranslatable character
    "23": BAD_DATA,  # integrity constraint violation: NULL in a NOT NULL column
}
"""What each SQLSTATE class means for a write (the first two characters of the code)."""


def classify(exc: BaseException) -> str:
    """What a psycopg error means for the store: :data:`UNAVAILABLE`, :data:`RETRY`, :data:`BAD_DATA`, :data:`MISCONFIGURED`.

    Decided by SQLSTATE class (:data:`_CLASSES`). An error with no SQLSTATE is
    the client's: a lost or failed connection is unavailable; a value psycopg
    cannot send (an ``int`` beyond int64, text with a lone surrogate) is bad data.
    """
    pg = _psycopg()
    if isinstance(exc, (OverflowError, UnicodeEncodeError, pg.DataError)) and not getattr(
        exc, "sqlstate", None
    ):
        return BAD_DATA
    if not isinstance(exc, pg.Error):
        return MISCONFIGURED
    state = exc.sqlstate
    if state:
        return _CLASSES.get(state[:2], MISCONFIGURED)
    if isinstance(exc, (pg.OperationalError, pg.InterfaceError)):
        return UNAVAILABLE
    return MISCONFIGURED


# --- the store -----------------------------------------------------------------------------


class PostgresStore:
    """A :class:`~otel_usecase.store.Store` in a PostgreSQL database (psycopg 3).

    ``conninfo`` is a libpq URL (``postgresql://user:pass@host:5432/db``) or
    keyword string. Unless it says otherwise, connections use a
    :data:`CONNECT_TIMEOUT_S` connect timeout, a TCP user timeout and
    ``application_name=otel-usecase``. The schema is created on construction if
    missing; a schema newer than this version of otel-usecase raises
    :class:`~otel_usecase.store.StoreError`; an unreachable server raises
    :class:`~otel_usecase.store.StoreUnavailable`.

    One connection, guarded by a lock, serves all threads: writes are short
    batched transactions and reports are occasional, so a pool would add a
    dependency and connections for no throughput. A dashboard page's panels
    read at the same time on a reader's connection too (:meth:`read_together`,
    :mod:`.readers`), opened on first use. The connection is re-opened
    after the server restarts, and after a ``fork`` (a child never uses, nor
    closes, its parent's socket).
    """

    def __init__(
        self, conninfo: str, *, connect_timeout: float = CONNECT_TIMEOUT_S, create: bool = True
    ) -> None:
        self._psycopg = _psycopg()
        self._conninfo = conninfo
        self.url = redact_url(conninfo)
        """The store URL without its password (it is printed in logs and reports)."""
        self._connect_options = self._defaults(conninfo, connect_timeout)
        self._readers = Readers(
            lambda: PostgresStore(conninfo, connect_timeout=connect_timeout, create=False)
        )
        """Read-only stores of the database for :meth:`read_together`, each with its own connection."""
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._closed = False
        self._create = create
        self._columns: frozenset[str] = frozenset(COLUMNS)
        """The ledger's columns (fewer for a reader of an older ledger, see :func:`.base.migrate`)."""
        self._marked: set[str] = set()
        """Token classes this store's writes have marked since it connected (:func:`.base.classes_to_mark`)."""
        self._rollups = False
        self._groups = False
        """Whether the database has the rollups (:mod:`.rollup_sql`; a reader of an older ledger has not)."""
        self._group_times = False
        """Whether the per-(run, group) rows have their times (schema 11: :data:`.groups_sql.TIMES`)."""
        self._run_only_dims = False
        self._outcome_runs = False
        """Whether the per-run table has each run's experience version (schema 12)."""
        self._tag_keys: frozenset[str] = frozenset()
        """The kept tag keys (:mod:`.tags_sql`) as last read: a write bringing another one registers it."""
        self._tags_tried: set[str] = set()
        """Tag keys a write of this store tried to register (kept or refused): not tried again."""
        register_fork_hooks(self, after_in_child=PostgresStore._after_fork_in_child)
        with self._lock:
            self._columns = self._run("open", self._migrate)

    def _after_fork_in_child(self) -> None:
        """Forget the parent's connection and lock; the next call connects afresh.

        The lock may have been held by a thread of the parent that does not exist
        here. The parent's connection is neither used nor closed: closing would
        send the server a Terminate message on the parent's session. It is kept
        referenced so that garbage collection does not close it either.
        """
        self._lock = threading.Lock()
        if self._conn is not None:
            _INHERITED.append(self._conn)
        self._conn = None

    def _defaults(self, conninfo: str, connect_timeout: float) -> dict[str, Any]:
        """Connection options the URL does not set itself."""
        try:
            given = self._psycopg.conninfo.conninfo_to_dict(conninfo)
        except self._psycopg.ProgrammingError as exc:
            raise StoreError(f"PostgreSQL store URL {self.url!r} is not valid: {exc}") from exc
        defaults: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout)),
            "tcp_user_timeout": _TCP_USER_TIMEOUT_MS,
            "application_name": "otel-usecase",
        }
        return {k: v for k, v in defaults.items() if k not in given}

    # connections

    def _connect(self) -> psycopg.Connection[Any]:
        pg = self._psycopg
        conn: psycopg.Connection[Any] = pg.Connection.connect(
            self._conninfo, autocommit=True, **self._connect_options
        )
        # One parameter type per column whatever the value, so the upsert is
        # prepared once per batch shape, not once per combination of int sizes.
        conn.adapters.register_dumper(int, pg.types.numeric.Int8BinaryDumper)
        conn.adapters.register_loader("numeric", _number_loader())
        return conn

    def _connection(self) -> tuple[psycopg.Connection[Any], bool]:
        """The open connection, and whether it was just made (so a failure is not a stale socket)."""
        if self._closed:
            raise StoreError(f"PostgreSQL store {self.url} is closed")
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken or self._pid != os.getpid()):
            self._discard()
            conn = None
        if conn is not None:
            return conn, False
        try:
            conn = self._connect()
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {self.url}: {one_line(exc)}") from exc
        self._conn = conn
        self._pid = os.getpid()
        self._marked = set()  # a new connection (a failover, a fork) checks its marks afresh
        return conn, True

    def _discard(self) -> None:
        """Forget the connection; close it only if this process opened it."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                conn.close()

    def _run(self, what: str, op: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``op`` (idempotent, in its own transaction) with reconnects and rollback retries.

        A failure on a connection that was already open may only mean the server
        restarted since the last call: reconnect and try once more. A deadlock or
        serialisation failure rolled everything back: try again. Then, by
        :func:`classify`: :class:`StoreUnavailable` (the caller retries later),
        :class:`~otel_usecase.store.base.Unstorable` (a value of the batch was
        refused) or :class:`StoreError` (retrying cannot help). Must be called
        with the lock held.
        """
        pg = self._psycopg
        reconnected = False
        rollbacks = 0
        while True:
            conn, fresh = self._connection()
            try:
                return op(conn)
            except StoreError:
                raise
            except (pg.Error, OverflowError, UnicodeEncodeError) as exc:
                meaning = classify(exc)
                if meaning == RETRY:
                    rollbacks += 1
                    if rollbacks < _ROLLBACK_RETRIES:
                        time.sleep(random.uniform(0.005, 0.02) * rollbacks)
                        continue
                    raise StoreUnavailable(
                        f"PostgreSQL store {self.url}: {what} kept being rolled back: {one_line(exc)}"
                    ) from exc
                if conn.closed or conn.broken:
                    self._discard()
                    if not fresh and not reconnected and meaning == UNAVAILABLE:
                        reconnected = True
                        continue
                if meaning == UNAVAILABLE:
                    raise StoreUnavailable(
                        f"PostgreSQL store {self.url} is unavailable ({what}): {one_line(exc)}"
                    ) from exc
                if meaning == BAD_DATA:
                    raise Unstorable(one_line(exc)) from exc
                raise StoreError(f"PostgreSQL store {self.url}: {what} failed: {one_line(exc)}") from exc

    # schema

    def _migrate(self, conn: psycopg.Connection[Any]) -> frozenset[str]:
        """Create or upgrade the schema (:func:`.base.migrate`) under an advisory lock, so concurrent
        first uses queue; the ledger's columns."""
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            cur.execute(f"SELECT to_regclass('{META_TABLE}') IS NOT NULL, to_regclass('{TABLE}') IS NOT NULL")
            found = cur.fetchone()
            has_meta, has_ledger = found if found is not None else (False, False)

            def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                cur.execute(translate_placeholders(sql), tuple(params))
                return cur.fetchall() if cur.description is not None else []

            columns = migrate(
                execute,
                tables={name for name, there in ((META_TABLE, has_meta), (TABLE, has_ledger)) if there},
                columns=lambda: [
                    row[0]
                    for row in execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                        "AND table_schema = current_schema()",
                        (TABLE,),
                    )
                ],
                types=_TYPES,
                create=self._create,
                store=f"PostgreSQL store {self.url}",
                dialect="postgresql",
            )
            cur.execute(f"SELECT to_regclass('{RUNS}') IS NOT NULL")  # the last of the rollups (schema 6)
            rolled = cur.fetchone()
            self._rollups = bool(rolled and rolled[0])
            cur.execute(f"SELECT to_regclass('{groups_sql.TOTALS}') IS NOT NULL")  # schema 8
            grouped = cur.fetchone()
            self._groups = bool(grouped and grouped[0])
            cur.execute(groups_sql.has_times_sql("postgresql"))
            self._group_times = cur.fetchone() is not None  # schema 11
            cur.execute(lacking_dims_sql("postgresql", (RUNS,)))
            self._run_only_dims = self._rollups and not cur.fetchall()  # schema 12
            copies = outcome_runs_sql.OUTCOME_RUNS  # schema 13, and readable by this role
            cur.execute(
                f"SELECT CASE WHEN to_regclass('{copies}') IS NULL THEN false "
                f"ELSE has_table_privilege('{copies}', 'SELECT') END"
            )
            copied = cur.fetchone()
            self._outcome_runs = bool(copied and copied[0])
            self._tag_keys = self._read_tag_keys(cur)
            return columns

    @staticmethod
    def _read_tag_keys(cur: psycopg.Cursor[Any]) -> frozenset[str]:
        # schema 10, and readable by this role (one that may not read them reads the ledger's tags)
        readable = " AND ".join(
            f"has_table_privilege('{t}', 'SELECT')" for t in (tags_sql.TAG_KEYS, TAG_RUNS)
        )
        cur.execute(
            f"SELECT CASE WHEN to_regclass('{tags_sql.TAG_KEYS}') IS NULL OR to_regclass('{TAG_RUNS}') IS NULL "
            f"THEN false ELSE {readable} END"
        )
        there = cur.fetchone()
        if not (there and there[0]):
            return frozenset()
        cur.execute(tags_sql.keys_sql())
        return frozenset(str(row[0]) for row in cur.fetchall())

    # the Store protocol

    def write(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """Upsert ``calls``; idempotent per (trace id, span id).

        Calls the server refuses are returned with the reason, the rest written
        (:func:`~otel_usecase.store.base.write_isolating`). Raises
        :class:`StoreUnavailable` if the server cannot take the batch now
        (down, read-only, locked, out of disk); nothing of the batch is then written.
        """
        if not calls:
            return []
        with self._lock:
            return write_isolating(calls, self._write_batch)

    def _write_batch(self, calls: Sequence[Call]) -> None:
        """Upsert ``calls`` in one statement, in key order (see the module docstring: no deadlocks).

        One ``INSERT ... SELECT * FROM unnest(<one array per column>)``: the rollup triggers
        (:mod:`.rollup_sql`) then run once per batch, not once per call. A statement may not
        update one row twice, so of several copies of one call in a batch only the most complete
        (the first of equals) is sent, which is what upserting them one by one would have kept.
        """
        rows = sorted((_clean(row_of(c)) for c in _most_complete(calls)), key=_key)
        flat = tuple(chain.from_iterable(rows))
        if not plausible(flat):
            raise Unstorable("a token count or cost out of the ledger's range")
        # The first rows of a class carry its mark, in their transaction (see .base.mark_sql); marks
        # go first, in one order, so concurrent writers of the same new class never deadlock.
        marks = sorted(classes_to_mark(flat, self._marked))
        marking = (mark_sql("%s", len(marks)), mark_params(marks)) if marks else None
        # Tag keys not kept yet are registered first, in this transaction (.tags_sql: the lock orders it).
        new_keys = sorted({k for c in calls for k in c.tags} - self._tag_keys - self._tags_tried)
        if len(self._tag_keys) >= tags_sql.KEPT_TAG_KEYS or not self._groups:
            new_keys = []
        registered: list[frozenset[str]] = []

        deadline = _WRITE_DEADLINE_S + _WRITE_DEADLINE_PER_ROW_S * len(rows)

        def upsert(conn: psycopg.Connection[Any]) -> None:
            watchdog = threading.Timer(deadline, _cut, (conn,))
            watchdog.daemon = True
            watchdog.start()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(_WRITE_LIMITS)
                    if new_keys:
                        cur.execute(tags_sql.pg_exclusive_lock())
                        cur.execute(tags_sql.pg_register(), (new_keys,))
                        for statement in groups_sql.pg_register():
                            cur.execute(statement)
                        registered.append(self._read_tag_keys(cur))
                    if marking is not None:
                        cur.execute(*marking)
                    cur.execute(_BATCH_UPSERT, [list(column) for column in zip(*rows)])
            finally:
                watchdog.cancel()

        self._run(f"writing {len(rows)} calls", upsert)
        self._marked.update(marks)  # only once committed: a rolled-back mark is written again
        if registered:
            self._tag_keys = registered[-1]
            self._tags_tried.update(new_keys)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``?`` placeholders (see :func:`translate_placeholders`)."""
        statement = translate_placeholders(sql)
        args = tuple(params)
        ledger_report = not any(table in sql for table in (RUN_ROLLUP, HOUR_ROLLUP, RUNS, TAG_RUNS))

        def select(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            with conn.transaction(), conn.cursor() as cur:
                if ledger_report:  # the rollups are small tables the planner plans well as they are
                    _tune_report(cur)
                else:
                    cur.execute("SET LOCAL jit = off")
                cur.execute(statement, args)
                return cur.fetchall() if cur.description is not None else []

        with self._lock:
            return self._run("query", select)

    def query_together(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run read-only queries at the same time, each on a connection of its own, all on one snapshot.

        For a report whose work splits into independent parts: the server runs
        the parts on as many cores. The first query runs on the store's
        connection in a ``REPEATABLE READ`` transaction whose snapshot the others
        import (``pg_export_snapshot``, as parallel ``pg_dump`` does), so together
        they read exactly the rows one query would have, even while exporters
        write. A part whose connection cannot be opened (``max_connections``
        reached, say) runs on the first connection afterwards, in the same snapshot.
        """
        statements = [(translate_placeholders(sql), tuple(params)) for sql, params in queries]
        if len(statements) <= 1:
            return [self.query(sql, params) for sql, params in queries]
        pg = self._psycopg

        def together(conn: psycopg.Connection[Any]) -> list[list[tuple[Any, ...]]]:
            results: list[list[tuple[Any, ...]] | None] = [None] * len(statements)
            failures: list[BaseException] = []
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SELECT pg_export_snapshot()")
                exported = cur.fetchone()
                snapshot = str(exported[0]) if exported is not None else ""

                def part(i: int) -> None:
                    try:
                        other = self._connect()
                    except pg.OperationalError:
                        return  # left to the first connection, below
                    try:
                        with other, other.transaction(), other.cursor() as helper:
                            helper.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                            helper.execute(pg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(snapshot))
                            _tune_report(helper)
                            helper.execute(statements[i][0], statements[i][1])
                            results[i] = helper.fetchall()
                    except BaseException as exc:  # re-raised on the caller's thread
                        failures.append(exc)

                threads = [
                    threading.Thread(target=part, args=(i,), name="otel-usecase-report-part", daemon=True)
                    for i in range(1, len(statements))
                ]
                for thread in threads:
                    thread.start()
                try:
                    _tune_report(cur)
                    cur.execute(*statements[0])
                    results[0] = cur.fetchall()
                finally:  # the parts read this transaction's snapshot: it stays open until they are done
                    for thread in threads:
                        thread.join()
                if failures:
                    raise failures[0]
                for i, done in enumerate(results):
                    if done is None:
                        cur.execute(*statements[i])
                        results[i] = cur.fetchall()
            return [done or [] for done in results]

        with self._lock:
            return self._run("query", together)

    # report primitives (see Store)

    def run_totals(self, keys: Sequence[str], filters: ReportFilter) -> list[tuple[Any, ...]]:
        return totals.with_summed(
            self.query,
            self._columns,
            lambda summed: self.query(
                *totals.run_totals_sql(
                    keys,
                    filters,
                    postgres_reports.TOKEN_SUM,
                    summed,
                    tag_value=postgres_reports.tag_value(summed),
                    rollups="postgresql" if self._rollups else None,
                )
            ),
        )

    def group_totals(self, keys: Sequence[str], filters: ReportFilter) -> list[tuple[Any, ...]]:
        return totals.with_summed(
            self.query,
            self._columns,
            lambda summed: postgres_reports.group_totals(
                self.query, keys, filters, summed, rollups=self._rollups
            ),
        )

    def runs_json(self, filters: ReportFilter) -> str | None:
        return totals.with_summed(
            self.query,
            self._columns,
            lambda summed: postgres_reports.runs_json(
                self.query,
                self.query_together,
                filters,
                summed,
                split_from_pages=postgres_reports.SPLIT_FROM_PAGES,
            ),
        )

    def run_calls(self, run_id: str) -> list[Call]:
        return [call_of(row) for row in self.query(*totals.run_calls_sql(run_id, self._columns))]

    def view_sql(self) -> ViewSQL:
        kept = self._tag_keys_now()
        tag_value = postgres_reports.tag_value(self._columns)
        return ViewSQL(
            "postgresql",
            postgres_reports.TOKEN_SUM,
            self._columns,
            self._rollups,
            tags_sql.KeptTagValue(tag_value, kept) if kept else tag_value,
            groups=self._groups,
            tag_keys=kept,
            group_times=self._group_times,
            run_only_dims=self._run_only_dims,
            outcome_runs=self._outcome_runs,
        )

    def _tag_keys_now(self) -> frozenset[str]:
        """The kept tag keys as the database has them now (another process may have added one)."""
        if not self._groups:
            return frozenset()

        def read(conn: psycopg.Connection[Any]) -> frozenset[str]:
            with conn.transaction(), conn.cursor() as cur:
                return self._read_tag_keys(cur)

        with self._lock:
            try:
                self._tag_keys = self._run("reading the kept tag keys", read)
            except StoreError:  # a role that may not read them: its views read the ledger's tags
                return frozenset()
        return self._tag_keys

    def read_together(self, reads: Sequence[Callable[[Store], _T]]) -> list[_T]:
        return self._readers.run(self, reads)

    def close(self) -> None:
        """Close the connection (and the readers'); later calls raise :class:`StoreError`. Safe to call
        twice."""
        self._readers.close()
        with self._lock:
            self._closed = True
            self._discard()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # re-pricing (otel-usecase reprice); imports kept here so this block stands alone

    def reprice(self, changes: Sequence[Repricing]) -> list[Repricing]:
        """Update the price columns of ``changes`` in one transaction, each only while its row is unchanged.

        In key order, like every write (no deadlock with an exporter's batch), under
        the same lock and statement timeouts, pipelined (``executemany``); a batch
        rolled back by a deadlock is run again, which the per-row condition makes
        harmless. Returns the changes applied: those whose row was still the one read.
        """
        from .base import reprice_update_params, reprice_update_sql

        if not changes:
            return []
        sql = reprice_update_sql("%s", "IS NOT DISTINCT FROM") + " RETURNING trace_id, span_id"
        ordered = sorted(changes, key=lambda change: (change.old.trace_id, change.old.span_id))
        params = [_clean(reprice_update_params(change)) for change in ordered]

        def update(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
            updated: set[tuple[str, str]] = set()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_WRITE_LIMITS)
                cur.executemany(sql, params, returning=True)
                while True:
                    updated.update((row[0], row[1]) for row in cur.fetchall())
                    if not cur.nextset():
                        break
            return updated

        with self._lock:
            keys = self._run(f"re-pricing {len(params)} calls", update)
        return [change for change in ordered if (change.old.trace_id, change.old.span_id) in keys]

    # --- alerts ---
    # The claims of budget alerts (store/alert_sql.py: the table, the SQL and why it is safe across processes).

    _ALERT_SQL: Final = alert_sql.AlertSQL(
        *(
            translate_placeholders(sql)
            for sql in alert_sql.alert_sql(
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000000 AS BIGINT)"
            )
        )
    )
    """The clock is the server's: processes on hosts whose clocks disagree still agree on a lease's age."""

    def _alert_rows(self, what: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        args = tuple(params)

        def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_WRITE_LIMITS)
                cur.execute(sql, args)
                return cur.fetchall() if cur.description is not None else []

        with self._lock:
            return self._run(what, run)

    def alerts_prepare(self) -> None:
        """Create the table under the schema lock, only if missing (a role without DDL rights can use it)."""

        def prepare(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (alert_sql.ALERTS_TABLE,))
                found = cur.fetchone()
                if not (found and found[0]):
                    for statement in alert_sql.ALERTS_DDL:
                        cur.execute(statement)

        with self._lock:
            self._run("creating the alerts table", prepare)

    def alert_claim(self, alert: alert_sql.ClaimedAlert, owner: str) -> bool:
        params = _clean((*alert.key, alert.payload, alert.webhook, owner))
        return bool(self._alert_rows("claiming an alert", self._ALERT_SQL.claim, params))

    def alert_renew(self, key: alert_sql.AlertKey, owner: str) -> bool:
        return bool(self._alert_rows("renewing an alert", self._ALERT_SQL.renew, _clean((*key, owner))))

    def alert_attempted(
        self, key: alert_sql.AlertKey, owner: str, error: str | None, retry_in_ns: int | None
    ) -> bool:
        sql = self._ALERT_SQL
        if error is None:
            return bool(self._alert_rows("recording an alert", sql.delivered, _clean((*key, owner))))
        if retry_in_ns is not None:
            params = _clean((error, retry_in_ns, *key, owner))
            return bool(self._alert_rows("recording an alert", sql.retry_later, params))
        return bool(self._alert_rows("recording an alert", sql.give_up, _clean((error, *key, owner))))

    def alert_take_over(
        self, owner: str, lease_ns: int, has_default: bool, limit: int
    ) -> list[alert_sql.ClaimedAlert]:
        default = int(has_default)
        params = (owner, lease_ns, default, limit, lease_ns, default)
        rows = self._alert_rows("taking over alerts", self._ALERT_SQL.take_over, params)
        return [alert_sql.ClaimedAlert(alert_sql.AlertKey(r[0], r[1], r[2]), r[3], r[4], r[5]) for r in rows]

    def alert_release(self, owner: str) -> int:
        return len(self._alert_rows("releasing alerts", self._ALERT_SQL.release, (owner,)))

    # --- budgets --- (the SQL is budget_sql's; imports kept here so this block stands alone)

    def save_budget(self, name: str, spec: str, updated_ns: int) -> None:
        from .budget_sql import SAVE_STATEMENTS, UPSERT_SQL

        def save(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                # Queued like migrate(): concurrent CREATE ... IF NOT EXISTS can otherwise collide.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
                for statement in SAVE_STATEMENTS:
                    cur.execute(statement)
                cur.execute(translate_placeholders(UPSERT_SQL), (name, spec, updated_ns))

        with self._lock:
            self._run("saving a budget", save)

    def _budgets_table(self, cur: psycopg.Cursor[Any]) -> bool:
        from .budget_sql import BUDGETS_TABLE

        cur.execute(f"SELECT to_regclass('{BUDGETS_TABLE}') IS NOT NULL")
        found = cur.fetchone()
        return bool(found and found[0])

    def delete_budget(self, name: str) -> bool:
        from .budget_sql import DELETE_SQL

        def delete(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction(), conn.cursor() as cur:
                if not self._budgets_table(cur):
                    return False
                cur.execute(translate_placeholders(DELETE_SQL), (name,))
                return cur.rowcount > 0

        with self._lock:
            return self._run("deleting a budget", delete)

    def load_budgets(self) -> list[tuple[str, str, int]]:
        from .budget_sql import LIST_SQL

        def load(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
            with conn.transaction(), conn.cursor() as cur:
                if not self._budgets_table(cur):
                    return []  # a store written before budgets existed: none
                cur.execute(LIST_SQL)
                return [(str(n), str(s), int(u)) for n, s, u in cur.fetchall()]

        with self._lock:
            return self._run("reading the budgets", load)

    def budget_spend(
        self,
        windows: Sequence[SpendQuery],
        runs: Sequence[tuple[SpendQuery, Sequence[str]]],
        keys: Sequence[tuple[str, str]],
    ) -> SpendSnapshot:
        from .budget_sql import snapshot

        def read(conn: psycopg.Connection[Any]) -> SpendSnapshot:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

                def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                    cur.execute(translate_placeholders(sql), tuple(params))
                    return cur.fetchall()

                return snapshot(execute, windows, runs, keys, postgres_reports.tag_value(self._columns))

        with self._lock:
            return self._run("reading the spend", read)

    def latest_run(self, query: SpendQuery) -> str | None:
        from .budget_sql import latest_run_sql

        rows = self.query(*latest_run_sql(query, postgres_reports.tag_value(self._columns)))
        return str(rows[0][0]) if rows else None

    # --- small tables (see Store.transact) ---

    def transact(self, what: str, op: Callable[[Transaction], _T], *, write: bool) -> _T:
        def run(conn: psycopg.Connection[Any]) -> _T:
            with conn.transaction(), conn.cursor() as cur:
                if write:  # queued like migrate(): a table created on first use cannot collide with it
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
                return op(_PostgresTransaction(cur))

        with self._lock:
            return self._run(what, run)

    # --- outcomes --- (the SQL is outcome_sql's; imports kept here so this block stands alone)

    def _outcomes_table(self, cur: psycopg.Cursor[Any]) -> bool:
        from .outcome_sql import OUTCOMES_TABLE

        cur.execute(f"SELECT to_regclass('{OUTCOMES_TABLE}') IS NOT NULL")
        found = cur.fetchone()
        return bool(found and found[0])

    def write_outcomes(self, outcomes: Sequence[Outcome]) -> list[RejectedOutcome]:
        """Insert in key order (as calls: concurrent writers take row locks in one order)."""
        from .outcome_sql import INSERT_SQL, OUTCOMES_DDL, write_outcomes_isolating

        insert = translate_placeholders(INSERT_SQL)

        def batch(rows: Sequence[Outcome]) -> None:
            ordered = sorted((_clean(tuple(row)) for row in rows), key=_key)

            def write(conn: psycopg.Connection[Any]) -> None:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(_WRITE_LIMITS)
                    cur.execute(outcome_runs_sql.PG_OUTCOME_WRITES_LOCK)  # (first: see there)
                    if not self._outcomes_table(cur):  # a store created before outcomes existed
                        # Queued like migrate(): concurrent CREATE ... IF NOT EXISTS can otherwise collide.
                        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
                        for statement in OUTCOMES_DDL:
                            cur.execute(statement)
                    cur.executemany(insert, ordered)
                    runs = sorted({(str(row[4]), str(row[5])) for row in ordered})
                    for sql, params in outcome_runs_sql.refresh_runs("postgresql", runs):
                        cur.execute(translate_placeholders(sql), params)

            self._run(f"writing {len(ordered)} outcomes", write)

        if not outcomes:
            return []
        with self._lock:
            return write_outcomes_isolating(outcomes, batch)

    def outcome_totals(self, name: str, use_case: str | None = None) -> list[tuple[Any, ...]]:
        from .outcome_sql import outcome_totals_sql

        return self.read_outcomes(*outcome_totals_sql(name, use_case))

    def run_outcomes(self, run_id: str) -> list[Outcome]:
        from .outcome_sql import outcome_of, run_outcomes_sql

        return [outcome_of(row) for row in self.read_outcomes(*run_outcomes_sql(run_id))]

    def read_outcomes(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def read(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            with conn.transaction(), conn.cursor() as cur:
                if not self._outcomes_table(cur):
                    return []
                cur.execute(translate_placeholders(sql), tuple(params))
                return cur.fetchall()

        with self._lock:
            return self._run("reading the outcomes", read)


class _PostgresTransaction:
    """:class:`~otel_usecase.store.base.Transaction` on a cursor inside a transaction (``PostgresStore.transact``)."""

    dialect = "postgresql"

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(translate_placeholders(sql), tuple(params))
        return self._cur.fetchall() if self._cur.description is not None else []

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(translate_placeholders(sql), tuple(params))
        return max(self._cur.rowcount, 0)

    def has_table(self, name: str) -> bool:
        self._cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        found = self._cur.fetchone()
        return bool(found and found[0])


def _cut(conn: psycopg.Connection[Any]) -> None:
    """Shut down ``conn``'s socket (a write past its deadline): the blocked call fails, the connection is broken."""
    with contextlib.suppress(Exception), socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        sock.shutdown(socket.SHUT_RDWR)  # (an exception: already closed, nothing to cut)


def _tune_report(cur: psycopg.Cursor[Any]) -> None:
    """Planner settings for one read-only report transaction (``SET LOCAL``: nothing else sees them).

    Report queries group a million rows by run. The covering index on (run_id,
    use_case, ...) already yields them in group order, so a group aggregate
    streams over an index-only scan. The planner underestimates the number of
    runs and prices the wide index high: it would rather hash every run (twice
    as slow at 1M rows, spilling to disk as runs grow) or sort a parallel table
    scan (0.3 s slower). Sorts that remain get more than the default 4 MB.
    """
    cur.execute(f"SET LOCAL work_mem = '{QUERY_WORK_MEM}'")
    cur.execute("SET LOCAL enable_hashagg = off")
    cur.execute("SET LOCAL enable_seqscan = off")
    # With seqscan "off", every plan costs 1e10 and PostgreSQL JIT-compiles it: 0.3-0.5 s per query
    # (measured), more than most of these queries take to run.
    cur.execute("SET LOCAL jit = off")
