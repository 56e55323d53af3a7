"""Shared fixtures: a real SDK TracerProvider with the real OpenAI instrumentation and the fake server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, set_default_use_case
from otel_usecase._log import reset_rate_limits
from otel_usecase.store import Store, open_store
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .pg import PostgresServer
from .rigs import CostRig, Recorded, unwrap_traceloop_leftovers


class Traced:
    """A provider with our processor, an in-memory exporter and the OpenAI instrumentation on it."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider = provider
        self.exporter = exporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if (s.attributes or {}).get("gen_ai.operation.name")]


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    reset_rate_limits()
    yield
    set_default_use_case(None)
    import otel_usecase.scope.tracking as scope_module

    scope_module._default_set_in_code = False
    unwrap_traceloop_leftovers()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake_openai: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0)


@pytest.fixture
def traced() -> Iterator[Traced]:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    provider = TracerProvider()
    provider.add_span_processor(UseCaseSpanProcessor())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield Traced(provider, exporter)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A fresh SQLite store for the test."""
    return "sqlite:///" + str(tmp_path / "costs.db")


@pytest.fixture
def rig(store_url: str) -> Iterator[CostRig]:
    rig = CostRig(store_url)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def instrumented_httpx(traced: Traced) -> Iterator[None]:
    """httpx clients inject the context (W3C trace context and baggage) with the ``traced`` provider."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


# Both OpenAI instrumentations on one provider: each request gives two LLM spans (tests of the sink).
@pytest.fixture
def recorded(fake_openai: FakeOpenAI) -> Iterator[Recorded]:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    rec = Recorded(fake_openai)
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture
def exporter(store_url: str) -> Iterator[UseCaseCostExporter]:
    exp = UseCaseCostExporter(store=store_url)
    try:
        yield exp
    finally:
        exp.shutdown()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server in a temporary directory, one per test module (stopped by its PID)."""
    with PostgresServer() as server:
        yield server


_databases = count()


@pytest.fixture(params=["sqlite", "postgresql"])
def sqlite_or_postgres(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL every process of the test can share: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
        return server.create_database(f"t{next(_databases)}_{name}")
    return "sqlite:///" + str(tmp_path / "costs.db")


@pytest.fixture
def store(sqlite_or_postgres: str) -> Iterator[Store]:
    """An open store over ``sqlite_or_postgres``, closed after the test."""
    opened = open_store(sqlite_or_postgres)
    try:
        yield opened
    finally:
        opened.close()
