"""``multiprocessing`` fork children making OpenAI calls while the parent's exporter is busy.

argv: store URL, FakeOpenAI base URL. The parent keeps making calls on a thread
(its exports run all the time) while it forks 4 children; each child makes 5
calls and ends with the documented call, ``otel_usecase.lifecycle.flush()``:
children exit through ``os._exit``, with no ``atexit`` and no SDK shutdown.
"""

import multiprocessing
import sys
import threading

import openai
from opentelemetry import trace
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
from otel_usecase.lifecycle import flush

STORE, BASE_URL = sys.argv[1], sys.argv[2]
MSG = [{"role": "user", "content": "x"}]

provider = TracerProvider()
provider.add_span_processor(UseCaseSpanProcessor())
provider.add_span_processor(BatchSpanProcessor(UseCaseCostExporter(store=STORE), schedule_delay_millis=20))
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()


def child(i: int) -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key="k", max_retries=0)
    with track_context("forked", use_case_id=f"child-{i}"):
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert flush(timeout_s=30), "flush() left calls behind"


def parent_load(stop: threading.Event, made: list[int]) -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key="k", max_retries=0)
    with track_context("parent", use_case_id="parent-run"):
        while not stop.is_set():
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            made.append(1)


if __name__ == "__main__":
    stop = threading.Event()
    made: list[int] = []
    load = threading.Thread(target=parent_load, args=(stop, made))
    load.start()
    context = multiprocessing.get_context("fork")
    children = []
    for i in range(4):
        while len(made) < 5 * (i + 1):  # fork while the parent's exports run
            threading.Event().wait(0.01)
        process = context.Process(target=child, args=(i,))
        process.start()
        children.append(process)
    for process in children:
        process.join(60)
        assert process.exitcode == 0, f"child exit code {process.exitcode}"
    stop.set()
    load.join(60)
    print(f"PARENT_MADE {len(made)}", flush=True)
    # the parent exits normally: atexit flushes its own calls
