"""The default store: one SQLite file, shared safely by several processes on one host.

WAL mode lets reports read while exporters write; ``BEGIN IMMEDIATE`` takes the
write lock up front so two writers queue instead of failing half-way; a busy
timeout makes a locked database wait, then report itself unavailable.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

from .._log import logger
from ..cost.call import Call
from . import alert_sql, groups_sql, outcome_runs_sql, rollup_sql, tags_sql, totals
from .base import (
    COLUMNS,
    META_TABLE,
    RUN_RECORD,
    TABLE,
    TAGS_COLUMN,
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
    plausible,
    register_fork_hooks,
    row_of,
    upsert_sql,
    write_isolating,
)
from .readers import Readers
from .rollup_sql import ViewSQL
from .runs_sql import RUNS, lacking_dims_sql
from .tag_runs_sql import TAG_RUNS

if TYPE_CHECKING:
    from .base import Repricing, Store, Transaction
    from .budget_sql import SpendQuery, SpendSnapshot
    from .outcome_sql import Outcome, RejectedOutcome

_T = TypeVar("_T")

__all__ = ["SQLiteStore"]

_BUSY_TIMEOUT_S: Final = 2.0
"""How long a write waits for another writer's lock before the store counts as unavailable."""

_TYPES: Final = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "flag": "INTEGER"}

_TOKEN_SUM: Final = "CAST(TOTAL({}) AS INTEGER)"
"""An overflow-proof sum of a token column: SQLite's ``SUM`` of integers raises "integer overflow" past
2**63 - 1 (one hostile or corrupt row is enough); ``TOTAL`` is a double, exact for integers below 2**53,
and ``CAST`` saturates at 2**63 - 1 instead of failing."""

_CHECKPOINT_EVERY_S: Final = 0.5
_CACHE_KIB: Final = 16384
"""Page cache per connection. SQLite's 2 MB default holds the ledger's B-tree interior pages
for a few thousand rows only; past that nearly every insert re-reads index pages from the
OS. 16 MB (used as pages are touched, never preallocated) measured 8% faster writes."""
_WAL_TRUNCATE_BYTES: Final = 32 * 2**20
"""The WAL size beyond which the checkpointer empties the WAL (TRUNCATE).

Also the ``journal_size_limit``: a WAL that starts over on its own is cut back to this size."""
_TRUNCATE_WAIT_MS: Final = 250
"""How long a TRUNCATE checkpoint first waits for readers of older snapshots."""
_TRUNCATE_WAIT_MAX_MS: Final = 1200
"""The longest it waits (after failures): under the writers' busy timeout, so a writer held
up behind it still gets the lock."""
_FORK_WAIT_S: Final = 5.0
"""How long a fork waits for a write or checkpoint in progress to finish."""

