"""StoreWriter: the exporter's own thread and bounded buffer between priced calls and the store.

The SDK's ``BatchSpanProcessor`` calls the exporter on one thread and keeps the
spans that wait in a queue of its own (2048 by default). If the exporter waited
out a locked SQLite file (2 s busy timeout), a PostgreSQL server that does not
answer, or a schema upgrade, on every batch, that queue would overflow and the
SDK would drop spans without anyone counting them. So the exporter only prices
spans; this writer takes the calls into its own buffer (``OTEL_USECASE_BUFFER``
calls) and writes them on its own thread, retrying while the store is away.

The caller may wait for its calls to be written, but only a short while and not
at all while the store is known to be failing or hanging: with a healthy store
an export returns with its calls in the store (so ``provider.force_flush()`` is
enough), with a sick one it returns at once. What does not fit in the buffer is
counted (``dropped``), never silently lost. A call the store refuses because of
its own data (:class:`~otel_usecase.store.RejectedCall`) is counted apart
(``rejected``), logged once per reason, and never holds up the calls behind it.

The exporter runs a second writer for recorded outcomes (:mod:`otel_usecase.outcomes`):
the same buffer, thread, retries and counts, with the store's ``write_outcomes``
as its ``write`` (``noun="outcomes"`` in its log lines). Its thread starts with
the first outcome: an app that records none has no second thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from .._log import logger, warn_rate_limited
from ..cost.call import Call
from . import Store, StoreError
from .base import RejectedCall

__all__ = ["StoreWriter"]


class _Keyed(Protocol):
    """What the writer needs of an item: its key, to name it in a log line (a call, an outcome)."""

    @property
    def trace_id(self) -> str: ...

    @property
    def span_id(self) -> str: ...


T = TypeVar("T", bound=_Keyed)

_CHUNK: Final = 4096
"""Calls per store write: big enough to amortise a transaction, small enough that waiters see progress."""
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 1.0
"""Retries while the store is away back off from 50 ms to 1 s; a new export or a flush retries at once."""
_MAX_REASONS_LOGGED: Final = 1024
_INHERITED: list[Store] = []
"""Stores a forked child inherited: kept unused and unclosed (see ``StoreWriter.after_fork_in_child``)."""


def _write_isolating(store: Store, calls: Sequence[Call]) -> list[RejectedCall]:
    """Write ``calls``; a call that makes the write fail for any reason but an outage is rejected alone.

    The stores of this package isolate bad rows themselves (``Store.write`` returns
    them, see ``store.base.write_isolating``); this is the safety net for a store of
    the application's own that raises something else instead: the batch is split in
    halves until the failing call stands alone. Rewriting a half that was already
    written changes nothing (writes are idempotent per call). A ``StoreError`` (an
    outage, or a store that is misconfigured, closed or refuses our role) is never
    blamed on the calls: they stay buffered and are retried.
    """
    try:
        return list(store.write(calls) or ())
    except StoreError:
        raise
    except Exception as exc:
        if len(calls) == 1:
            return [RejectedCall(calls[0], f"{type(exc).__name__}: {exc}")]
        middle = len(calls) // 2
        return _write_isolating(store, calls[:middle]) + _write_isolating(store, calls[middle:])


class StoreWriter(Generic[T]):
    """Writes calls to a store on a daemon thread of its own, from a bounded buffer.

    ``store``: an open store, or ``None`` to open ``opener()`` on the writer's thread
    at the first write (and again after a failed open). ``shown_url`` names the
    store in logs (no password). ``write``: how a chunk goes to the store, returning
    the items refused for their own data as ``(item, reason)`` (default: calls,
    through ``Store.write``); ``noun`` names the items in log lines.
    """

    def __init__(
        self,
        store: Store | None,
        opener: Callable[[], Store],
        shown_url: str,
        max_buffered: int,
        *,
        write: Callable[[Store, Sequence[T]], Sequence[tuple[T, str]]] | None = None,
        noun: str = "calls",
        after_write: Callable[[Store], None] | None = None,
    ) -> None:
        self._store = store
        self._opened_here = store is None
        self._opener = opener
        self.shown_url = shown_url
        self.max_buffered = max_buffered
        self._write: Callable[[Store, Sequence[T]], Sequence[tuple[T, str]]] = (
            write if write is not None else cast(Any, _write_isolating)
        )
        self.noun = noun
        self._after_write = after_write
        """Called on the writer's thread after each successful write (the retention keeper's check)."""
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        """Fresh state: at construction, and in a child process after fork()."""
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[T] = []
        self._in_flight: list[T] = []
        self._accepted = 0
        """Calls ever taken into the buffer; ``_resolved`` of them (the oldest) are done with."""
        self._resolved = 0
        self._thread: threading.Thread | None = None
        self._inline = False
        self._attempt_started: float | None = None
        self._attempts = 0
        """Write attempts started; ``_last_failed`` is the number of the last one that failed."""
        self._last_failed = 0
        self._failed_attempts = 0
        self._nudged = False
        self._closing = False
        self._abandoned = 0
        self._reasons_logged: set[str] = set()
        self.dropped = 0
        """Calls lost: the buffer was full, or the store never took them before shutdown."""
        self.rejected = 0
        """Calls the store refused because of their own data."""

    def after_fork_in_child(self) -> None:
        """Forget the parent's buffer, locks and thread: its calls are the parent's to write.

        A store this writer opened itself is reopened in the child: the parent's
        connection (and a lock its writer thread may have held at the fork) must
        not be used here. The old object is kept, never closed, because closing an
        inherited PostgreSQL connection would end the parent's session.
        """
        closed = self._closed
        if self._opened_here and self._store is not None:
            _INHERITED.append(self._store)
            self._store = None
        self._reset()
        self._closed = closed

    @property
    def buffered(self) -> int:
        """Calls taken in and not yet written (including the batch being written)."""
        return len(self._queue) + len(self._in_flight)

    # --- the caller's side ------------------------------------------------------------

    def submit(self, calls: Sequence[T], wait_s: float) -> bool:
        """Take ``calls`` into the buffer, then wait up to ``wait_s`` for them to be written.

        Never waits while the store is failing or while a write has already been
        stuck longer than ``wait_s``. Returns ``False`` when some calls did not fit
        (they are counted in :attr:`dropped`).
        """
        with self._cond:
            if self._closed:
                self._drop(len(calls), "the exporter is shut down")
                return False
            room = self.max_buffered - self.buffered
            kept = calls if room >= len(calls) else calls[: max(room, 0)]
            self._queue.extend(kept)
            self._accepted += len(kept)
            target = self._accepted
            self._nudged = True
            self._cond.notify_all()
            lost = len(calls) - len(kept)
            if lost:
                self._drop(lost, f"buffer full ({self.max_buffered} calls)")
            self._start_thread()
            if self._inline:
                self._cond.release()
                try:
                    self._drain_inline(time.monotonic() + wait_s)
                finally:
                    self._cond.acquire()
            elif wait_s > 0 and kept:
                self._wait(target, time.monotonic() + wait_s, patient=False, bound=wait_s)
        return not lost

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every call taken in so far to be written (retrying at once)."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            target = self._accepted
            if self._resolved >= target:
                return True
            self._nudged = True
            self._cond.notify_all()
            self._start_thread()
            if not self._inline:
                return self._wait(target, deadline, patient=True, bound=timeout_s)
        self._drain_inline(deadline)
        return not self.buffered

    def close(self, timeout_s: float) -> int:
        """Flush for up to ``timeout_s``, stop the thread; returns the calls given up (counted as dropped)."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = self._closing = True
            self._cond.notify_all()
            lost = self.buffered
            if lost:
                self._abandoned = len(self._in_flight)
                self._queue = []
                self._in_flight = []
                self._resolved = self._accepted
                self.dropped += lost
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(0.5)
        return lost

    @property
    def idle(self) -> bool:
        """No write in progress (the store can be closed safely)."""
        return self._attempt_started is None

    @property
    def store(self) -> Store | None:
        return self._store

    def _wait(self, target: int, deadline: float, *, patient: bool, bound: float) -> bool:
        """Wait (holding the condition) until ``target`` calls are resolved or it is no use waiting."""
        first_with_these_calls = self._attempts + 1
        while self._resolved < target:
            now = time.monotonic()
            if not patient:
                if self._last_failed >= first_with_these_calls:
                    return False  # the store is failing: the calls wait in the buffer
                if self._attempt_started is not None and now - self._attempt_started > bound:
                    return False  # a write hangs: do not hold the SDK's thread for it
            remaining = deadline - now
            if remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        warn_rate_limited(
            "writer:dropped",
            "otel_usecase: store %s: %s; dropped %d %s (%d dropped in total, %d waiting)",
            self.shown_url,
            why,
            count,
            self.noun,
            self.dropped,
            self.buffered,
        )

    # --- the writer's side ------------------------------------------------------------

    def _start_thread(self) -> None:
        if self._thread is not None or self._inline:
            return
        thread = threading.Thread(target=self._run, name="otel-usecase-writer", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # at interpreter shutdown no new thread may start: write on the caller's
            self._inline = True
            return
        self._thread = thread

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:  # unless calls came in or a flush asked since the failed attempt began
                    self._cond.wait_for(lambda: self._nudged or self._closing, backoff)
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing or not self._queue:
                    self._thread = None
                    return
                chunk = self._take()
            backoff = 0.0 if self._attempt(chunk) else min(max(backoff * 2, _RETRY_FIRST_S), _RETRY_MAX_S)

    def _drain_inline(self, deadline: float) -> None:
        """Write on the calling thread (only when no writer thread can start)."""
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue or self._attempt_started is not None:
                    return
                chunk = self._take()
            if not self._attempt(chunk):
                return

    def _take(self) -> list[T]:
        chunk = self._queue[:_CHUNK]
        del self._queue[:_CHUNK]
        self._in_flight = chunk
        self._attempt_started = time.monotonic()
        self._attempts += 1
        self._nudged = False
        return chunk

    def _attempt(self, chunk: list[T]) -> bool:
        """One write of ``chunk``; on failure it goes back to the front of the buffer."""
        error: Exception | None = None
        rejected: Sequence[tuple[T, str]] = []
        try:
            if self._store is None:
                self._store = self._opener()
            rejected = self._write(self._store, chunk)
        except Exception as exc:
            error = exc
        if rejected:  # said before the calls count as done: whoever waits for them sees the log
            self._log_rejected(rejected, self.rejected + len(rejected))
        with self._cond:
            self._attempt_started = None
            recovered = self._failed_attempts
            if self._in_flight is not chunk:  # given up by close(), or the process forked meanwhile
                if error is None and self._abandoned:
                    self.dropped -= self._abandoned  # written after all
                    self._abandoned = 0
            elif error is None:
                self._in_flight = []
                self._resolved += len(chunk)
                self.rejected += len(rejected)
                self._failed_attempts = 0
            else:
                self._queue[:0] = chunk
                self._in_flight = []
                self._failed_attempts += 1
                self._last_failed = self._attempts
            waiting = self.buffered
            self._cond.notify_all()
        if error is not None:
            self._log_outage(error, waiting)
            return False
        if self._after_write is not None and self._store is not None:
            self._after_write(self._store)
        if recovered:
            logger.info(
                "otel_usecase: store %s is back; writing the %d buffered %s",
                self.shown_url,
                waiting,
                self.noun,
            )
        return True

    def _log_outage(self, error: Exception, waiting: int) -> None:
        kind = "unavailable" if isinstance(error, StoreError) else "failed"
        warn_rate_limited(
            "writer:buffered",
            "otel_usecase: store %s %s (%s); keeping %d %s in memory to retry (room for %d; %d dropped)",
            self.shown_url,
            kind,
            error,
            waiting,
            self.noun,
            self.max_buffered,
            self.dropped,
        )

    def _log_rejected(self, rejected: Sequence[tuple[T, str]], total: int) -> None:
        for item, reason in rejected:
            if reason in self._reasons_logged:
                continue
            if len(self._reasons_logged) >= _MAX_REASONS_LOGGED:
                warn_rate_limited(
                    "writer:rejected",
                    "otel_usecase: store %s rejected more %s (%d in total), e.g. %s",
                    self.shown_url,
                    self.noun,
                    total,
                    reason,
                )
                return
            self._reasons_logged.add(reason)
            logger.warning(
                "otel_usecase: store %s rejected the %s of span %s/%s and dropped it alone: %s "
                "(%d rejected in total)",
                self.shown_url,
                "call" if self.noun == "calls" else self.noun.rstrip("s"),
                item.trace_id,
                item.span_id,
                reason,
                total,
            )
