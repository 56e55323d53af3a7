"""os.fork() while the exporter's writer is stuck in a write (SQLite locked by another connection).

argv: store URL (sqlite:///...), FakeOpenAI base URL. The child inherits a writer
mid-write: the store's lock held, the SQLite connection in a transaction, calls in
the buffer. It must record its own calls (and only those) and flush with
``otel_usecase.lifecycle.flush()``; the parent's calls are written by the parent.
Prints ``CHILD_EXIT <code>``.
"""

import os
import subprocess
import sys
import time

import openai
from opentelemetry import trace
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
from otel_usecase.lifecycle import flush

STORE, BASE_URL = sys.argv[1], sys.argv[2]
MSG = [{"role": "user", "content": "x"}]

exporter = UseCaseCostExporter(store=STORE)
provider = TracerProvider()
provider.add_span_processor(UseCaseSpanProcessor())
provider.add_span_processor(BatchSpanProcessor(exporter))
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()


def calls(run: str, n: int) -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key="k", max_retries=0)
    with track_context("forked_mid_write", use_case_id=run):
        for _ in range(n):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)


calls("parent", 1)
provider.force_flush()  # the store exists
HOLD_LOCK = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN EXCLUSIVE'); print('LOCKED', flush=True); sys.stdin.readline(); c.execute('ROLLBACK')"
)
# another process's writer holds the lock (a connection of our own would be inherited by the child)
blocker = subprocess.Popen(
    [
        sys.executable,
        "-c",
        HOLD_LOCK,
        STORE.removeprefix("sqlite:///"),
    ],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
)
assert blocker.stdout is not None and blocker.stdout.readline().strip() == "LOCKED"
calls("parent", 3)
provider.force_flush()  # returns after its short wait; the writer stays in SQLite's busy wait
assert exporter.buffered_calls == 3, exporter.buffered_calls

pid = os.fork()
if pid == 0:
    calls("child", 4)
    os._exit(0 if flush(timeout_s=60) else 1)

time.sleep(1.0)
blocker.communicate("\n", timeout=30)  # the other process lets go
deadline = time.monotonic() + 90
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print(f"CHILD_EXIT {os.waitstatus_to_exitcode(status)}", flush=True)
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        print("CHILD_EXIT hung", flush=True)
        break
    time.sleep(0.05)
# the parent exits normally: atexit writes its buffered calls
