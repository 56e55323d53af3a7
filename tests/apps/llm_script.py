"""A plain script run under ``opentelemetry-instrument``: N OpenAI calls, then it waits to be stopped.

argv: FakeOpenAI base URL, number of calls, and ``own-handler`` to install the app's
own SIGTERM handler (which chains to the previous one, as well-behaved libraries do).
It prints ``PID <pid>`` at start and ``MADE <n>`` once its calls are made; the
calls' spans are still in the SDK's queue (5 s schedule delay) when it is stopped.
"""

import os
import signal
import sys
import time

import openai

from otel_usecase import track_context

if len(sys.argv) > 3 and sys.argv[3] == "own-handler":
    previous = signal.getsignal(signal.SIGTERM)

    def app_handler(signum: int, frame: object) -> None:
        print("APP HANDLER RAN", flush=True)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, app_handler)

print(f"PID {os.getpid()}", flush=True)
client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
with track_context("scripted", use_case_id="script-run"):
    for _ in range(int(sys.argv[2])):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
print(f"MADE {sys.argv[2]}", flush=True)
while True:
    time.sleep(1)
