"""An app with no OpenTelemetry code of its own; run under ``opentelemetry-instrument``.

argv[1] is the fake server's base_url. It prints one JSON line describing what
it can observe without touching OTel internals, plus the processor count.
"""

import json
import sys

import openai
from opentelemetry import trace

from otel_usecase import UseCaseSpanProcessor, track_context
from otel_usecase.processor import add_to_global_provider

client = openai.OpenAI(base_url=sys.argv[1], api_key="test-key", max_retries=0)
with track_context("zero_code_case", user_id="u-zero") as scope:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

add_to_global_provider()  # a second call must not add a second processor
provider = trace.get_tracer_provider()
processors = provider._active_span_processor._span_processors  # type: ignore[attr-defined]
print(
    "RESULT "
    + json.dumps(
        {
            "use_case_id": scope.use_case_id,
            "provider": type(provider).__name__,
            "usecase_processors": sum(isinstance(p, UseCaseSpanProcessor) for p in processors),
        }
    ),
    file=sys.stderr,
)
