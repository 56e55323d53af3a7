"""``Store.read_together``: a dashboard page's reads at the same time, on the store and a reader of its own.

Real SQLite files and a real PostgreSQL server: that the reads really overlap (two reads that each wait for
the other finish), that each sees every call, that a failing read is raised once the others are done, that
the readers are kept and closed with their store, that a database refusing another connection leaves the
reads to the store itself, and that a forked child reads together as well.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

import psycopg
import pytest

from otel_usecase.store import Store, StoreError, open_store

from .test_postgres_store import make_call
from .test_store import wait_child


def _count(reader: Store) -> int:
    return int(reader.query("SELECT COUNT(*) FROM usecase_calls")[0][0])


def test_reads_run_at_the_same_time_and_give_their_results_in_order(store: Store) -> None:
    store.write([make_call(i) for i in range(30)])
    both = threading.Barrier(2, timeout=30)  # broken (and the test failed) unless two reads overlap
    seen: list[Store] = []

    def meeting(reader: Store) -> int:
        seen.append(reader)
        both.wait()
        return _count(reader)

    results = store.read_together([meeting, meeting, _count, lambda reader: "last"])
    assert results == [30, 30, 30, "last"]
    assert len({id(reader) for reader in seen}) == 2 and store in seen  # the store and one reader


def test_a_failing_read_is_raised_after_the_other_reads_end(store: Store) -> None:
    finished = threading.Event()
    release = threading.Event()

    def fails(reader: Store) -> None:
        release.set()
        raise ValueError("the first read's error")

    def slow(reader: Store) -> int:
        assert release.wait(30)
        count = _count(reader)
        finished.set()
        return count

    def fails_later(reader: Store) -> None:
        raise KeyError("a later read's error")

    with pytest.raises(ValueError, match="the first read's error"):
        store.read_together([fails, slow, fails_later])
    assert finished.is_set()
    assert store.read_together([_count, _count]) == [0, 0]  # nothing is left taken or broken


def test_readers_are_kept_for_the_next_reads_and_closed_with_their_store(sqlite_or_postgres: str) -> None:
    store = open_store(sqlite_or_postgres)
    both = threading.Barrier(2, timeout=30)
    readers: list[Store] = []

    def meeting(reader: Store) -> None:
        both.wait()
        if reader is not store:
            readers.append(reader)

    store.read_together([meeting, meeting])
    store.read_together([meeting, meeting])
    assert len(readers) == 2 and readers[0] is readers[1]  # one reader, opened once
    store.close()
    with pytest.raises(StoreError, match="closed"):
        readers[0].query("SELECT 1")


def test_an_in_memory_store_reads_alone() -> None:
    store = open_store("sqlite:///:memory:")
    try:
        store.write([make_call(1)])
        seen: list[Store] = []
        assert store.read_together([lambda r: seen.append(r) or _count(r), lambda r: seen.append(r) or 7]) == [1, 7]
        assert seen == [store, store]  # another connection would be another, empty, database
    finally:
        store.close()


def test_when_the_database_refuses_another_connection_the_store_reads_everything(pg_server: Any) -> None:
    url = pg_server.create_database("readers_refused")
    store = open_store(url)
    admin = psycopg.connect(pg_server.url_for("postgres"), autocommit=True)
    try:
        store.write([make_call(i) for i in range(5)])
        admin.execute("ALTER DATABASE readers_refused WITH ALLOW_CONNECTIONS false")
        seen: list[Store] = []

        def read(reader: Store) -> int:
            seen.append(reader)
            return _count(reader)

        assert store.read_together([read, read, read]) == [5, 5, 5]
        assert seen == [store, store, store]
        admin.execute("ALTER DATABASE readers_refused WITH ALLOW_CONNECTIONS true")
        both = threading.Barrier(2, timeout=30)

        def meeting(reader: Store) -> int:
            both.wait()
            return _count(reader)

        assert store.read_together([meeting, meeting]) == [5, 5]  # a reader once the database admits it
    finally:
        admin.execute("ALTER DATABASE readers_refused WITH ALLOW_CONNECTIONS true")
        admin.close()
        store.close()


def test_a_forked_child_reads_together_through_the_inherited_store(store: Store) -> None:
    store.write([make_call(i) for i in range(12)])
    assert store.read_together([_count, _count]) == [12, 12]  # the parent's reader is open at the fork
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            both = threading.Barrier(2, timeout=30)

            def meeting(reader: Store) -> int:
                both.wait()
                return _count(reader)

            code = 0 if store.read_together([meeting, meeting]) == [12, 12] else 2
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    assert store.read_together([_count, _count]) == [12, 12]  # the parent's store and reader still read
