"""The app under test for the cost engine: a TracerProvider wired the documented way."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor

from .expect import report_json


class CostRig:
    """Processor + ``BatchSpanProcessor(UseCaseCostExporter)`` + the real OpenAI instrumentation(s).

    ``captured`` also keeps every finished span, so a test can look at what was exported.
    """

    def __init__(
        self,
        store_url: str,
        prices: str | None = None,
        *,
        both_instrumentations: bool = False,
        max_buffered_calls: int | None = None,
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
        self.instrumentors: list[Any] = [OpenAIInstrumentor()]
        if both_instrumentations:
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor

            self.instrumentors.append(OpenAIV2Instrumentor())
        for instrumentor in self.instrumentors:
            instrumentor.instrument(tracer_provider=self.provider)

    def flush(self) -> None:
        assert self.provider.force_flush()

    def close(self) -> None:
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        self.provider.shutdown()

    def report(self, by: str = "use-case", **kwargs: Any) -> list[dict[str, Any]]:
        """What ``otel-usecase report --format json`` says once everything exported is written."""
        self.flush()
        return report_json(self.store_url, by, **kwargs)
