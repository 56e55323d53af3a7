"""An app that calls the LLM from threads inside a scope; run under ``opentelemetry-instrument``.

argv[1] is the fake server's base_url. No OpenTelemetry code and no otel-usecase
call other than the scope itself: whether the calls made from the thread pool,
a plain thread and ``loop.run_in_executor`` land in the scope's run is up to the
package's ``opentelemetry_post_instrument`` hook.
"""

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import openai

from otel_usecase import track_context

client = openai.OpenAI(base_url=sys.argv[1], api_key="test-key", max_retries=0)


def ask(_: object = None) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


async def from_the_loop() -> None:
    await asyncio.get_running_loop().run_in_executor(None, ask)


with track_context("pooled", use_case_id="pool-run"):
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(ask, range(3)))  # 3 calls
        pool.submit(ask).result()  # 1 call
    thread = threading.Thread(target=ask)  # 1 call
    thread.start()
    thread.join()
    asyncio.run(from_the_loop())  # 1 call
