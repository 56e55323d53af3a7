"""The receiver's side of the cost engine: decoded spans -> priced calls -> store.

This is deliberately thin: pricing, run grouping and de-duplication are
:func:`otel_usecase.cost.calls.calls_from_spans`, exactly as in the exporter. What
differs is failure handling: the receiver does not buffer; when the store is
unavailable it tells the sender to retry (HTTP 503 / gRPC UNAVAILABLE), so the
data stays with the sender (the collector's retry queue) and nothing is lost.
Calls the store refuses for their own data are written around and reported back
as refused spans (OTLP ``partial_success``), with the spans refused at decoding.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from .._log import warn_rate_limited
from ..cost.call import Call
from ..cost.calls import calls_from_spans
from ..cost.prices import PriceBook
from ..store import RejectedCall, Store, StoreError, StoreUnavailable, open_store
from .otlp import Decoded, Rejections

__all__ = ["Ingest", "StoreUnavailable"]


class Ingest:
    """Prices decoded spans and writes them; shared by the HTTP and gRPC receivers."""

    def __init__(self, store_url: str | None, prices: PriceBook) -> None:
        self._store_url = store_url
        self._prices = prices
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.calls_written = 0
        self.spans_rejected = 0

    @property
    def store_url(self) -> str | None:
        return self._store_url

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
        if calls:
            try:
                store = self._get_store()
            except StoreError as exc:  # opened at startup; failing now means it went away
                raise StoreUnavailable(str(exc)) from exc
            refused = store.write(calls)
            self.calls_written += len(calls) - len(refused)
            if refused:
                rejections = rejections.copy()
                _add_refused(rejections, calls, refused)
        if rejections.count:
            self.spans_rejected += rejections.count
            warn_rate_limited("serve:rejected", "refused spans of an OTLP request: %s", rejections.message())
        return rejections

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _add_refused(rejections: Rejections, calls: Sequence[Call], refused: Sequence[RejectedCall]) -> None:
    """Count the spans behind the calls the store refused.

    ``calls_from_spans`` makes one call per model span, keyed by trace id and
    span id; two instrumentations of one request share a key. Each refused call
    is one span of the request, matched by key and never counted beyond the
    spans that carry that key.
    """
    per_key = Counter((call.trace_id, call.span_id) for call in calls)
    for call, reason in refused:
        key = (call.trace_id, call.span_id)
        if per_key[key] > 0:
            per_key[key] -= 1
            rejections.add(f"span {call.span_id} of trace {call.trace_id}: {reason}")
