"""Benchmark 1: what UseCaseSpanProcessor adds to a realistic request.

A request is one SERVER handler span, 19 application spans (middleware, cache,
database, HTTP client, rendering; nested as a web handler nests them) and 2 LLM
spans created the way the OpenAI instrumentation creates them: tracer
``opentelemetry.instrumentation.openai.v1``, ``{"gen_ai.operation.name": "chat"}``
at start, model and usage attributes set just before ``end()``.

Four SDK ``TracerProvider``s run the same request:

* ``bare``: no span processor at all;
* ``empty``: a span processor whose methods do nothing (for reference: the
  floor of any span processor written in Python, three calls per span);
* ``ours``: ``UseCaseSpanProcessor()`` (default ``spans="llm"``);
* ``baggage``: ``BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS)`` from
  ``opentelemetry-processor-baggage``.

No exporter is attached to any of them, so the processor under test is the
only difference and the bare SDK is as cheap as it gets (the strictest
denominator: a real application also pays for its exporter on every span).

"Inside a scope": every request runs in its own scope carrying all seven keys
(a fresh run id per request, as ``@track`` makes). The scopes are entered
before timing and their contexts attached around each request, so the cost of
``track_context`` itself (equal for all three) is not in the figures; each
request sees a new baggage dict, like in production. "Outside any scope": no
baggage at all.

Timing uses the thread's CPU time (time spent preempted by other processes on
a shared machine is not counted). Each repetition runs three rounds; a round
times one block of requests per provider in a freshly shuffled order, and a
provider's figure for the repetition is its best block. The figures are
medians over the repetitions of the per-repetition ratios to ``bare``.
"""

from __future__ import annotations

import gc
import random
import time
import uuid
from collections.abc import Callable

from _common import log, median, row
from opentelemetry import context as otel_context
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Tracer

from otel_usecase import UseCaseSpanProcessor, track_context

NAME = "processor"

LLM_TRACER = "opentelemetry.instrumentation.openai.v1"
APP_TRACER = "app"

_RESOURCE = Resource.create({"service.name": "bench-app", "service.version": "1.2.3"})


def _llm_span(llm: Tracer, n: int) -> None:
    span = llm.start_span("openai.chat", kind=SpanKind.CLIENT, attributes={"gen_ai.operation.name": "chat"})
    span.set_attributes(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz0" + str(n),
            "llm.request.type": "chat",
            "llm.is_streaming": False,
            "gen_ai.openai.api_base": "https://api.openai.com/v1/",
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 512,
            "gen_ai.usage.input_tokens": 1234,
            "gen_ai.usage.output_tokens": 256,
            "llm.usage.total_tokens": 1490,
            "gen_ai.usage.cache_read.input_tokens": 1024,
            "gen_ai.response.finish_reasons": ("stop",),
        }
    )
    span.end()


def _leaf(app: Tracer, name: str, attributes: dict[str, object]) -> None:
    span = app.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    span.end()


_DB = {"db.system": "postgresql", "db.name": "app", "server.address": "db.internal", "server.port": 5432}
_CACHE = {"db.system": "redis", "server.address": "cache.internal", "server.port": 6379}
_HTTP = {"http.request.method": "GET", "server.address": "docs.internal", "server.port": 443}


def request(app: Tracer, llm: Tracer) -> None:
    """1 handler span + 19 application spans + 2 LLM spans."""
    with app.start_as_current_span(
        "POST /v1/summaries",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.route": "/v1/summaries",
            "url.scheme": "https",
            "server.address": "api.example.com",
            "client.address": "10.0.0.7",
            "user_agent.original": "python-httpx/0.28.1",
        },
    ) as handler:
        with app.start_as_current_span("authenticate"):  # 1
            _leaf(app, "GET session", {**_CACHE, "db.operation.name": "GET"})  # 2
            _leaf(app, "SELECT users", {**_DB, "db.operation.name": "SELECT", "db.query.text": "SELECT * FROM users WHERE id = $1"})  # 3
        with app.start_as_current_span("load_document"):  # 4
            _leaf(app, "SELECT documents", {**_DB, "db.operation.name": "SELECT", "db.query.text": "SELECT * FROM documents WHERE id = $1"})  # 5
            _leaf(app, "GET", {**_HTTP, "url.full": "https://docs.internal/blobs/42"})  # 6
            _leaf(app, "SELECT permissions", {**_DB, "db.operation.name": "SELECT"})  # 7
        with app.start_as_current_span("summarize"):  # 8
            _leaf(app, "render_prompt", {"template": "summary_v3"})  # 9
            _llm_span(llm, 1)
            _leaf(app, "parse_outline", {"sections": 5})  # 10
            _llm_span(llm, 2)
            _leaf(app, "validate_summary", {"length": 812})  # 11
        with app.start_as_current_span("persist"):  # 12
            _leaf(app, "INSERT summaries", {**_DB, "db.operation.name": "INSERT"})  # 13
            _leaf(app, "UPDATE documents", {**_DB, "db.operation.name": "UPDATE"})  # 14
            _leaf(app, "SET summary", {**_CACHE, "db.operation.name": "SET"})  # 15
        with app.start_as_current_span("respond"):  # 16
            _leaf(app, "serialize", {"bytes": 2048})  # 17
            _leaf(app, "POST", {**_HTTP, "http.request.method": "POST", "url.full": "https://audit.internal/events"})  # 18
            _leaf(app, "emit_metrics", {"count": 3})  # 19
        handler.set_attribute("http.response.status_code", 200)


