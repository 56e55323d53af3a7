"""The call sink: the one place a priced call goes, in the exporter and in ``serve``.

Real parts: the real openai client through the real Traceloop and contrib
(``-openai-v2``) instrumentations against FakeOpenAI, the real exporter, real
OTLP/HTTP into ``serve``'s own HTTP app, real SQLite stores. A subscriber here is
what a cost metric would be: it adds each new call's cost and, for a better copy
of a call it already saw, only the difference. Expected costs come from published
prices (gpt-4o-mini $0.15/M input, $0.60/M output).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseCostExporter
from otel_usecase.cost.call import COST_SOURCE_PROVIDER, STATUS_NO_USAGE, STATUS_PARTIAL, STATUS_PRICED, Call
from otel_usecase.cost.dedup import RANKS, completeness, completeness_sql
from otel_usecase.cost.prices import PriceBook
from otel_usecase.cost.sink import CallEvent, CallSink
from otel_usecase.cost.usage import INPUT_KEYS, OUTPUT_KEYS
from otel_usecase.serve.auth import TokenCheck
from otel_usecase.serve.http_app import OTLPHttpApp
from otel_usecase.serve.ingest import Ingest
from otel_usecase.serve.listen import bind_http
from otel_usecase.store import StoreUnavailable
from otel_usecase.store.base import COLUMNS, row_of
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .builders import a_call
from .expect import mini_cost
from .rigs import Recorded, without_keys

MSG = [{"role": "user", "content": "hello"}]
USAGE_KEYS = frozenset(INPUT_KEYS) | frozenset(OUTPUT_KEYS)


class CostMetric:
    """A subscriber as a cost metric would be: each request counted once, a better copy adds its delta."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.requests = 0
        self.cost = 0.0

    def __call__(self, events: Sequence[CallEvent]) -> None:
        for event in events:
            self.events.append(event)
            if event.replaced is None:
                self.requests += 1
                self.cost += event.call.cost_usd or 0.0
            else:
                self.cost += (event.call.cost_usd or 0.0) - (event.replaced.cost_usd or 0.0)

    @property
    def kinds(self) -> list[str]:
        return ["new" if e.replaced is None else "replaces" for e in self.events]


def without_usage(span: ReadableSpan) -> ReadableSpan:
    """The same span as an instrumentation that did not see the usage (a stream without usage) records it."""
    return without_keys(span, USAGE_KEYS)


# --- fixtures: real spans of real instrumentations ------------------------------------------------


def ledger(store_url: str) -> list[tuple[Any, ...]]:
    """Every ledger row, every column, in key order."""
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT * FROM usecase_calls ORDER BY trace_id, span_id").fetchall()


def costs(store_url: str) -> list[float]:
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
        return [
            cost for (cost,) in conn.execute("SELECT cost_usd FROM usecase_calls ORDER BY trace_id, span_id")
        ]


def exported(exporter: UseCaseCostExporter, *batches: list[ReadableSpan]) -> None:
    for batch in batches:
        assert exporter.export(batch) == SpanExportResult.SUCCESS
    assert exporter.force_flush(30_000)


# --- the exporter ------------------------------------------------------------------------------------


def test_both_instrumentations_record_one_request_under_one_key(recorded: Recorded) -> None:
    """The premise of the tests below: two spans per request, one ledger key."""
    spans = recorded.ask("premise")
    assert len(spans) == 2
    calls_of = [c for s in spans for c in _calls([s])]
    assert {(c.trace_id, c.span_id) for c in calls_of} == {(calls_of[0].trace_id, calls_of[0].span_id)}


def _calls(spans: list[ReadableSpan]) -> list[Call]:
    from otel_usecase.cost.calls import calls_from_spans, views_from_readable

    return calls_from_spans(views_from_readable(spans), PriceBook())


@pytest.mark.parametrize("first_copy", ["without usage", "with usage"])
def test_two_instrumentations_in_different_batches_are_counted_once(
    recorded: Recorded, exporter: UseCaseCostExporter, store_url: str, first_copy: str
) -> None:
    inner, outer = recorded.ask("two-batches")
    metric = CostMetric()
    exporter.sink.subscribe(metric)

    exported(exporter, [without_usage(inner) if first_copy == "without usage" else inner], [outer])

    assert metric.requests == 1
    assert metric.cost == pytest.approx(mini_cost(1_000, 100))
    assert metric.kinds == (["new", "replaces"] if first_copy == "without usage" else ["new"])
    if first_copy == "without usage":
        assert metric.events[1].replaced is not None and metric.events[1].replaced.status == STATUS_NO_USAGE
    assert costs(store_url) == [pytest.approx(mini_cost(1_000, 100))]
    assert exporter.sink.duplicates == (0 if first_copy == "without usage" else 1)