_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited: kept, never used, never closed (see ``_after_fork_in_child``)."""


_FOLD_EVERY_S: Final = 1.0
_FOLD_ROWS: Final = 20_000
"""A writer folds the pending rows into the rollups (:meth:`SQLiteStore.fold`) after this long or this
many rows, whichever comes first: readers add up at most about that many pending rows."""

_MAX_ROWS_PER_STATEMENT: Final = 512
"""The largest multi-row INSERT: 512 rows of 38 columns bind 19,456 values, within SQLite's
default limit of 32,766 since 3.32 (an older SQLite's lower limit is read at open)."""


def _statement_sizes(rows: int, largest: int) -> list[int]:
    """Statement sizes covering ``rows``: as many ``largest`` as fit, then the binary digits of the rest.

    Sizes are powers of two so that a connection prepares at most ten distinct
    statements whatever the batch sizes (preparing the 512-row statement takes
    about 4 ms; SQLite keeps prepared statements in the connection's cache).
    """
    sizes = [largest] * (rows // largest)
    rest = rows % largest
    size = largest
    while rest:
        while size > rest:
            size //= 2
        sizes.append(size)
        rest -= size
    return sizes


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _flat(calls: Sequence[Call]) -> Iterator[Any]:
    return chain.from_iterable(map(row_of, calls))


class _Checkpointer:
    """Runs WAL checkpoints on a thread of its own, off the commit path, and keeps the WAL bounded.

    SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the
    threshold, copying pages and syncing the database while the writer waits.
    Here the writer only appends to the WAL; this thread checkpoints twice a
    second, while the writer's thread is free to price the next batch.

    A PASSIVE checkpoint never blocks anyone, but alone it does not bound the
    WAL: the file only starts over once a checkpoint has copied *every* frame and
    no reader still reads an older snapshot, which never happens while writes
    arrive faster than the checkpoint finishes, or while reports keep reading
    (measured: a 1.04 GB WAL next to an 81 MB database after 200k spans through
    ``serve``; 278 MiB next to 47 MiB for 150k calls written with a report
    running). So once the WAL holds more than :data:`_WAL_TRUNCATE_BYTES` (the
    writer wakes this thread as soon as it sees that), the thread runs a
    TRUNCATE checkpoint: it takes the write lock (a writer waits for it), waits
    for the readers of older snapshots to finish (readers starting meanwhile read
    the database and do not hold it up), copies the rest and empties the file.
    It waits at most :data:`_TRUNCATE_WAIT_MS`, doubled after each failure up to
    :data:`_TRUNCATE_WAIT_MAX_MS` (a report whose queries take longer), always
    well under the writers' busy timeout.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self.busy = threading.Lock()
        """Held while a checkpoint runs (so a fork can wait for SQLite to be idle)."""
        self.truncations = 0
        """TRUNCATE checkpoints that emptied the WAL."""
        self._wait_ms = _TRUNCATE_WAIT_MS
        self._copied_all_of: int | None = None
        """The WAL's frames when the last round copied every one of them (else None)."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        # Opened here, not on the thread: the same file as the writer's, even if it is deleted meanwhile.
        self.conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self.conn.execute(f"PRAGMA journal_size_limit={_WAL_TRUNCATE_BYTES}")
        self._page_size: int = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self._thread = threading.Thread(target=self._run, name="otel-usecase-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Checkpoint now rather than at the next round (the WAL is over its bound)."""
        self._wake.set()

    def _run(self) -> None:
        conn = self.conn
        try:
            while not self._stop.is_set():
                if self._wait_ms > _TRUNCATE_WAIT_MS:  # the last TRUNCATE gave up: let writers run a round
                    self._stop.wait(_CHECKPOINT_EVERY_S)
                else:
                    self._wake.wait(_CHECKPOINT_EVERY_S)
                self._wake.clear()
                with self.busy:
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            # TRUNCATE when readers keep much of the WAL from being copied, or when the WAL did not
            # start over although the last round copied all of it: a report that began before that
            # copy finished still reads the WAL, so writes cannot start it over, and reports running
            # back to back keep that up for good (measured: 149-171 MiB for 120k calls). Otherwise
            # the next write starts the WAL over and journal_size_limit cuts the file back; a
            # TRUNCATE would only hold the writer up.
            pinned = self._copied_all_of is not None and frames >= self._copied_all_of
            self._copied_all_of = frames if frames and copied >= frames else None
            if _size(self._path + "-wal") > _WAL_TRUNCATE_BYTES and (
                pinned or (frames - copied) * self._page_size > _WAL_TRUNCATE_BYTES // 2
            ):
                conn.execute(f"PRAGMA busy_timeout={self._wait_ms}")
                try:
                    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
                if busy:
                    self._wait_ms = min(self._wait_ms * 2, _TRUNCATE_WAIT_MAX_MS)
                else:
                    self.truncations += 1
                    self._wait_ms = _TRUNCATE_WAIT_MS
        except sqlite3.Error:
            pass  # locked or read-only right now: the next round tries again

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)


class SQLiteStore:
    """A :class:`~otel_usecase.store.Store` in one SQLite file.

    Safe across ``fork``: a child never uses (nor closes) the parent's
    connection; it opens its own on first use (:meth:`_after_fork_in_child`).
    A store file deleted or replaced while in use is noticed before the next
    write and opened afresh (:meth:`_connection`).
    """

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        self.url = "sqlite:///" + path
        self._create = create or path == ":memory:"
        """False for a reader (reports): a missing file or ledger is an error, never created."""
        if not self._create and not Path(path).is_file():
            raise StoreError(f"no SQLite store at {self.url}: {path!r} does not exist")
        self._file = os.path.abspath(path) if path != ":memory:" else ""
        """The file checked for deletion (absolute: the process may change directory)."""
        self._readers = Readers(lambda: SQLiteStore(self._file, create=False)) if self._file else None
        """Read-only stores of the file for :meth:`read_together` (an in-memory store reads alone)."""
        self._wal = self._file + "-wal"
        self._lock = threading.Lock()
        self._inserts: dict[int, str] = {}
        self._checkpointer: _Checkpointer | None = None
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the open database file."""
        self._companions: dict[str, tuple[int, int] | None] = {}
        """The same for its ``-wal`` and ``-shm`` files, which stay put while a connection is open."""
        self._conn: sqlite3.Connection | None = None
        self._quiesced: list[threading.Lock] = []
        self._closed = False
        self._max_rows = _MAX_ROWS_PER_STATEMENT
        self._columns: frozenset[str] = frozenset(COLUMNS)
        """The ledger's columns (fewer for a reader of an older ledger, see :func:`.base.migrate`)."""
        self._marked: set[str] = set()
        """Token classes marked in the open file by this store's writes (:func:`.base.classes_to_mark`)."""
        self._rollups = False
        self._groups = False
        """Whether the file has the rollups (:mod:`.rollup_sql`; a reader of an older ledger has not)."""
        self._group_times = False
        """Whether the per-(run, group) rows have their times (schema 11: :data:`.groups_sql.TIMES`)."""
        self._run_only_dims = False
        self._outcome_runs = False
        """Whether the per-run table has each run's experience version (schema 12)."""
        self._unfolded = 0
        self._folded_at = time.monotonic()
        self._open()
        register_fork_hooks(
            self,
            before=SQLiteStore._before_fork,
            after_in_parent=SQLiteStore._after_fork_in_parent,
            after_in_child=SQLiteStore._after_fork_in_child,
        )

    def _open(self) -> sqlite3.Connection:
        """Connect, create or upgrade the schema, and note which file is open."""
        path = self.path
        if self._create and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory of SQLite store {path!r}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                path if self._create else "file:" + quote(self._file) + "?mode=rw",
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                uri=not self._create,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {path!r}: {exc}") from exc
        variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        while self._max_rows > 1 and self._max_rows * len(COLUMNS) > variables:
            self._max_rows //= 2
        try:
            self._columns = self._migrate(conn)
            self._rollups = (
                conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (RUNS,)).fetchone() is not None
            )
            self._groups = (
                conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (groups_sql.TOTALS,)).fetchone()
                is not None
            )
            self._group_times = conn.execute(groups_sql.has_times_sql("sqlite")).fetchone() is not None
            self._run_only_dims = (
                self._rollups and not conn.execute(lacking_dims_sql("sqlite", (RUNS,))).fetchall()
            )
            self._outcome_runs = (  # schema 13
                conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = ?", (outcome_runs_sql.OUTCOME_RUNS,)
                ).fetchone()
                is not None
            )
            self._identity = self._stat(self._file)
            self._companions = {f: self._stat(f) for f in (self._file + "-wal", self._file + "-shm")}
        except BaseException as exc:
            conn.close()  # no file handle left behind on a store we could not use
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open SQLite store {path!r}: {exc}") from exc
            raise
        self._conn = conn
        self._marked = set()  # a file opened afresh (replaced, or after a fork) may have no marks yet
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> frozenset[str]:
        """Create or upgrade the schema (:func:`.base.migrate`) in one ``BEGIN IMMEDIATE`` transaction.

        A reader (``create=False``) runs no transaction and changes nothing."""

        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(sql, tuple(params)).fetchall()

        def check(create: bool) -> frozenset[str]:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return migrate(
                execute,
                tables=tables & {META_TABLE, TABLE},
                columns=lambda: [row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")],
                types=_TYPES,
                create=create,
                store=f"SQLite store {self.url}",
            )

        if not self._create:
            return check(False)
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = check(True)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return columns

    # the file under the store

    @staticmethod
    def _stat(file: str) -> tuple[int, int] | None:
        """(device, inode) of ``file``; ``None`` if there is none (or the store is in memory)."""
        if not file:
            return None
        try:
            st = os.stat(file)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _connection(self) -> sqlite3.Connection:
        """The open connection, checked to still be the file at the store's path.

        A deleted store file stays writable through the open connection: every
        write would "succeed" into a file no one can read again. One ``stat`` per
        write (about a microsecond) notices it before the batch goes there; the
        connection is then closed and the file created afresh at the path, with
        a warning naming it. Must be called with the lock held.
        """
        conn = self._conn
        if self._closed:
            raise StoreError(f"SQLite store {self.path!r} is closed")
        if conn is None:
            return self._open()
        if self._file and self._stat(self._file) != self._identity:
            return self._reopen()
        return conn

    def _reopen(self) -> sqlite3.Connection:
        """Close the connection to the file no longer at the path and open what is there now.

        SQLite leaves the old file's ``-wal`` and ``-shm`` behind when its database
        file was deleted or replaced, and would replay that WAL into the new file
        (measured: the replaced file then showed the old file's rows). They are
        removed if they are still the very files this store had open; another
        process's new ones are left alone.
        """
        gone = self._stat(self._file) is None
        logger.warning(
            "otel_usecase: SQLite store %s was %s while in use; calls written to it would be lost, "
            "so it is opened again%s",
            self._file,
            "deleted" if gone else "replaced by another file",
            " as a new, empty ledger" if gone else "",
        )
        self._stop_checkpointer()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        for file, identity in self._companions.items():
            if identity is not None and self._stat(file) == identity:
                with contextlib.suppress(OSError):
                    os.unlink(file)
        return self._open()

    # checkpoints

    def _start_checkpointer(self, conn: sqlite3.Connection) -> None:
        """Writers hand checkpoints to a thread (readers, such as reports, need none)."""
        if self.path == ":memory:":
            return
        # A write of several statements runs in a transaction, where each statement keeps
        # a statement journal: in memory it costs a tenth of what a temporary file does.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_TRUNCATE_BYTES}")
        self._checkpointer = _Checkpointer(self._file)

    def _stop_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None

    # the Store protocol

    def write(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """Upsert ``calls``; idempotent per (trace id, span id).

        Calls the ledger cannot hold are returned, the rest written
        (:func:`~otel_usecase.store.base.write_isolating`). Raises
        :class:`StoreUnavailable` when the file is locked, read-only or the disk
        full; nothing of the batch is then written.
        """
        if not calls:
            return []
        with self._lock:
            try:
                conn = self._connection()
                if self._checkpointer is None:
                    self._start_checkpointer(conn)
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot take writes: {exc}") from exc
            rejected = write_isolating(calls, self._write_batch)
            self._fold_if_due(len(calls))
            # Past twice its bound the WAL is getting away from the twice-a-second rounds: now.
            if self._checkpointer is not None and _size(self._wal) > 2 * _WAL_TRUNCATE_BYTES:
                self._checkpointer.wake()
            return rejected

    def _write_batch(self, calls: Sequence[Call]) -> None:
        """Upsert ``calls`` atomically, or raise :class:`Unstorable` (nothing written) when SQLite refuses a value.

        Rows go in as multi-row ``INSERT`` statements of a power-of-two size
        (:func:`_statement_sizes`), each prepared once per connection: SQLite then
        inserts a whole batch in one ``sqlite3_step``, with the GIL released
        throughout, instead of one step (and one GIL hand-off) per row. A batch
        that fits one statement is written in autocommit, which is atomic and
        skips the statement journal an explicit transaction needs (together a
        quarter less time per row than ``executemany``).

        What SQLite refuses: an ``int`` beyond int64 (``OverflowError``), text that
        is not valid Unicode (``UnicodeEncodeError``), a value of a type it cannot
        bind, a ``NULL`` in a ``NOT NULL`` column. Everything else it raises means
        the file cannot be written now.
        """
        conn = self._conn
        assert conn is not None
        sizes = _statement_sizes(len(calls), self._max_rows)
        statements: list[tuple[str, tuple[Any, ...]]] = []
        marks: list[str] = []
        start = 0
        for size in sizes:
            params = tuple(_flat(calls[start : start + size]) if len(sizes) > 1 else _flat(calls))
            if not plausible(params):
                raise Unstorable("a token count or cost out of the ledger's range")
            marks += classes_to_mark(params, self._marked.union(marks))
            statements.append((self._upsert(size), params))
            start += size
        if marks:  # the first rows of a class: its mark goes in the same transaction (see .base.mark_sql)
            statements.insert(0, (mark_sql("?", len(marks)), tuple(mark_params(marks))))
        try:
            if len(statements) == 1:
                conn.execute(*statements[0])
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    conn.execute(*statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._marked.update(marks)  # only once committed: a rolled-back mark is written again
        except sqlite3.OperationalError as exc:  # locked, read-only, disk full, I/O error
            raise StoreUnavailable(f"SQLite store {self.path!r} cannot take writes: {exc}") from exc
        except (OverflowError, ValueError, sqlite3.InterfaceError, sqlite3.IntegrityError) as exc:
            raise Unstorable(str(exc)) from exc

    def _upsert(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            sql = self._inserts[rows] = upsert_sql("?", rows)
        return sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot be read: {exc}") from exc

    # report primitives (see Store)

    def run_totals(self, keys: Sequence[str], filters: ReportFilter) -> list[tuple[Any, ...]]:
        return totals.with_summed(
            self.query,
            self._columns,
            lambda summed: self.query(
                *totals.run_totals_sql(
                    keys,
                    filters,
                    _TOKEN_SUM,
                    summed,
                    tag_value=self._tag_value,
                    rollups=self._rollups_current(),
                )
            ),
        )

    def group_totals(self, keys: Sequence[str], filters: ReportFilter) -> list[tuple[Any, ...]]:
        """Aggregated in Python (:func:`.totals.group_runs`): SQLite has no percentile function.

        The runs come without the token columns not summed (9 of 14 in most ledgers), which
        are put back as 0 in the groups only."""

        def groups(summed: frozenset[str]) -> list[tuple[Any, ...]]:
            runs = self.query(
                *totals.run_totals_sql(
                    keys,
                    filters,
                    _TOKEN_SUM,
                    summed,
                    zeros=False,
                    tag_value=self._tag_value,
                    rollups=self._rollups_current(),
                )
            )
            return totals.with_zeros(totals.group_runs(runs, len(keys)), len(keys), summed)

        return totals.with_summed(self.query, self._columns, groups)

    def runs_json(self, filters: ReportFilter) -> str | None:
        """One ``json_object`` per run, in report order; Python only joins them.

        None when this SQLite cannot (built without the JSON functions) or a value
        cannot go into JSON (a BLOB id): the report then formats the runs itself.
        """
        return totals.with_summed(self.query, self._columns, lambda summed: self._runs_json(filters, summed))

    def _runs_json(self, filters: ReportFilter, summed: frozenset[str]) -> str | None:
        columns = dict(totals.run_total_columns(_TOKEN_SUM, summed))
        # A non-finite sum (only from rows no exporter writes) is null, as a report shows it: SQLite writes Inf.
        finite_cost = f"CASE WHEN {totals.COST} BETWEEN -1e308 AND 1e308 THEN {totals.COST} END"
        complete = totals.incomplete(columns.__getitem__)
        expressions = {
            "use_case": "use_case",
            "run_id": "run_id",
            "runs": "1",
            **columns,
            "cost_usd": finite_cost,
            "cost_complete": f"json(CASE WHEN {complete} = 0 THEN 'true' ELSE 'false' END)",
        }
        # Every field, the classes not summed as constant 0 pairs: splicing their text in between
        # two objects measured no faster (the cost is the longer text, not the pairs).
        record = "json_object(" + ", ".join(f"'{name}', {expressions[name]}" for name in RUN_RECORD) + ")"
        clause, params = totals.where(filters, self._tag_value)
        sql = (
            f"SELECT {record} FROM {TABLE}{clause} GROUP BY run_id, use_case "
            f"ORDER BY {finite_cost} DESC, COALESCE(use_case, ''), run_id"
        )  # SQLite sorts NULL below every number: unpriced runs come last
        try:
            records = self.query(sql, params)
        except (StoreError, sqlite3.Error):  # a locked file fails the report's own query next, by name
            return None
        return "[" + ",".join(record[0] for record in records) + "]"

    def _tag_value(self, key: str) -> tuple[str, Any]:
        """The value of tag ``key`` of a call (:data:`~otel_usecase.store.base.TagValue`): SQLite's
        ``json_extract`` with the key quoted in the path (a name, so never a ``"`` in it); NULL on a
        ledger older than the ``tags`` column (no call has tags)."""
        column = totals.column(TAGS_COLUMN, self._columns)
        return f"json_extract({column}, ?)", f'$."{key}"'

    def run_calls(self, run_id: str) -> list[Call]:
        return [call_of(row) for row in self.query(*totals.run_calls_sql(run_id, self._columns))]

    def fold(self) -> None:
        """Add the rows the triggers set aside (:data:`.rollup_sql.PENDING`) to the rollups, in one
        writing transaction (:func:`.rollup_sql.sqlite_fold`).

        Readers add the pending rows themselves, so this changes no figure: it keeps the pending
        table small. A writer folds at most every :data:`_FOLD_EVERY_S` or :data:`_FOLD_ROWS` rows,
        and when it closes: a run's calls of a second are then one update of its cell, not one each
        (per row, that halved the cost of a write). Raises :class:`StoreUnavailable` like ``write``."""
        if not self._rollups:
            return
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in rollup_sql.sqlite_fold():
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite store {self.path!r} cannot fold its rollups: {exc}") from exc
        self._unfolded = 0
        self._folded_at = time.monotonic()

    def _fold_if_due(self, written: int) -> None:
        """After a write: fold when :data:`_FOLD_ROWS` rows or :data:`_FOLD_EVERY_S` have gone by."""
        if not self._rollups:
            return
        self._unfolded += written
        if self._unfolded >= _FOLD_ROWS or time.monotonic() - self._folded_at >= _FOLD_EVERY_S:
            with contextlib.suppress(StoreUnavailable):  # busy now: the next write folds
                self._fold_locked()

    def _pending(self) -> bool:
        """Whether rows are pending (not folded): first folded if this connection may write (a report
        then reads the rollups through their indexes), else added by every query."""
        if not self._rollups or not self.query(f"SELECT 1 FROM {rollup_sql.PENDING} LIMIT 1"):
            return False
        with contextlib.suppress(StoreError):  # busy, or a read-only file: read them as they are
            self.fold()
            return bool(self.query(f"SELECT 1 FROM {rollup_sql.PENDING} LIMIT 1"))
        return True

    def _rollups_current(self) -> str | None:
        """The dialect for :func:`.totals.run_totals_sql` when this file has the rollups."""
        if not self._rollups:
            return None
        return "sqlite+pending" if self._pending() else "sqlite"

    def view_sql(self) -> ViewSQL:
        pending = self._pending()  # (first: a fold may keep new tag keys)
        kept = self._kept_tag_keys()
        return ViewSQL(
            "sqlite",
            _TOKEN_SUM,
            self._columns,
            self._rollups,
            tags_sql.KeptTagValue(self._tag_value, kept) if kept else self._tag_value,
            pending,
            self._groups,
            kept,
            self._group_times,
            self._run_only_dims,
            self._outcome_runs,
        )

    def _kept_tag_keys(self) -> frozenset[str]:
        """The kept tag keys (:mod:`.tags_sql`; none in a store older than schema 10, which a reader may
        open as it is: it has no per-run rows per tag value, so its views read the ledger's tags)."""
        if not self._groups:
            return frozenset()
        try:
            if not self.query("SELECT 1 FROM sqlite_master WHERE name = ?", (TAG_RUNS,)):
                return frozenset()
            return frozenset(str(row[0]) for row in self.query(tags_sql.keys_sql()))
        except StoreError:
            return frozenset()

    def read_together(self, reads: Sequence[Callable[[Store], _T]]) -> list[_T]:
        if self._readers is None:
            return [read(self) for read in reads]
        return self._readers.run(self, reads)

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
        with self._lock:
            if self._unfolded and self._conn is not None and not self._closed:
                with contextlib.suppress(StoreError, sqlite3.Error):  # the next writer folds them
                    self._fold_locked()
            self._closed = True
            self._stop_checkpointer()
            if self._conn is not None:
                self._conn.close()

    # fork

    def _before_fork(self) -> None:
        """Wait (a bounded time) until no thread is inside SQLite for this store.

        A fork while another thread is in the middle of a write copies SQLite's
        mutexes held, and the child would hang on its first call into SQLite.
        """
        self._quiesced = []
        for lock in (self._lock, self._checkpointer.busy if self._checkpointer is not None else None):
            if lock is not None and lock.acquire(timeout=_FORK_WAIT_S):
                self._quiesced.append(lock)

    def _after_fork_in_parent(self) -> None:
        quiesced, self._quiesced = self._quiesced, []
        for lock in reversed(quiesced):
            lock.release()

    def _after_fork_in_child(self) -> None:
        """Forget the parent's connection, lock and checkpoint thread; open afresh on next use.

        The inherited connection is never closed here (closing runs SQLite's
        shutdown of a WAL connection on the parent's files); it is kept alive in
        :data:`_INHERITED` so that it is not closed by garbage collection either.
        """
        self._quiesced = []
        self._lock = threading.Lock()
        for inherited in (self._conn, self._checkpointer.conn if self._checkpointer is not None else None):
            if inherited is not None:
                _INHERITED.append(inherited)
        self._conn = None
        self._checkpointer = None  # its thread did not survive the fork; the next write starts one

    # re-pricing (otel-usecase reprice); imports kept here so this block stands alone

    def reprice(self, changes: Sequence[Repricing]) -> list[Repricing]:
        """Update the price columns of ``changes`` in one transaction, each only while its row is unchanged.

        ``BEGIN IMMEDIATE`` queues behind an exporter's write like any writer
        (the busy timeout, then :class:`StoreUnavailable`). Returns the changes
        applied: those whose row was still the one read.
        """
        from .base import reprice_update_params, reprice_update_sql

        if not changes:
            return []
        sql = reprice_update_sql("?", "IS")
        applied: list[Repricing] = []
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for change in changes:
                        if conn.execute(sql, reprice_update_params(change)).rowcount:
                            applied.append(change)
                    conn.execute("COMMIT")
                    self._fold_if_due(2 * len(applied))  # each change set aside its old and new row
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot take writes: {exc}") from exc
        return applied

    # --- alerts ---
    # The claims of budget alerts (store/alert_sql.py: the table, the SQL and why it is safe across processes).

    _ALERT_SQL: Final = alert_sql.alert_sql(
        "(CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) * 1000000)"
    )
    """The clock is SQLite's (milliseconds): every process of one SQLite file is on one host."""

    def _alert_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as exc:  # locked, read-only, disk full
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot take alert writes: {exc}") from exc

    def alerts_prepare(self) -> None:
        for statement in alert_sql.ALERTS_DDL:
            self._alert_rows(statement, ())

    def alert_claim(self, alert: alert_sql.ClaimedAlert, owner: str) -> bool:
        return bool(
            self._alert_rows(self._ALERT_SQL.claim, (*alert.key, alert.payload, alert.webhook, owner))
        )

    def alert_renew(self, key: alert_sql.AlertKey, owner: str) -> bool:
        return bool(self._alert_rows(self._ALERT_SQL.renew, (*key, owner)))

    def alert_attempted(
        self, key: alert_sql.AlertKey, owner: str, error: str | None, retry_in_ns: int | None
    ) -> bool:
        sql = self._ALERT_SQL
        if error is None:
            return bool(self._alert_rows(sql.delivered, (*key, owner)))
        if retry_in_ns is not None:
            return bool(self._alert_rows(sql.retry_later, (error, retry_in_ns, *key, owner)))
        return bool(self._alert_rows(sql.give_up, (error, *key, owner)))

    def alert_take_over(
        self, owner: str, lease_ns: int, has_default: bool, limit: int
    ) -> list[alert_sql.ClaimedAlert]:
        default = int(has_default)
        rows = self._alert_rows(
            self._ALERT_SQL.take_over, (owner, lease_ns, default, limit, lease_ns, default)
        )
        return [alert_sql.ClaimedAlert(alert_sql.AlertKey(r[0], r[1], r[2]), r[3], r[4], r[5]) for r in rows]

    def alert_release(self, owner: str) -> int:
        return len(self._alert_rows(self._ALERT_SQL.release, (owner,)))

    # --- budgets --- (the SQL is budget_sql's; imports kept here so this block stands alone)

    def _budgets_table(self, conn: sqlite3.Connection) -> bool:
        from .budget_sql import BUDGETS_TABLE

        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (BUDGETS_TABLE,)
        )
        return found.fetchone() is not None

    def _in_transaction(self, what: str, op: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        """Run ``op`` in one transaction (``BEGIN IMMEDIATE`` for a write; a read sees one snapshot)."""
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = op(conn)
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot {what}: {exc}") from exc

    def save_budget(self, name: str, spec: str, updated_ns: int) -> None:
        from .budget_sql import SAVE_STATEMENTS, UPSERT_SQL

        def save(conn: sqlite3.Connection) -> None:
            for statement in SAVE_STATEMENTS:
                conn.execute(statement)
            conn.execute(UPSERT_SQL, (name, spec, updated_ns))

        self._in_transaction("save a budget", save, write=True)

    def delete_budget(self, name: str) -> bool:
        from .budget_sql import DELETE_SQL

        def delete(conn: sqlite3.Connection) -> bool:
            return self._budgets_table(conn) and conn.execute(DELETE_SQL, (name,)).rowcount > 0

        return self._in_transaction("delete a budget", delete, write=True)

    def load_budgets(self) -> list[tuple[str, str, int]]:
        from .budget_sql import LIST_SQL

        def load(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
            if not self._budgets_table(conn):
                return []  # a store written before budgets existed: none
            return [(str(n), str(s), int(u)) for n, s, u in conn.execute(LIST_SQL).fetchall()]

        return self._in_transaction("read the budgets", load, write=False)

    def budget_spend(
        self,
        windows: Sequence[SpendQuery],
        runs: Sequence[tuple[SpendQuery, Sequence[str]]],
        keys: Sequence[tuple[str, str]],
    ) -> SpendSnapshot:
        from .budget_sql import snapshot

        def read(conn: sqlite3.Connection) -> SpendSnapshot:
            return snapshot(
                lambda sql, params: conn.execute(sql, tuple(params)).fetchall(),
                windows,
                runs,
                keys,
                self._tag_value,
            )

        return self._in_transaction("read the spend", read, write=False)

    def latest_run(self, query: SpendQuery) -> str | None:
        from .budget_sql import latest_run_sql

        rows = self.query(*latest_run_sql(query, self._tag_value))
        return str(rows[0][0]) if rows else None

    # --- small tables (see Store.transact) ---

    def transact(self, what: str, op: Callable[[Transaction], _T], *, write: bool) -> _T:
        return self._in_transaction(what, lambda conn: op(_SQLiteTransaction(conn)), write=write)

    # --- outcomes --- (the SQL is outcome_sql's; imports kept here so this block stands alone)

    def _outcomes_table(self, conn: sqlite3.Connection) -> bool:
        from .outcome_sql import OUTCOMES_TABLE

        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (OUTCOMES_TABLE,)
        )
        return found.fetchone() is not None

    def write_outcomes(self, outcomes: Sequence[Outcome]) -> list[RejectedOutcome]:
        from .outcome_sql import INSERT_SQL, OUTCOMES_DDL, write_outcomes_isolating

        def batch(rows: Sequence[Outcome]) -> None:
            def insert(conn: sqlite3.Connection) -> None:
                if not self._outcomes_table(conn):  # a store created before outcomes existed
                    for statement in OUTCOMES_DDL:
                        conn.execute(statement)
                conn.executemany(INSERT_SQL, rows)
                runs = sorted({(o.use_case, o.run_id) for o in rows})
                for sql, params in outcome_runs_sql.refresh_runs("sqlite", runs):
                    conn.execute(sql, params)

            try:
                self._in_transaction("take outcome writes", insert, write=True)
            except (OverflowError, ValueError, sqlite3.InterfaceError, sqlite3.IntegrityError) as exc:
                raise Unstorable(str(exc)) from exc

        if not outcomes:
            return []
        return write_outcomes_isolating(outcomes, batch)

    def outcome_totals(self, name: str, use_case: str | None = None) -> list[tuple[Any, ...]]:
        from .outcome_sql import outcome_totals_sql

        return self.read_outcomes(*outcome_totals_sql(name, use_case))

    def run_outcomes(self, run_id: str) -> list[Outcome]:
        from .outcome_sql import outcome_of, run_outcomes_sql

        return [outcome_of(row) for row in self.read_outcomes(*run_outcomes_sql(run_id))]

    def read_outcomes(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if not self._outcomes_table(conn):
                return []
            return conn.execute(sql, tuple(params)).fetchall()

        return self._in_transaction("read the outcomes", read, write=False)


class _SQLiteTransaction:
    """:class:`~otel_usecase.store.base.Transaction` on a connection inside ``BEGIN`` (``SQLiteStore.transact``)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def has_table(self, name: str) -> bool:
        found = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return found.fetchone() is not None
