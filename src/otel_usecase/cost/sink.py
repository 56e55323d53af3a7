"""CallSink: the one place a priced call goes, in the exporter and in ``serve`` alike.

Spans become calls in :func:`otel_usecase.cost.calls.calls_from_spans`; every call
then goes through :meth:`CallSink.put`, which decides, in Python and once, whether
it is a new request, a better copy of one already seen (a second instrumentation
that read the usage the first missed), or a duplicate (a span exported twice, the
less complete of two instrumentations), by the one completeness ranking of
:mod:`otel_usecase.cost.dedup`. Accepted calls go to the store first, then to the
subscribers (cost metrics, budgets and alerts attach here) as :class:`CallEvent`
records that carry the copy they replace, so a subscriber adds only the
difference and never counts one request twice.

**The store** is the sink's first subscriber, with one difference: it is the
durable record, so when it raises (``serve``: the store is unavailable and the
sender must retry) the put fails, nothing is told to the other subscribers and
the sink forgets the calls of that put, so the retry is not taken for a
duplicate. What the store returns (the exporter's writer: whether the calls fit
in its buffer; ``serve``: the calls it refused) comes back in
:attr:`SinkResult.stored`.

**Other subscribers** are told after the store; one that raises is logged
(rate-limited) and counted in :attr:`CallSink.subscriber_errors`, and never stops
the others, the store or the export. They are called on the thread that puts,
under the sink's (re-entrant) lock, in the order calls were accepted, so a
replacement is never told before the call it replaces: keep them quick.

**Memory.** Copies are recognised by (trace id, span id) among the last
``memory`` calls accepted (``OTEL_USECASE_SINK_MEMORY``, an LRU), which covers
the copies of one request: they end within the request and are exported within
a few batches of each other. An older copy (an OTLP request resent minutes later
under heavy load) is not recognised here: the store's upsert still keeps one row
by the same ranking, but a subscriber sees it again, as new.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

from .._log import warn_rate_limited
from ..config import SINK_MEMORY
from .call import Call
from .dedup import completeness

__all__ = ["CallEvent", "CallSink", "SinkResult", "Subscriber"]

T = TypeVar("T")

_Key = tuple[str, str]


class CallEvent(NamedTuple):
    """One accepted call, as a subscriber sees it.

    ``replaced`` is None for a new request; otherwise it is the copy of the same
    request this one replaces (less complete), which the subscriber already saw:
    add ``call`` minus ``replaced``, never both.
    """

    call: Call
    replaced: Call | None = None


Subscriber = Callable[[Sequence[CallEvent]], object]
"""Told the events of each put that accepted a call, in order; its return value is ignored."""


class SinkResult(NamedTuple, Generic[T]):
    """What one :meth:`CallSink.put` did with its calls.

    ``new + replaced + duplicates`` is the number of calls put. ``stored`` is what
    the store returned for the accepted calls, or None when none was accepted
    (the store was not called).
    """

    new: int
    replaced: int
    duplicates: int
    stored: T | None


class CallSink(Generic[T]):
    """De-duplicates priced calls and hands the accepted ones to the store, then to the subscribers.

    ``store``: writes (or buffers) the accepted calls, in the order accepted, and
    returns what the caller needs to know (see :class:`SinkResult`); it may
    raise, which fails the put. ``memory``: how many calls are remembered to tell
    a copy from a new request (``None``: ``OTEL_USECASE_SINK_MEMORY``).
    """

    def __init__(self, store: Callable[[Sequence[Call]], T], *, memory: int | None = None) -> None:
        if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool) or memory < 0):
            raise ValueError(f"memory={memory!r} is not a whole number of calls >= 0")
        self._store = store
        self.memory = memory if memory is not None else SINK_MEMORY.read()
        self._seen: OrderedDict[_Key, Call] = OrderedDict()
        self._subscribers: list[Subscriber] = []
        self._lock = threading.RLock()
        self.duplicates = 0
        """Calls dropped as copies of a request already accepted (never counted twice)."""
        self.subscriber_errors = 0
        """Times a subscriber raised (each logged, at most once a minute per subscriber)."""

    def subscribe(self, callback: Subscriber) -> None:
        """Tell ``callback`` every call accepted from now on (after the store took it)."""
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop telling ``callback``; unknown callbacks are ignored."""
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def after_fork_in_child(self) -> None:
        """A forked child gets a fresh lock (another thread may have held it at the fork); the memory stays."""
        self._lock = threading.RLock()

    def put(self, calls: Sequence[Call]) -> SinkResult[T]:
        """Accept the new calls and the better copies among ``calls``, store them, tell the subscribers.

        Of several copies of one request within ``calls``, only the most complete
        (:func:`~otel_usecase.cost.dedup.completeness`) is stored and told (as one
        event); of equally complete ones, the one that started first (the outermost instrumentation: the request as the
        application saw it), so that what is kept does not depend on the order
        of the spans in a batch (an OTLP request groups them by instrumentation
        scope). A copy in a later put replaces only when more complete. Raises
        what the store raised; then the sink is as before the put.
        """
        if not calls:
            return SinkResult(0, 0, 0, None)
        with self._lock:
            seen = self._seen
            accepted: list[Call] = []
            previous: list[Call | None] = []
            at: dict[_Key, int] = {}
            undo: list[tuple[_Key, Call | None]] = []
            duplicates = 0
            for call in calls:
                key = (call.trace_id, call.span_id)
                old = seen.get(key)
                if old is None:
                    seen[key] = call
                    at[key] = len(accepted)
                    accepted.append(call)
                    previous.append(None)
                    undo.append((key, None))
                    continue
                seen.move_to_end(key)
                if call == old:  # the same copy again (a resent batch): no need to rank it
                    duplicates += 1
                    continue
                index = at.get(key)
                rank, old_rank = completeness(call), completeness(old)
                if rank < old_rank or (rank == old_rank and (index is None or call.start_ns >= old.start_ns)):
                    duplicates += 1
                    continue
                seen[key] = call
                if index is None:
                    at[key] = len(accepted)
                    accepted.append(call)
                    previous.append(old)
                    undo.append((key, old))
                else:  # a better copy of a call of this put: it takes the place (and the event) of that one
                    accepted[index] = call
                    duplicates += 1
            if not accepted:
                self.duplicates += duplicates
                return SinkResult(0, 0, duplicates, None)
            try:
                stored = self._store(accepted)
            except BaseException:
                for key, old in reversed(undo):
                    if old is None:
                        seen.pop(key, None)
                    else:
                        seen[key] = old
                raise
            finally:
                while len(seen) > self.memory:
                    seen.popitem(last=False)
            self.duplicates += duplicates
            replaced = len(previous) - previous.count(None)
            if self._subscribers:
                self._tell([CallEvent(call, old) for call, old in zip(accepted, previous)])
            return SinkResult(len(accepted) - replaced, replaced, duplicates, stored)

    def _tell(self, events: list[CallEvent]) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(events)
            except Exception as exc:
                self.subscriber_errors += 1
                warn_rate_limited(
                    f"sink:subscriber:{id(subscriber)}",
                    "otel_usecase: call sink subscriber %r failed on %d calls and is skipped for them "
                    "(%s: %s; %d failures in total); the calls are stored",
                    subscriber,
                    len(events),
                    type(exc).__name__,
                    exc,
                    self.subscriber_errors,
                )
