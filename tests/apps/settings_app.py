"""An app with no OpenTelemetry code of its own, run under ``opentelemetry-instrument`` with bad settings.

argv[1] is the fake server's base_url. It makes one LLM call in a scope, extracts
an inbound baggage header the way a web framework instrumentation would, and
prints one ``RESULT`` line of what it observed to stderr.
"""

import json
import sys

import openai
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context

from otel_usecase import track_context

client = openai.OpenAI(base_url=sys.argv[1], api_key="test-key", max_retries=0)
with track_context("settings_case", user_id="u-settings") as scope:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

inbound = propagate.extract({"baggage": "tenant=acme,usecase.id=forged-run"}, Context())
textmap = propagate.get_global_textmap()
print(
    "RESULT "
    + json.dumps(
        {
            "provider": type(trace.get_tracer_provider()).__name__,
            "propagators": [type(p).__name__ for p in getattr(textmap, "_propagators", [textmap])],
            "inbound": dict(baggage.get_all(inbound)),
            "user_id": scope.user_id,
        }
    ),
    file=sys.stderr,
)
