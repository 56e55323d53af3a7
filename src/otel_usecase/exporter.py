"""UseCaseCostExporter: a standard SpanExporter that prices LLM spans into the store.

Put it behind a ``BatchSpanProcessor`` next to your usual OTLP exporter, or let
``opentelemetry-instrument`` build it from ``OTEL_TRACES_EXPORTER=otlp,usecase``.
It runs on the batch processor's worker thread, never on the request path.

The exporter only prices the spans and puts the calls into its
:class:`~otel_usecase.cost.sink.CallSink` (:attr:`UseCaseCostExporter.sink`), which drops
copies of a request already accepted and tells subscribers; its store, a
:class:`~otel_usecase.store.writer.StoreWriter`, writes the calls on a thread of its own, so a store that is locked, down, hanging
or upgrading never holds the SDK's thread for more than ``OTEL_USECASE_EXPORT_WAIT_MS``
per batch. Calls wait in a bounded buffer (``OTEL_USECASE_BUFFER``); what no longer
fits is counted in :attr:`UseCaseCostExporter.dropped_calls` and logged.
The process side (fork, SIGTERM) is in :mod:`otel_usecase.lifecycle`.

Outcome spans (:func:`otel_usecase.record_outcome`) in a batch go to a second
writer of the same kind, for the store's outcomes table; its thread starts with
the first outcome.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import lifecycle, metrics
from ._log import logger
from .budgets import registry as budget_registry
from .config import ENV_BUFFER, ENV_EXPORT_WAIT, buffer_size, export_wait_ms
from .cost.call import Call
from .cost.calls import calls_from_spans, views_from_readable
from .cost.prices import PriceBook
from .cost.sink import CallSink
from .outcomes import outcomes_from_spans
from .retention import RetentionKeeper
from .store import Store, StoreError, open_store
from .store.outcome_sql import Outcome, RejectedOutcome
from .store.writer import StoreWriter

__all__ = ["ENV_BUFFER", "ENV_EXPORT_WAIT", "UseCaseCostExporter"]

_SHUTDOWN_FLUSH_MAX_S: Final = 10.0
"""At shutdown the buffer gets at most this long (or the SDK's shorter timeout) to reach the store."""


class UseCaseCostExporter(SpanExporter):
    """Prices each LLM span, groups calls into runs and writes them to a store.

    ``store``: a :class:`~otel_usecase.store.Store`, a store URL, or ``None`` for
    ``OTEL_USECASE_STORE`` (default: SQLite under ``~/.local/share/otel-usecase``).
    ``prices``: a :class:`~otel_usecase.cost.prices.PriceBook`, a path to a prices TOML
    file, or ``None`` for ``OTEL_USECASE_PRICES``. A bad URL or prices file raises
    at construction; the store itself is opened on the first export.
    ``max_buffered_calls``: calls kept while the store is away (``OTEL_USECASE_BUFFER``).
    ``export_wait_millis``: how long an export waits for a healthy store to take its
    calls (``OTEL_USECASE_EXPORT_WAIT_MS``, 500 by default); it never waits for a failing
    one. Measured on a loaded 2-core machine, a healthy store takes a batch of 512 calls
    in about 30 ms (SQLite) to 90 ms (PostgreSQL), plus 50 ms to open and create it the
    first time; 500 ms leaves room for that, and holding the SDK's thread that long at
    most once per failed write keeps its queue (2048 spans) from filling below about
    4,000 spans per second.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        prices: PriceBook | str | None = None,
        *,
        max_buffered_calls: int | None = None,
        export_wait_millis: int | None = None,
    ) -> None:
        from .store.base import default_store_url, parse_store_url, redact_url

        if isinstance(store, str) or store is None:
            url = store if store is not None else default_store_url()
            parse_store_url(url)  # fail fast on a bad URL
            self._shown_url = redact_url(url)
            given: Store | None = None
        else:
            url = store.url
            given = store
            self._shown_url = store.url
        self._prices = prices if isinstance(prices, PriceBook) else PriceBook(prices)
        buffer = max_buffered_calls if max_buffered_calls is not None else buffer_size()
        wait_ms = export_wait_millis if export_wait_millis is not None else export_wait_ms()
        self._export_wait_s = wait_ms / 1000
        self._writer: StoreWriter[Call] = StoreWriter(
            given, lambda: open_store(url), self._shown_url, buffer, after_write=RetentionKeeper().poke
        )
        self._outcomes: StoreWriter[Outcome] = StoreWriter(
            given,
            lambda: self._writer.store or open_store(url),  # one connection for both when the calls' is open
            self._shown_url,
            buffer,
            write=_write_outcomes,
            noun="outcomes",
        )
        self._sink: CallSink[bool] = CallSink(self._submit)
        self._metrics = metrics.attach(self._sink, self)  # cost metrics, when a MeterProvider is set
        self._budgets = budget_registry.attach_sink(self._sink, given if given is not None else url)
        self._shutdown = False
        lifecycle.watch(self)

    @property
    def store_url(self) -> str:
        """Where the calls go (any password shown as ``***``)."""
        return self._shown_url

    @property
    def prices(self) -> PriceBook:
        """The price book in use."""
        return self._prices

    @property
    def sink(self) -> CallSink[bool]:
        """Where the priced calls go: subscribe to it to see each request once (new, or a better copy)."""
        return self._sink

    @property
    def buffered_calls(self) -> int:
        """Calls priced and waiting for the store (being written, or for the store to come back)."""
        return self._writer.buffered

    @property
    def dropped_calls(self) -> int:
        """Calls lost: the buffer was full while the store was away, or the store never took them by shutdown."""
        return self._writer.dropped

    @property
    def rejected_calls(self) -> int:
        """Calls the store refused because of their own data (each logged once per reason)."""
        return self._writer.rejected

    @property
    def dropped_outcomes(self) -> int:
        """Outcomes lost: the buffer was full while the store was away, or not written by shutdown."""
        return self._outcomes.dropped

    @property
    def rejected_outcomes(self) -> int:
        """Outcomes the store refused because of their own data (each logged once per reason)."""
        return self._outcomes.rejected

    @property
    def buffered_outcomes(self) -> int:
        """Outcomes waiting for the store."""
        return self._outcomes.buffered

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            views = views_from_readable(spans)
            calls = calls_from_spans(views, self._prices)
            outcomes = outcomes_from_spans(views)
        except Exception:  # bad data must never break the pipeline
            logger.exception("otel_usecase: could not price a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        kept: bool | None = True
        if outcomes:
            try:
                kept = self._outcomes.submit(outcomes, self._export_wait_s)
            except Exception:
                logger.exception(
                    "otel_usecase: could not hand %d outcomes to the store writer", len(outcomes)
                )
                kept = False
        if not calls:
            return SpanExportResult.FAILURE if kept is False else SpanExportResult.SUCCESS
        try:
            if self._sink.put(calls).stored is False:
                kept = False
        except Exception:
            logger.exception("otel_usecase: could not hand %d calls to the store writer", len(calls))
            return SpanExportResult.FAILURE
        return SpanExportResult.FAILURE if kept is False else SpanExportResult.SUCCESS

    def _submit(self, calls: Sequence[Call]) -> bool:
        """The sink's store: the writer's buffer, waiting a short while for a healthy store."""
        return self._writer.submit(calls, self._export_wait_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait up to ``timeout_millis`` for every call priced so far to be in the store.

        ``provider.force_flush()`` does not call this (the SDK's batch processor
        only exports its queue); each export already waits for a healthy store.
        Call it (or :func:`otel_usecase.lifecycle.flush`) to wait out a slow one.
        """
        try:
            deadline = time.monotonic() + timeout_millis / 1000
            done = self._writer.flush(timeout_millis / 1000)
            if self._outcomes.flush(max(deadline - time.monotonic(), 0.0)):
                return done
            logger.error(
                "otel_usecase: %d outcomes not yet written to %s", self._outcomes.buffered, self._shown_url
            )
            return False
        except Exception:
            logger.exception("otel_usecase: flushing the store writer failed")
            return False

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Write what is buffered (bounded), then close the store; later exports fail.

        Calls the store did not take in time are counted in :attr:`dropped_calls`
        and logged as an error with their number.
        """
        if self._shutdown:
            return
        self._shutdown = True
        budget_registry.detach_sink(self._sink, self._budgets)
        try:
            deadline = time.monotonic() + min(timeout_millis / 1000, _SHUTDOWN_FLUSH_MAX_S)
            lost_outcomes = self._outcomes.close(deadline - time.monotonic())  # few: first
            if lost_outcomes:
                logger.error(
                    "otel_usecase: shutting down with %d outcomes the store %s did not take; "
                    "they are lost (%d dropped in total)",
                    lost_outcomes,
                    self._shown_url,
                    self._outcomes.dropped,
                )
            outcome_store = self._outcomes.store
            if outcome_store is not None and outcome_store is not self._writer.store and self._outcomes.idle:
                outcome_store.close()  # opened before the calls' store was
            lost = self._writer.close(max(deadline - time.monotonic(), 0.0))
            if lost:
                logger.error(
                    "otel_usecase: shutting down with %d calls the store %s did not take; "
                    "they are lost (%d dropped in total)",
                    lost,
                    self._shown_url,
                    self._writer.dropped,
                )
            store = self._writer.store
            if store is not None and self._writer.idle:
                store.close()
        except StoreError:
            pass
        except Exception:
            logger.exception("otel_usecase: shutting down the exporter failed")

    def _after_fork_in_child(self) -> None:
        """Called by :mod:`otel_usecase.lifecycle` in a forked child: start over with an empty buffer."""
        self._writer.after_fork_in_child()
        self._outcomes.after_fork_in_child()
        self._sink.after_fork_in_child()


def _write_outcomes(store: Store, outcomes: Sequence[Outcome]) -> list[RejectedOutcome]:
    """The outcome writer's write: the store's ``write_outcomes`` (a store of the app's own without one
    refuses them, each with that reason, instead of failing forever)."""
    write = getattr(store, "write_outcomes", None)
    if write is None:
        reason = f"the store {type(store).__name__} has no write_outcomes"
        return [RejectedOutcome(outcome, reason) for outcome in outcomes]
    return list(write(outcomes))
