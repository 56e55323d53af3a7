"""The demo behind ``make demo``: two use cases, two users, one experience.

Run it under ``opentelemetry-instrument`` (the Makefile does) so that it shows
the zero-code wiring: the package's entry point adds the span processor, the
OpenAI instrumentation creates the LLM spans. Without ``OPENAI_API_KEY`` it
talks to the bundled fake OpenAI server on 127.0.0.1, so it runs offline.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from . import config, track, track_context
from .testing import FakeOpenAI, FakeUsage

MODEL = config.DEMO_MODEL.read()


def _client(stack: ExitStack) -> object:
    import openai

    if os.environ.get("OPENAI_API_KEY"):
        print(f"Using the OpenAI API ({MODEL}).")
        return openai.OpenAI()
    server = stack.enter_context(
        FakeOpenAI(usage=FakeUsage(prompt_tokens=1200, completion_tokens=300, cached_tokens=400))
    )
    print(f"Using the bundled fake OpenAI server at {server.base_url} ({MODEL}).")
    return openai.OpenAI(base_url=server.base_url, api_key="demo-key")


def _ask(client: object, prompt: str) -> str:
    response = client.chat.completions.create(  # type: ignore[attr-defined]
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=50
    )
    return str(response.choices[0].message.content)


def run(client: object) -> None:
    """The app: what a user of the package writes."""

    @track(use_case_name="document_chatbot", experience_name="support_chat")
    def answer(question: str) -> str:
        return _ask(client, question)

    for user, pages in (("u-alice", 3), ("u-bob", 1)):
        with track_context("document_summarization", user_id=user):
            for _ in range(pages - 1):
                _ask(client, "Summarise the next page.")
            with track_context(use_case_step="summarize"):
                _ask(client, "Summarise: OpenTelemetry is an observability framework.")
            with track_context(use_case_step="title"):
                _ask(client, "Give that summary a title.")

    with track_context(experience_name="support_chat", user_id="u-alice"):
        answer("How do I reset my password?")
        answer("And my username?")


def _print_report() -> None:
    from .report.queries import build_report, format_report
    from .store import default_store_url, open_store

    store = open_store(default_store_url())
    try:
        for by in ("use-case", "run", "user", "experience"):
            print(f"\n$ otel-usecase report --by {by}")
            print(format_report(build_report(store, by), by, "table"))
    finally:
        store.close()
    print(f"\nStore: {store.url}  (try: otel-usecase report --by step --store {store.url})")


def main() -> int:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        print("Run me under opentelemetry-instrument with OTEL_TRACES_EXPORTER=usecase.", file=sys.stderr)
        return 1
    with ExitStack() as stack:
        run(_client(stack))
    provider.force_flush()
    _print_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