def llm_only(app: Tracer, llm: Tracer) -> None:
    """The two LLM spans of a request, and nothing else (for the per-LLM-span figure)."""
    _llm_span(llm, 1)
    _llm_span(llm, 2)


def app_only(app: Tracer, llm: Tracer) -> None:
    """Two application spans (for the per-non-LLM-span figure)."""
    _leaf(app, "SELECT documents", {**_DB, "db.operation.name": "SELECT"})
    _leaf(app, "GET", {**_HTTP, "url.full": "https://docs.internal/blobs/42"})


class _EmptyProcessor(SpanProcessor):
    """A span processor that does nothing: the floor of any Python span processor."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        return None


def _providers() -> dict[str, tuple[Tracer, Tracer]]:
    variants: dict[str, TracerProvider] = {}
    variants["bare"] = TracerProvider(resource=_RESOURCE)
    variants["empty"] = TracerProvider(resource=_RESOURCE)
    variants["empty"].add_span_processor(_EmptyProcessor())
    variants["ours"] = TracerProvider(resource=_RESOURCE)
    variants["ours"].add_span_processor(UseCaseSpanProcessor())
    variants["baggage"] = TracerProvider(resource=_RESOURCE)
    variants["baggage"].add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    return {
        name: (p.get_tracer(APP_TRACER, "1.0.0"), p.get_tracer(LLM_TRACER, "0.62.4")) for name, p in variants.items()
    }


def _scope_contexts(n: int) -> list[otel_context.Context]:
    """``n`` contexts, each inside its own scope with all seven keys (a new run each)."""
    contexts = []
    for i in range(n):
        with track_context(
            use_case_name="document_summarization",
            use_case_id=f"run-{uuid.uuid4()}",
            use_case_version="2024.06.1",
            use_case_step="summarize",
            experience_name="support_chat",
            experience_id=str(uuid.uuid4()),
            user_id=f"user-{i % 97}",
        ):
            contexts.append(otel_context.get_current())
    return contexts


def _time_block(
    work: Callable[[Tracer, Tracer], None],
    tracers: tuple[Tracer, Tracer],
    contexts: list[otel_context.Context] | None,
    n: int,
) -> float:
    """CPU seconds of this thread per call of ``work`` over ``n`` calls (each in its own scope when ``contexts``).

    Thread CPU time, not wall time: on a shared machine the time this thread
    spends preempted by other processes is not counted.
    """
    app, llm = tracers
    attach, detach = otel_context.attach, otel_context.detach
    clock = time.thread_time_ns
    gc.collect()
    gc.disable()
    try:
        if contexts is None:
            start = clock()
            for _ in range(n):
                work(app, llm)
            elapsed = clock() - start
        else:
            start = clock()
            for i in range(n):
                token = attach(contexts[i])
                work(app, llm)
                detach(token)
            elapsed = clock() - start
    finally:
        gc.enable()
    return elapsed / 1e9 / n


def _measure(
    work: Callable[[Tracer, Tracer], None],
    tracers: dict[str, tuple[Tracer, Tracer]],
    contexts: list[otel_context.Context] | None,
    block: int,
    reps: int,
    rng: random.Random,
    rounds: int = 3,
) -> dict[str, list[float]]:
    """Per repetition, seconds per call for each variant.

    A repetition runs ``rounds`` rounds; each round times one block per variant,
    the variants in a freshly shuffled order. A variant's figure for the
    repetition is its best block (the least disturbed by the rest of the
    machine), so the variants of one repetition are measured side by side
    within a fraction of a second.
    """
    names = list(tracers)
    for name in names:  # warm-up: caches, code paths, allocator
        _time_block(work, tracers[name], contexts, block)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(reps):
        best = dict.fromkeys(names, float("inf"))
        for _ in range(rounds):
            rng.shuffle(names)
            for name in names:
                best[name] = min(best[name], _time_block(work, tracers[name], contexts, block))
        for name in names:
            times[name].append(best[name])
    return times


def run(quick: bool) -> list[dict]:
    rng = random.Random(1234)
    block = 10 if quick else 30
    reps = 5 if quick else 41
    llm_block = 40 if quick else 150
    tracers = _providers()
    contexts = _scope_contexts(max(block, llm_block))
    rows: list[dict] = []

    results = {}
    for label, ctxs in (("in scope", contexts), ("no scope", None)):
        log(f"processor: {reps} x {block} requests per variant, {label}")
        results[label] = _measure(request, tracers, ctxs, block, reps, rng)
    log(f"processor: per-span figures, {reps} x {llm_block} x 2 LLM spans and 2 app spans")
    llm_times = _measure(llm_only, tracers, contexts, llm_block, reps, rng)
    app_times = _measure(app_only, tracers, contexts, llm_block, reps, rng)

    def ratio(times: dict[str, list[float]], name: str) -> float:
        return median(t / b for t, b in zip(times[name], times["bare"]))

    def added_us(times: dict[str, list[float]], name: str, per: int) -> float:
        return median((t - b) * 1e6 / per for t, b in zip(times[name], times["bare"]))

    ins = results["in scope"]
    outs = results["no scope"]
    bare_us = median(ins["bare"]) * 1e6
    ours_add = ratio(ins, "ours") - 1
    bag_add = ratio(ins, "baggage") - 1
    share = median(
        (o - b) / (g - b) if g != b else float("inf") for o, b, g in zip(ins["ours"], ins["bare"], ins["baggage"])
    )
    rows.append(row(NAME, "bare SDK request, in scope (22 spans)", f"{bare_us:.0f} µs", "", None))
    rows.append(
        row(
            NAME,
            "ours / bare, in scope",
            f"+{ours_add * 100:.2f}% (+{added_us(ins, 'ours', 1):.1f} µs/req)",
            "≤ +6%",
            ours_add <= 0.06,
        )
    )
    rows.append(
        row(
            NAME,
            "baggage / bare, in scope",
            f"+{bag_add * 100:.2f}% (+{added_us(ins, 'baggage', 1):.1f} µs/req)",
            "",
            None,
        )
    )
    rows.append(
        row(
            NAME,
            "ours added / baggage added, in scope",
            f"{share:.3f} (ratio of medians {ours_add / bag_add if bag_add else float('inf'):.3f})",
            "≤ 0.200",
            share <= 0.2,
        )
    )
    rows.append(
        row(
            NAME,
            "reference: empty processor / bare, in scope",
            f"+{(ratio(ins, 'empty') - 1) * 100:.2f}% (+{added_us(ins, 'empty', 1):.1f} µs/req)",
            "",
            None,
        )
    )
    out_add = ratio(outs, "ours") - 1
    rows.append(
        row(
            NAME,
            "ours / bare, no scope",
            f"+{out_add * 100:.2f}% (+{added_us(outs, 'ours', 1):.2f} µs/req; bare {median(outs['bare']) * 1e6:.0f} µs)",
            "≤ +3%",
            out_add <= 0.03,
        )
    )
    rows.append(
        row(
            NAME,
            "baggage / bare, no scope",
            f"+{(ratio(outs, 'baggage') - 1) * 100:.2f}% (+{added_us(outs, 'baggage', 1):.2f} µs/req)",
            "",
            None,
        )
    )
    rows.append(
        row(
            NAME,
            "reference: empty processor / bare, no scope",
            f"+{(ratio(outs, 'empty') - 1) * 100:.2f}% (+{added_us(outs, 'empty', 1):.2f} µs/req)",
            "",
            None,
        )
    )
    rows.append(
        row(
            NAME,
            "µs added per LLM span, in scope",
            f"ours {added_us(llm_times, 'ours', 2):.2f}, baggage {added_us(llm_times, 'baggage', 2):.2f} "
            f"(bare LLM span {median(llm_times['bare']) * 1e6 / 2:.1f} µs)",
            "",
            None,
        )
    )
    rows.append(
        row(
            NAME,
            "µs added per non-LLM span, in scope",
            f"ours {added_us(app_times, 'ours', 2):.2f}, baggage {added_us(app_times, 'baggage', 2):.2f} "
            f"(bare app span {median(app_times['bare']) * 1e6 / 2:.1f} µs)",
            "",
            None,
        )
    )
    return rows