@pytest.mark.parametrize("first", ["openai-v2", "traceloop"])
def test_of_two_priced_copies_the_one_that_read_the_cached_part_is_kept(
    recorded: Recorded, exporter: UseCaseCostExporter, store_url: str, fake_openai: FakeOpenAI, first: str
) -> None:
    """``-openai-v2`` does not record cached tokens, Traceloop does: the cached discount is kept either way."""
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100, cached_tokens=400))
    spans = recorded.ask("cached-part")
    v2 = [
        s for s in spans if "openai_v2" in (s.instrumentation_scope.name if s.instrumentation_scope else "")
    ]
    traceloop = [s for s in spans if s not in v2]
    assert (len(v2), len(traceloop)) == (1, 1)
    metric = CostMetric()
    exporter.sink.subscribe(metric)

    exported(exporter, *([v2, traceloop] if first == "openai-v2" else [traceloop, v2]))

    assert costs(store_url) == [pytest.approx(mini_cost(1_000, 100, 400))]
    assert metric.requests == 1
    assert metric.cost == pytest.approx(mini_cost(1_000, 100, 400))
    assert metric.kinds == (["new", "replaces"] if first == "openai-v2" else ["new"])


def test_two_copies_in_one_batch_are_one_event_for_the_better_copy(
    recorded: Recorded, exporter: UseCaseCostExporter, store_url: str
) -> None:
    inner, outer = recorded.ask("one-batch")
    metric = CostMetric()
    exporter.sink.subscribe(metric)
    exported(exporter, [without_usage(inner), outer])
    assert metric.kinds == ["new"]
    assert metric.events[0].call.status == STATUS_PRICED
    assert metric.cost == pytest.approx(mini_cost(1_000, 100))
    assert len(ledger(store_url)) == 1


def test_the_same_batch_exported_twice_gives_no_new_event(
    recorded: Recorded, exporter: UseCaseCostExporter, store_url: str
) -> None:
    spans = recorded.ask("twice", times=3)
    metric = CostMetric()
    exporter.sink.subscribe(metric)
    exported(exporter, spans)
    assert (metric.requests, metric.kinds) == (3, ["new"] * 3)
    rows = ledger(store_url)

    exported(exporter, spans)

    assert len(metric.events) == 3  # nothing new the second time
    assert metric.cost == pytest.approx(3 * mini_cost(1_000, 100))
    assert (
        exporter.sink.duplicates == 3 + 6
    )  # 3 second copies in the first batch, all 6 spans the second time
    assert ledger(store_url) == rows


