"""The app under test for the cost engine: a TracerProvider wired the documented way."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import openai
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
from otel_usecase.testing import FakeOpenAI

from .expect import report_json

_TRACELOOP_MODULE = "opentelemetry.instrumentation.openai."
"""Traceloop's wrappers live in this package (``-openai-v2``'s in ``opentelemetry.instrumentation.openai_v2``)."""


def unwrap_traceloop_leftovers() -> None:
    """Undo the wrappers an uninstrumented Traceloop ``OpenAIInstrumentor`` left on the openai client.

    Traceloop 0.62.4's ``_uninstrument`` unwraps in ``try`` blocks that import modules openai 3.x no
    longer has (``openai.resources.beta.chat.completions``): the ImportError skips the rest, so
    ``Responses.create`` and ``Completions.create`` stay wrapped with the first provider's tracer. Each
    instrument/uninstrument cycle (one per test) then adds a layer: a later instrumentor's Responses
    spans go to a shut-down provider, and after a few dozen chat layers a stream through ``-openai-v2``
    (whose metrics probe the wrapped stream's attributes) takes minutes. Apps instrument once; tests
    clean up here, after every test (``conftest._clean_state``). Only Traceloop's own wrappers, only
    from the top and only while Traceloop is not instrumented: another instrumentor's live wrapper stays.
    """
    import wrapt
    from openai.resources import completions, embeddings, responses
    from openai.resources.chat import completions as chat_completions
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    if OpenAIInstrumentor().is_instrumented_by_opentelemetry:
        return
    for module in (chat_completions, completions, embeddings, responses):
        for owner in vars(module).values():
            if not isinstance(owner, type) or not owner.__module__.startswith(module.__name__):
                continue
            for name, member in list(vars(owner).items()):
                while isinstance(member, wrapt.ObjectProxy) and getattr(
                    getattr(member, "_self_wrapper", None), "__module__", ""
                ).startswith(_TRACELOOP_MODULE):
                    member = member.__wrapped__
                    setattr(owner, name, member)


class CostRig:
    """Processor + ``BatchSpanProcessor(UseCaseCostExporter)`` + the real OpenAI instrumentation(s).

    ``captured`` also keeps every finished span, so a test can look at what was exported.
    ``instrumentors`` replaces the default (Traceloop's) with other instrumentor instances,
    e.g. OpenInference's, which records what Traceloop's leaves out.
    """

    def __init__(
        self,
        store_url: str,
        prices: str | None = None,
        *,
        both_instrumentations: bool = False,
        max_buffered_calls: int | None = None,
        instrumentors: Sequence[Any] | None = None,
    ) -> None:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        self.store_url = store_url
        self.provider = TracerProvider()
        self.provider.add_span_processor(UseCaseSpanProcessor())
        self.exporter = UseCaseCostExporter(
            store=store_url, prices=prices, max_buffered_calls=max_buffered_calls
        )
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.captured = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.captured))
        self.instrumentors: list[Any] = (
            [OpenAIInstrumentor()] if instrumentors is None else list(instrumentors)
        )
        if both_instrumentations:
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor

            self.instrumentors.append(OpenAIV2Instrumentor())
        unwrap_traceloop_leftovers()
        for instrumentor in self.instrumentors:
            instrumentor.instrument(tracer_provider=self.provider)

    def flush(self) -> None:
        assert self.provider.force_flush()

    def close(self) -> None:
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        unwrap_traceloop_leftovers()
        self.provider.shutdown()

    def report(self, by: str = "use-case", **kwargs: Any) -> list[dict[str, Any]]:
        """What ``otel-usecase report --format json`` says once everything exported is written."""
        self.flush()
        return report_json(self.store_url, by, **kwargs)


class Recorded:
    """A provider with our processor and both OpenAI instrumentations; finished spans kept in memory."""

    def __init__(self, fake: FakeOpenAI) -> None:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor

        self.provider = TracerProvider(resource=Resource.create({"service.name": "sink-test-app"}))
        self.provider.add_span_processor(UseCaseSpanProcessor())
        self.memory = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.instrumentors: list[Any] = [OpenAIInstrumentor(), OpenAIV2Instrumentor()]
        for instrumentor in self.instrumentors:
            instrumentor.instrument(tracer_provider=self.provider)
        self.client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)

    def ask(self, use_case: str, times: int = 1) -> list[ReadableSpan]:
        """``times`` requests in one run; returns their LLM spans (two per request), in the order they ended."""
        self.memory.clear()
        with track_context(use_case):
            for _ in range(times):
                self.client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
                )
        return [
            s for s in self.memory.get_finished_spans() if (s.attributes or {}).get("gen_ai.operation.name")
        ]

    def close(self) -> None:
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        self.provider.shutdown()


def without_keys(span: ReadableSpan, keys: Collection[str]) -> ReadableSpan:
    """A copy of ``span`` without the attributes ``keys``: the same request as another instrumentation saw it."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={k: v for k, v in (span.attributes or {}).items() if k not in keys},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
