"""The app under test for the cost engine: a TracerProvider wired the documented way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor

from .expect import report_json

_RESPONSES_METHODS = (
    "Responses.create",
    "Responses.retrieve",
    "Responses.parse",
    "Responses.cancel",
    "AsyncResponses.create",
    "AsyncResponses.retrieve",
    "AsyncResponses.parse",
    "AsyncResponses.cancel",
)


def unwrap_responses_leftovers() -> None:
    """Undo the Responses API wrappers an earlier Traceloop ``OpenAIInstrumentor`` left behind.

    Traceloop 0.62.4's ``_uninstrument`` unwraps the Responses API in the same ``try`` as
    ``openai.resources.beta.chat.completions``, a module openai 3.x no longer has: the ImportError
    skips the rest, so ``Responses.create`` stays wrapped with the first provider's tracer and a later
    instrumentor's Responses spans go to that (shut down) provider. Without this, whichever test
    instruments second sees no Responses API span at all.
    """
    from openai.resources import responses
    from opentelemetry.instrumentation.utils import unwrap

    for path in _RESPONSES_METHODS:
        owner_name, method = path.split(".")
        owner = getattr(responses, owner_name)
        while hasattr(getattr(owner, method, None), "__wrapped__"):
            unwrap(owner, method)


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
        unwrap_responses_leftovers()
        for instrumentor in self.instrumentors:
            instrumentor.instrument(tracer_provider=self.provider)

    def flush(self) -> None:
        assert self.provider.force_flush()

    def close(self) -> None:
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        unwrap_responses_leftovers()
        self.provider.shutdown()

    def report(self, by: str = "use-case", **kwargs: Any) -> list[dict[str, Any]]:
        """What ``otel-usecase report --format json`` says once everything exported is written."""
        self.flush()
        return report_json(self.store_url, by, **kwargs)
