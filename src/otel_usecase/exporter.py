"""UseCaseCostExporter: a standard SpanExporter that prices LLM spans into the store.

Put it behind a ``BatchSpanProcessor`` next to your usual OTLP exporter, or let
``opentelemetry-instrument`` build it from ``OTEL_TRACES_EXPORTER=otlp,usecase``.
It runs on the batch processor's worker thread, never on the request path.

When the store cannot take a write (locked, down, disk full) the calls are kept
in a bounded in-memory buffer and written with the next batch or flush; what no
longer fits is counted in :attr:`UseCaseCostExporter.dropped_calls` and logged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._log import logger, warn_rate_limited
from .calls import Call, calls_from_spans, views_from_readable
from .config import ENV_BUFFER, env_int
from .pricing import PriceBook
from .store import Store, StoreError, open_store

__all__ = ["ENV_BUFFER", "UseCaseCostExporter"]

_DEFAULT_BUFFER: Final = 100_000


class UseCaseCostExporter(SpanExporter):
    """Prices each LLM span, groups calls into runs and writes them to a store.

    ``store``: a :class:`~otel_usecase.store.Store`, a store URL, or ``None`` for
    ``OTEL_USECASE_STORE`` (default: SQLite under ``~/.local/share/otel-usecase``).
    ``prices``: a :class:`~otel_usecase.pricing.PriceBook`, a path to a prices TOML
    file, or ``None`` for ``OTEL_USECASE_PRICES``. A bad URL or prices file raises
    at construction; the store itself is opened on the first export.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        prices: PriceBook | str | None = None,
        *,
        max_buffered_calls: int | None = None,
    ) -> None:
        from .store.base import default_store_url, parse_store_url, redact_url

        if isinstance(store, str) or store is None:
            self._store_url = store if store is not None else default_store_url()
            parse_store_url(self._store_url)  # fail fast on a bad URL
            self._shown_url = redact_url(self._store_url)
            self._store: Store | None = None
        else:
            self._store_url = store.url
            self._store = store
            self._shown_url = store.url
        self._prices = prices if isinstance(prices, PriceBook) else PriceBook(prices)
        self._max_buffered = (
            max_buffered_calls
            if max_buffered_calls is not None
            else env_int(ENV_BUFFER, _DEFAULT_BUFFER, minimum=0)
        )
        self._pending: list[Call] = []
        self._lock = threading.Lock()
        self._shutdown = False
        self.dropped_calls = 0
        """Calls lost because the store was unavailable and the buffer was full."""

    @property
    def store_url(self) -> str:
        """Where the calls go (any password shown as ``***``)."""
        return self._shown_url

    @property
    def prices(self) -> PriceBook:
        """The price book in use."""
        return self._prices

    @property
    def buffered_calls(self) -> int:
        """Calls waiting for the store to come back."""
        return len(self._pending)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            calls = calls_from_spans(views_from_readable(spans), self._prices)
        except Exception:  # bad data must never break the pipeline
            logger.exception("otel_usecase: could not price a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        with self._lock:
            return self._write(calls)

    def _write(self, calls: list[Call]) -> SpanExportResult:
        batch = self._pending + calls if self._pending else calls
        if not batch:
            return SpanExportResult.SUCCESS
        try:
            self._ensure_store().write(batch)
        except Exception as exc:
            return self._keep(calls, exc)
        if self._pending:
            logger.info("otel_usecase: wrote %d buffered calls after the store came back", len(self._pending))
            self._pending = []
        return SpanExportResult.SUCCESS

    def _keep(self, calls: list[Call], exc: Exception) -> SpanExportResult:
        room = self._max_buffered - len(self._pending)
        kept = calls[: max(room, 0)]
        self._pending.extend(kept)
        lost = len(calls) - len(kept)
        if lost:
            self.dropped_calls += lost
            warn_rate_limited(
                "exporter:dropped",
                "otel_usecase: store %s unavailable (%s); buffer full (%d calls), dropped %d calls "
                "(%d in total)",
                self._shown_url,
                exc,
                self._max_buffered,
                lost,
                self.dropped_calls,
            )
            return SpanExportResult.FAILURE
        warn_rate_limited(
            "exporter:buffered",
            "otel_usecase: store %s unavailable (%s); keeping %d calls in memory to retry",
            self._shown_url,
            exc,
            len(self._pending),
        )
        return SpanExportResult.SUCCESS

    def _ensure_store(self) -> Store:
        if self._store is None:
            self._store = open_store(self._store_url)
        return self._store

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write the calls buffered while the store was unavailable."""
        with self._lock:
            if not self._pending:
                return True
            return self._write([]) is SpanExportResult.SUCCESS and not self._pending

    def shutdown(self) -> None:
        """Flush what is buffered and close the store; later exports fail."""
        if self._shutdown:
            return
        self.force_flush()
        with self._lock:
            self._shutdown = True
            if self._pending:
                logger.error(
                    "otel_usecase: shutting down with %d calls the store %s did not take",
                    len(self._pending),
                    self._shown_url,
                )
            if self._store is not None:
                try:
                    self._store.close()
                except StoreError:
                    pass
