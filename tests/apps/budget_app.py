"""An app under ``opentelemetry-instrument`` that spends on a budget, for the budget tests.

argv: FakeOpenAI base URL, number of calls, use case name, and ``check`` to end
with a scope entry whose outcome is printed (``BLOCKED <spent> <limit>`` or
``ALLOWED <remaining>``). Prints ``MADE <n>`` once its calls are made and
``FLUSHED`` once they are in the store.
"""

import sys

import openai

from otel_usecase import BudgetExceeded, check_budget, track_context
from otel_usecase.lifecycle import flush

client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
calls, use_case = int(sys.argv[2]), sys.argv[3]
for _ in range(calls):
    with track_context(use_case):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
print(f"MADE {calls}", flush=True)
print("FLUSHED" if flush(30) else "NOT FLUSHED", flush=True)
if len(sys.argv) > 4 and sys.argv[4] == "check":
    try:
        with track_context(use_case):
            print(f"ALLOWED {check_budget()}", flush=True)
    except BudgetExceeded as exc:
        print(f"BLOCKED {exc.spent_usd} {exc.limit_usd}", flush=True)
