"""A support bot run under ``opentelemetry-instrument``: real OpenAI calls, outcomes recorded, then stopped.

argv: FakeOpenAI base URL, then ``exit`` (ends normally) or ``wait`` (waits to be stopped by SIGTERM).
Run ``ticket-1`` makes 2 calls and resolves its ticket; ``ticket-2`` makes 1 call and resolves nothing;
later, outside any scope, ticket-1 gets a satisfaction score (``csat`` 4.5) by run id, as a feedback
endpoint would. It prints ``DONE`` when all is recorded; the spans are still in the SDK's queue
(5 s schedule delay) then, so only the exporter's flush at exit or SIGTERM writes them.
"""

import sys
import time

import openai

from otel_usecase import record_outcome, track_context

client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
MSG = [{"role": "user", "content": "my order is late"}]

with track_context("support", use_case_id="ticket-1", user_id="u-1"):
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert record_outcome("ticket_resolved")
with track_context("support", use_case_id="ticket-2", user_id="u-2"):
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
assert record_outcome("csat", 4.5, run_id="ticket-1", use_case="support")
print("DONE", flush=True)
if sys.argv[2] == "wait":
    while True:
        time.sleep(1)
