"""The receiver's side of the cost engine: decoded spans -> priced calls -> call sink -> store.

This is deliberately thin: pricing and run grouping are
:func:`otel_usecase.cost.calls.calls_from_spans` and de-duplication is the
:class:`~otel_usecase.cost.sink.CallSink`, exactly as in the exporter. What
differs is failure handling: the receiver does not buffer; when the store is
unavailable it tells the sender to retry (HTTP 503 / gRPC UNAVAILABLE), so the
data stays with the sender (the collector's retry queue) and nothing is lost.
Calls the store refuses for their own data are written around and reported back
as refused spans (OTLP ``partial_success``), with the spans refused at decoding.

Outcome spans (:func:`otel_usecase.record_outcome`) are found by the same
:func:`otel_usecase.outcomes.outcomes_from_spans` as in the exporter and written
first, idempotently, by the same rule: an outage fails the request whole.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from .. import metrics
from .._log import warn_rate_limited
from ..budgets import registry as budget_registry
from ..cost.call import Call
from ..cost.calls import SpanView, calls_from_spans
from ..cost.prices import PriceBook
from ..cost.sink import CallSink
from ..outcomes import outcomes_from_spans
from ..retention import RetentionKeeper
from ..store import RejectedCall, Store, StoreError, StoreUnavailable, default_store_url, open_store
from ..store.outcome_sql import Outcome, RejectedOutcome
from .otlp import Decoded, Rejections

__all__ = ["Ingest", "StoreUnavailable"]


class Ingest:
    """Prices decoded spans and writes them; shared by the HTTP and gRPC receivers."""

    def __init__(self, store_url: str | None, prices: PriceBook) -> None:
        self._store_url = store_url
        self._prices = prices
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._retention = (
            RetentionKeeper()
        )  # OTEL_USECASE_RETENTION_DAYS: the day's prune, off the request path
        self._sink: CallSink[list[RejectedCall]] = CallSink(self._write_store)
        budget_registry.attach_sink(self._sink, store_url or default_store_url())
        self.calls_written = 0
        """Calls stored: new requests and better copies (duplicates and refused calls are not)."""
        self.spans_rejected = 0
        self.rejected_calls = 0
        """Calls the store refused because of their own data (read by ``usecase.calls.dropped``)."""
        self.dropped_calls = 0  # serve never buffers: an outage is the sender's to retry
        self.outcomes_written = 0
        """Outcomes written (a resent one is counted again: the store keeps one row)."""
        metrics.attach(self._sink, self)

    @property
    def store_url(self) -> str | None:
        return self._store_url

    @property
    def sink(self) -> CallSink[list[RejectedCall]]:
        """Where the priced calls go: subscribe to it to see each request once (new, or a better copy)."""
        return self._sink

    def open(self) -> None:
        """Open the store now, so a bad store is reported at startup."""
        self._get_store()

    def _get_store(self) -> Store:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self._store_url)
                store = self._store
        return store

    def write(self, decoded: Decoded) -> Rejections:
        """Price and store the spans; returns the spans refused (at decoding or by the store).

        Raises ``StoreUnavailable`` when the store cannot take writes now: then
        nothing of the request is written and the sender should retry it whole.
        """
        calls = calls_from_spans(decoded.spans, self._prices)
        rejections = decoded.rejections
        unusable: list[tuple[SpanView, str]] = []
        outcomes = outcomes_from_spans(decoded.spans, unusable)
        refused_outcomes = self._write_outcomes(outcomes) if outcomes else []
        self.outcomes_written += len(outcomes) - len(refused_outcomes)
        if unusable or refused_outcomes:
            rejections = rejections.copy()
            for span, reason in unusable:
                rejections.add(f"outcome span {span.span_id:016x} of trace {span.trace_id:032x}: {reason}")
            for outcome, reason in refused_outcomes:
                rejections.add(f"outcome span {outcome.span_id} of trace {outcome.trace_id}: {reason}")
        if calls:
            result = self._sink.put(calls)
            refused = result.stored or []
            self.calls_written += result.new + result.replaced - len(refused)
            self.rejected_calls += len(refused)
            if refused:
                rejections = rejections.copy()
                _add_refused(rejections, calls, refused)
        if rejections.count:
            self.spans_rejected += rejections.count
            warn_rate_limited("serve:rejected", "refused spans of an OTLP request: %s", rejections.message())
        return rejections

    def _write_store(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """The sink's store: written now; an outage raises, so the sender retries the request whole."""
        try:
            store = self._get_store()
        except StoreError as exc:  # opened at startup; failing now means it went away
            raise StoreUnavailable(str(exc)) from exc
        refused = store.write(calls)
        self._retention.poke(store)
        return refused

    def _write_outcomes(self, outcomes: Sequence[Outcome]) -> list[RejectedOutcome]:
        """Written now, before the calls; an outage raises, so the sender retries the request whole."""
        try:
            store = self._get_store()
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return store.write_outcomes(outcomes)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _add_refused(rejections: Rejections, calls: Sequence[Call], refused: Sequence[RejectedCall]) -> None:
    """Count the spans behind the calls the store refused.

    ``calls_from_spans`` makes one call per model span, keyed by trace id and
    span id; two instrumentations of one request share a key, and the sink hands
    the store one call per key. A refused call stands for every span of the
    request in this OTLP request that carries its key, each counted once.
    """
    per_key = Counter((call.trace_id, call.span_id) for call in calls)
    for call, reason in refused:
        key = (call.trace_id, call.span_id)
        spans = per_key.pop(key, 0)
        if spans:
            rejections.add(f"span {call.span_id} of trace {call.trace_id}: {reason}", spans)