def test_a_raising_subscriber_stops_neither_storage_nor_the_others(
    recorded: Recorded, exporter: UseCaseCostExporter, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(events: Sequence[CallEvent]) -> None:
        raise RuntimeError("metric backend down")

    metric = CostMetric()
    exporter.sink.subscribe(broken)
    exporter.sink.subscribe(metric)
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        exported(exporter, recorded.ask("raising-1"))
        exported(exporter, recorded.ask("raising-2"))

    assert len(ledger(store_url)) == 2
    assert metric.requests == 2
    assert exporter.sink.subscriber_errors == 2
    warnings = [r.getMessage() for r in caplog.records if "subscriber" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one a minute per subscriber
    assert "metric backend down" in warnings[0] and "the calls are stored" in warnings[0]


# --- serve ---------------------------------------------------------------------------------------------


class InProcessServe:
    """``serve``'s OTLP/HTTP app (the very ``Ingest`` and ASGI app the command runs) on a loopback port.

    In-process rather than the console command so that the test can subscribe to its sink.
    """

    def __init__(self, store_url: str) -> None:
        self.ingest = Ingest(store_url, PriceBook())
        self.ingest.open()
        self.executor = ThreadPoolExecutor(max_workers=1)
        app = OTLPHttpApp(self.ingest, TokenCheck(None), 16 * 1024 * 1024, self.executor, 30.0)
        self.socket = bind_http("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1/traces"
        self.server = uvicorn.Server(
            uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                break
            self.thread.join(0.05)
        assert self.server.started, "serve's HTTP app did not start"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.executor.shutdown(wait=True)
        self.socket.close()
        self.ingest.close()


@pytest.fixture
def in_process_serve(tmp_path: Path) -> Iterator[InProcessServe]:
    serve = InProcessServe("sqlite:///" + str(tmp_path / "served.db"))
    try:
        yield serve
    finally:
        serve.close()


def test_serve_and_the_exporter_store_the_same_rows_and_tell_the_same_events(
    recorded: Recorded, exporter: UseCaseCostExporter, store_url: str, in_process_serve: InProcessServe
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    first = recorded.ask("same-1", times=2)
    second = recorded.ask("same-2", times=3)
    batches = [
        [without_usage(first[0]), first[2]],  # one copy without usage, another request
        [first[1], first[3], *second],  # the better copy of the first request, and both copies of three more
        second,  # resent whole
    ]
    over_otlp = OTLPSpanExporter(endpoint=in_process_serve.url, timeout=30)
    served_events, exported_events = CostMetric(), CostMetric()
    in_process_serve.ingest.sink.subscribe(served_events)
    exporter.sink.subscribe(exported_events)
    try:
        for batch in batches:
            assert over_otlp.export(batch) == SpanExportResult.SUCCESS
    finally:
        over_otlp.shutdown()
    exported(exporter, *batches)

    assert exported_events.kinds == ["new", "new", "replaces", "new", "new", "new"]
    for served, local in zip(served_events.events, exported_events.events):
        assert served == local, {
            name: (getattr(served.call, name), getattr(local.call, name))
            for name in Call._fields
            if getattr(served.call, name) != getattr(local.call, name)
        }
    assert served_events.events == exported_events.events
    assert served_events.cost == pytest.approx(5 * mini_cost(1_000, 100))
    rows = ledger(store_url)
    assert len(rows) == 5
    assert ledger(in_process_serve.ingest.store_url or "") == rows
    assert in_process_serve.ingest.calls_written == 6  # five new and one better copy


def test_serve_reads_the_served_tier_and_the_billed_cost_over_otlp(
    in_process_serve: InProcessServe, exporter: UseCaseCostExporter, store_url: str
) -> None:
    """The keys of price conditions and billed costs reach the cost engine through OTLP decoding.

    gpt-5 served at Priority: $2.50/M input, $20/M output, so 8 in / 82 out = $0.00166. A gateway's
    billed $0.0042 for a gpt-4o-mini call is its cost; our price ($0.15/M, $0.60/M) stays beside it.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "sink-test-app"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    base = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai"}
    for attributes in (
        {
            **base,
            "gen_ai.request.model": "gpt-5",
            "gen_ai.usage.input_tokens": 8,
            "gen_ai.usage.output_tokens": 82,
            "openai.response.service_tier": "priority",
        },
        {
            **base,
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1_000,
            "gen_ai.usage.output_tokens": 100,
            "llm.cost.total": 0.0042,
        },
    ):
        tracer.start_span("chat", attributes=attributes).end()
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    over_otlp = OTLPSpanExporter(endpoint=in_process_serve.url, timeout=30)
    try:
        assert over_otlp.export(spans) == SpanExportResult.SUCCESS
    finally:
        over_otlp.shutdown()
    exported(exporter, spans)

    query = "SELECT model, cost_usd, cost_source, price_context, computed_cost_usd FROM usecase_calls ORDER BY model"
    for url in (in_process_serve.ingest.store_url or "", store_url):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            mini, gpt5 = conn.execute(query).fetchall()
        assert gpt5[0] == "gpt-5" and gpt5[1] == pytest.approx((8 * 2.50 + 82 * 20.00) / 1e6)
        assert gpt5[3] == "service_tier=priority" and gpt5[2].startswith("genai-prices")
        assert mini[1:3] == (0.0042, COST_SOURCE_PROVIDER)
        assert mini[4] == pytest.approx(mini_cost(1_000, 100))


def test_a_put_the_store_could_not_take_is_forgotten_so_the_retry_counts(
    recorded: Recorded, tmp_path: Path
) -> None:
    """``serve`` answers 503 when the store is locked; the sender's retry must be stored and told once."""
    from otel_usecase.cost.calls import views_from_readable
    from otel_usecase.serve.otlp import Decoded, Rejections

    url = "sqlite:///" + str(tmp_path / "locked.db")
    ingest = Ingest(url, PriceBook())
    ingest.open()
    metric = CostMetric()
    ingest.sink.subscribe(metric)
    request = Decoded(views_from_readable(recorded.ask("locked", times=2)), Rejections())
    locker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable):
            ingest.write(request)
        assert metric.events == []
        locker.execute("COMMIT")
        ingest.write(request)  # the sender's retry
    finally:
        locker.close()
        ingest.close()
    assert metric.kinds == ["new", "new"]
    assert len(ledger(url)) == 2


# --- the sink and the ranking on their own -------------------------------------------------------------


def _call(
    span_id: str, status: str = STATUS_PRICED, cost: float | None = 0.001, source: str | None = None
) -> Call:
    tokens = {"input": 1, "output": 1} if status != STATUS_NO_USAGE else {}
    return a_call(span_id=span_id, tokens=tokens, cost_usd=cost, status=status, cost_source=source)


def test_the_memory_is_bounded_and_forgets_the_oldest() -> None:
    stored: list[Call] = []
    sink: CallSink[None] = CallSink(stored.extend, memory=2)
    for span in ("a", "b", "c"):
        sink.put([_call(span.rjust(16, "0"))])
    assert sink.put([_call("c".rjust(16, "0"))]).duplicates == 1  # remembered
    assert sink.put([_call("a".rjust(16, "0"))]).new == 1  # forgotten: the store's upsert keeps one row
    assert len(stored) == 4


def test_the_memory_setting_is_read_and_a_bad_value_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_USECASE_SINK_MEMORY", "3")
    assert CallSink(list).memory == 3
    monkeypatch.setenv("OTEL_USECASE_SINK_MEMORY", "-1")
    assert CallSink(list).memory == 10_000
    with pytest.raises(ValueError, match="memory=-1"):
        CallSink(list, memory=-1)


@pytest.mark.parametrize("status", ["no_usage", "partial", "priced", "unpriced", "other"])
@pytest.mark.parametrize("source", [None, "provider", "genai-prices 0.2.3", "override 0123456789ab"])
@pytest.mark.parametrize(
    "tokens", [{}, {"input": 10}, {"input": 10, "output": 0}, {"input": 10, "output": 2, "cache_read": 4}]
)
def test_the_ranking_is_the_same_in_python_and_in_the_stores_sql(
    status: str, source: str | None, tokens: dict[str, int]
) -> None:
    """What the sink decides and what the upsert's WHERE decides are one rule, for every pair of copies."""
    call = _call("1" * 16, status=status, source=source)._replace(tokens=tokens)
    reference = _call("1" * 16, status=STATUS_PRICED, source="genai-prices 0.2.3")._replace(
        tokens={"input": 10, "output": 2}
    )
    with sqlite3.connect(":memory:") as conn:
        conn.execute(f"CREATE TABLE t ({', '.join(COLUMNS)})")
        conn.execute(f"CREATE TABLE u ({', '.join(COLUMNS)})")
        conn.execute(f"INSERT INTO t VALUES ({', '.join('?' * len(COLUMNS))})", row_of(call))
        conn.execute(f"INSERT INTO u VALUES ({', '.join('?' * len(COLUMNS))})", row_of(reference))
        below, above = conn.execute(
            f"SELECT {completeness_sql('t')} < {completeness_sql('u')}, {completeness_sql('t')} > {completeness_sql('u')}"
            " FROM t, u"
        ).fetchone()
    assert (bool(below), bool(above)) == (
        completeness(call) < completeness(reference),
        completeness(call) > completeness(reference),
    )


def test_the_ranking_orders_copies_from_least_to_most_complete() -> None:
    one = "1" * 16
    ranks = [
        completeness(_call(one, status=STATUS_NO_USAGE, cost=None)),
        completeness(_call(one, status=STATUS_PARTIAL)),
        completeness(_call(one, status=STATUS_PRICED, source="genai-prices 0.2.3")),
        completeness(
            _call(one, status=STATUS_PRICED, source="genai-prices 0.2.3")._replace(
                tokens={"input": 10, "output": 2, "cache_read": 4}
            )
        ),
        completeness(_call(one, status=STATUS_PRICED, source=COST_SOURCE_PROVIDER)),
    ]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert {r.field for r in RANKS} <= set(Call._fields)
