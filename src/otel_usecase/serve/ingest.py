"""The receiver's side of the cost engine: decoded spans -> priced calls -> store.

This is deliberately thin: pricing, run grouping and de-duplication are
:func:`otel_usecase.calls.calls_from_spans`, exactly as in the exporter. What
differs is failure handling: the receiver does not buffer; when the store is
unavailable it tells the sender to retry (HTTP 503 / gRPC UNAVAILABLE), so the
data stays with the sender (the collector's retry queue) and nothing is lost.
"""

from __future__ import annotations

import threading

from ..calls import calls_from_spans
from ..pricing import PriceBook
from ..store import Store, StoreError, StoreUnavailable, open_store
from .otlp import Decoded

__all__ = ["Ingest", "StoreUnavailable"]


class Ingest:
    """Prices decoded spans and writes them; shared by the HTTP and gRPC receivers."""

    def __init__(self, store_url: str | None, prices: PriceBook) -> None:
        self._store_url = store_url
        self._prices = prices
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.calls_written = 0

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

    def write(self, decoded: Decoded) -> int:
        """Price and store the spans; returns the number of calls. Raises ``StoreUnavailable``."""
        calls = calls_from_spans(decoded.spans, self._prices)
        if calls:
            try:
                store = self._get_store()
            except StoreError as exc:  # opened at startup; failing now means it went away
                raise StoreUnavailable(str(exc)) from exc
            store.write(calls)
            self.calls_written += len(calls)
        return len(calls)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
