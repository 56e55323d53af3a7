"""Reads at the same time on more than one connection: a dashboard page's panels.

A store serves every thread through one connection under a lock, which suits the
exporter's short batches. A dashboard page is a handful of independent reads (the
summary, the cost series, four top lists) that would otherwise wait for each other:
:class:`Readers` keeps a few read-only stores of the same database open beside the
store that owns them, so those reads run at the same time on as many cores of the
database server (SQLite's and psycopg's calls release the GIL while the database
works). The overview of a 10M-call ledger: 570-720 ms one read after another, 320-420
ms two at a time.

The readers are opened on first use, kept for the next page and closed with their
owner. Each is a store like any other (its own lock, fork handling and
reconnection); one that cannot be opened (PostgreSQL's ``max_connections``
reached, say) leaves its reads to the others and the owner, so a read never fails
for want of a connection. The reads do not share a snapshot: each reads its
panel's rows in a transaction of its own, as one read after another did.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .base import StoreError, register_fork_hooks

if TYPE_CHECKING:
    from .base import Store

__all__ = ["READERS", "Readers"]

logger = logging.getLogger("otel_usecase.store")

_T = TypeVar("_T")

READERS: Final = 1
"""Reader stores beside their owner: two reads at a time. More gained nothing on two cores (the panels'
Python work holds the GIL between queries) and would hold more connections of the database server."""


class Readers:
    """Read-only stores of one database, opened by ``open_reader`` when first needed (at most ``most``),
    that :meth:`run` spreads reads over together with their owner."""

    def __init__(self, open_reader: Callable[[], Store], most: int = READERS) -> None:
        self._open_reader = open_reader
        self._most = most
        self._lock = threading.Lock()
        self._idle: list[Store] = []
        self._opened = 0
        self._closed = False
        register_fork_hooks(self, after_in_child=Readers._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """A thread of the parent may have held the lock, or a reader, at the fork: the child keeps the
        idle readers (each store forgets its parent's connection itself) and counts only them."""
        self._lock = threading.Lock()
        self._opened = len(self._idle)

    def run(self, owner: Store, reads: Sequence[Callable[[Store], _T]]) -> list[_T]:
        """Each of ``reads`` called with a store of the database, their results in their order: the owner
        takes them in order in the caller's thread while each reader takes the next one left in a thread of
        its own. The first exception any read raises is raised here, after every read has ended."""
        results: list[Any] = [None] * len(reads)
        failures: list[tuple[int, BaseException]] = []
        pending = iter(range(len(reads)))
        taking = threading.Lock()

        def work(store: Store) -> None:
            while True:
                with taking:
                    i = next(pending, None)
                if i is None:
                    return
                try:
                    results[i] = reads[i](store)
                except BaseException as exc:  # raised in the caller's thread, below
                    failures.append((i, exc))

        def on_reader(reader: Store) -> None:
            try:
                work(reader)
            finally:
                self._give_back(reader)

        threads = []
        for reader in self._take(len(reads) - 1):
            thread = threading.Thread(
                target=on_reader, args=(reader,), name="otel-usecase-reader", daemon=True
            )
            thread.start()
            threads.append(thread)
        work(owner)
        for thread in threads:
            thread.join()
        if failures:
            raise min(failures, key=lambda failure: failure[0])[1]
        return results

    def _take(self, wanted: int) -> list[Store]:
        """Up to ``wanted`` readers: idle ones, then new ones while fewer than ``most`` are open."""
        taken: list[Store] = []
        with self._lock:
            if self._closed:
                return taken
            while self._idle and len(taken) < wanted:
                taken.append(self._idle.pop())
            opening = min(wanted - len(taken), self._most - self._opened)
            self._opened += max(opening, 0)
        for _ in range(opening):
            try:
                taken.append(self._open_reader())
            except StoreError as exc:  # the owner and the other readers take its reads
                logger.debug("a reader of the store could not be opened: %s", exc)
                with self._lock:
                    self._opened -= 1
        return taken

    def _give_back(self, reader: Store) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(reader)
                return
            self._opened -= 1
        reader.close()

    def close(self) -> None:
        """Close the idle readers now and those reading when their read ends. Safe to call twice."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
        for reader in idle:
            reader.close()
