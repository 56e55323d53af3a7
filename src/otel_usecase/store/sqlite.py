"""The default store: one SQLite file, shared safely by several processes on one host.

WAL mode lets reports read while exporters write; ``BEGIN IMMEDIATE`` takes the
write lock up front so two writers queue instead of failing half-way; a busy
timeout makes a locked database wait, then report itself unavailable.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from ..ledger import Call
from .base import (
    COLUMNS,
    INDEXES,
    META_TABLE,
    SCHEMA_VERSION,
    TABLE,
    RejectedCall,
    StoreError,
    StoreUnavailable,
    create_statements,
    upgrade_statements,
    upsert_sql,
)

__all__ = ["SQLiteStore"]

_BUSY_TIMEOUT_S: Final = 2.0
"""How long a write waits for another writer's lock before the store counts as unavailable."""

_CREATE: Final = create_statements({"text": "TEXT", "int": "INTEGER", "real": "REAL", "flag": "INTEGER"})

_CHECKPOINT_EVERY_S: Final = 0.5
_CACHE_KIB: Final = 16384
"""Page cache per connection. SQLite's 2 MB default holds the ledger's B-tree interior pages
for a few thousand rows only; past that nearly every insert re-reads index pages from the
OS. 16 MB (used as pages are touched, never preallocated) measured 8% faster writes."""
_WAL_BACKLOG_LIMIT_PAGES: Final = 16384
"""Pages written to the WAL but not yet checkpointed (64 MiB with 4 KiB pages) before the writer helps."""


_MAX_ROWS_PER_STATEMENT: Final = 512
"""The largest multi-row INSERT: 512 rows of 24 columns bind 12,288 values, within SQLite's
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


def _flat(calls: Sequence[Call]) -> Iterator[Any]:
    return chain.from_iterable(calls)  # a Call is its own row, in column order (see row_of)


class _Checkpointer:
    """Runs WAL checkpoints on a thread of its own, off the commit path.

    SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the
    threshold, copying pages and syncing the database while the writer waits.
    Here the writer only appends to the WAL; this thread checkpoints (PASSIVE:
    never blocking writers or readers) twice a second, while the writer's thread
    is free to price the next batch. If it falls behind (a reader holding old
    pages), the writer checkpoints itself while the backlog is over 64 MiB.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self.backlog_pages = 0
        """WAL pages not yet copied into the database, as of the last checkpoint."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-usecase-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(_CHECKPOINT_EVERY_S):
                try:
                    _, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.backlog_pages = max(wal_pages - copied, 0)
                except sqlite3.Error:
                    pass  # locked or read-only right now: the next round tries again
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class SQLiteStore:
    """A :class:`~otel_usecase.store.Store` in one SQLite file."""

    dialect: Final = "sqlite"

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        self.url = "sqlite:///" + path
        create = create or path == ":memory:"
        if not create and not Path(path).is_file():
            raise StoreError(f"no SQLite store at {self.url}: {path!r} does not exist")
        if create:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory of SQLite store {path!r}: {exc}") from exc
        self._lock = threading.Lock()
        self._inserts: dict[int, str] = {}
        self._checkpointer: _Checkpointer | None = None
        try:
            self._conn = sqlite3.connect(
                path if create else "file:" + quote(str(Path(path).absolute())) + "?mode=rw",
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                uri=not create,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {path!r}: {exc}") from exc
        self._max_rows = _MAX_ROWS_PER_STATEMENT
        variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        while self._max_rows > 1 and self._max_rows * len(COLUMNS) > variables:
            self._max_rows //= 2
        try:
            self._migrate() if create else self._check_existing()
        except BaseException as exc:
            self._conn.close()  # no file handle left behind on a store we could not use
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open SQLite store {path!r}: {exc}") from exc
            raise

    def _migrate(self) -> None:
        conn = self._conn
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _CREATE:
                conn.execute(statement)
            found = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchone()
            if found is None:
                conn.execute(
                    f"INSERT INTO {META_TABLE} (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(found[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite store {self.path!r} has schema version {found[0]}, newer than this "
                    f"otel-usecase understands ({SCHEMA_VERSION}): upgrade otel-usecase"
                )
            elif int(found[0]) < SCHEMA_VERSION:
                for statement in upgrade_statements(int(found[0])):
                    conn.execute(statement)
                conn.execute(
                    f"UPDATE {META_TABLE} SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                )
            for statement in INDEXES:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_existing(self) -> None:
        """For a reader that must not create: the file holds a ledger this version can read."""
        conn = self._conn
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if TABLE not in tables:
            raise StoreError(
                f"SQLite store {self.url} has no ledger table ({TABLE}): not an otel-usecase store"
            )
        found = None
        if META_TABLE in tables:
            found = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchone()
        if found is not None and str(found[0]).isdigit() and int(found[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self.path!r} has schema version {found[0]}, newer than this "
                f"otel-usecase understands ({SCHEMA_VERSION}): upgrade otel-usecase"
            )

    def _start_checkpointer(self) -> None:
        """Writers hand checkpoints to a thread (readers, such as reports, need none)."""
        if self.path == ":memory:":
            return
        # A write of several statements runs in a transaction, where each statement keeps
        # a statement journal: in memory it costs a tenth of what a temporary file does.
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.execute(f"PRAGMA journal_size_limit={_WAL_BACKLOG_LIMIT_PAGES * 4096}")
        self._checkpointer = _Checkpointer(self.path)

    def write(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """Upsert ``calls`` atomically; idempotent per (trace id, span id).

        Rows go in as multi-row ``INSERT`` statements of a power-of-two size
        (:func:`_statement_sizes`), each prepared once per connection: SQLite then
        inserts a whole batch in one ``sqlite3_step``, with the GIL released
        throughout, instead of one step (and one GIL hand-off) per row. A batch
        that fits one statement is written in autocommit, which is atomic and
        skips the statement journal an explicit transaction needs (together a
        quarter less time per row than ``executemany``).
        """
        if not calls:
            return []
        sizes = _statement_sizes(len(calls), self._max_rows)
        with self._lock:
            conn = self._conn
            try:
                if self._checkpointer is None:
                    self._start_checkpointer()
                elif self._checkpointer.backlog_pages > _WAL_BACKLOG_LIMIT_PAGES:
                    _, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self._checkpointer.backlog_pages = max(wal_pages - copied, 0)
                if len(sizes) == 1:
                    conn.execute(self._upsert(sizes[0]), tuple(_flat(calls)))
                    return []
                conn.execute("BEGIN IMMEDIATE")
                try:
                    start = 0
                    for size in sizes:
                        conn.execute(self._upsert(size), tuple(_flat(calls[start : start + size])))
                        start += size
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return []
            except sqlite3.OperationalError as exc:  # locked, read-only, disk full, I/O error
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot take writes: {exc}") from exc

    def _upsert(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            sql = self._inserts[rows] = upsert_sql("?", rows)
        return sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite store {self.path!r} cannot be read: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            self._conn.close()
