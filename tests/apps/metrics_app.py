"""An app whose LLM calls the metrics tests count in a real Prometheus.

argv: the fake server's base_url, then ``code PORT`` (the app sets up its own
``MeterProvider`` with the Prometheus exporter on 127.0.0.1:PORT and its own
tracing, the documented way) or ``zero`` (no OpenTelemetry code: run under
``opentelemetry-instrument`` with ``OTEL_METRICS_EXPORTER=prometheus`` and
``OTEL_TRACES_EXPORTER=usecase``). It makes the calls of :data:`PLAN`, flushes,
prints ``READY`` and serves its metrics until its stdin closes.
"""

import sys

import openai

from otel_usecase import track_context
from otel_usecase.lifecycle import flush

PLAN = [
    # (use case, version, step, model, calls)
    ("summarize", "v2", "draft", "gpt-4o-mini", 3),
    ("summarize", "v2", "review", "gpt-4o-mini", 2),
    ("chat", None, None, "gpt-4o", 2),
    ("chat", None, None, "acme-unknown-1", 1),
]


def main() -> None:
    base_url, mode = sys.argv[1], sys.argv[2]
    if mode == "code":
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from prometheus_client import start_http_server

        from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor

        start_http_server(int(sys.argv[3]), addr="127.0.0.1")
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
        provider = TracerProvider()
        provider.add_span_processor(UseCaseSpanProcessor())
        provider.add_span_processor(BatchSpanProcessor(UseCaseCostExporter()))
        trace.set_tracer_provider(provider)
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)
    n = 0
    for use_case, version, step, model, calls in PLAN:
        for _ in range(calls):
            n += 1
            with track_context(use_case, use_case_version=version, use_case_step=step, user_id=f"user-{n}"):
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert flush(30.0)
    print("READY", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
