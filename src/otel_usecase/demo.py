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
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import attributes as attr
from . import track, track_context
from .testing import FakeOpenAI, FakeUsage

MODEL = os.environ.get("OTEL_USECASE_DEMO_MODEL", "gpt-4o-mini")


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

    for user in ("u-alice", "u-bob"):
        with track_context("document_summarization", user_id=user):
            with track_context(use_case_step="summarize"):
                _ask(client, "Summarise: OpenTelemetry is an observability framework.")
            with track_context(use_case_step="title"):
                _ask(client, "Give that summary a title.")

    with track_context(experience_name="support_chat", user_id="u-alice"):
        answer("How do I reset my password?")
        answer("And my username?")


def _print_stamped(spans: list[ReadableSpan]) -> None:
    keys = (attr.USE_CASE_NAME, attr.USE_CASE_ID, attr.USE_CASE_STEP, attr.EXPERIENCE_NAME, attr.USER_ID)
    print(f"\n{len(spans)} LLM span(s) stamped by UseCaseSpanProcessor:")
    print("  " + "  ".join(f"{k:<22}" for k in keys))
    for span in spans:
        values = span.attributes or {}
        cells = [str(values.get(k, "-")) for k in keys]
        cells[1] = cells[1][:8] + "…" if len(cells[1]) > 9 else cells[1]
        print("  " + "  ".join(f"{c:<22}" for c in cells))


def main() -> int:
    provider = trace.get_tracer_provider()
    exporter = InMemorySpanExporter()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        print("Run me under opentelemetry-instrument to see the stamped spans.", file=sys.stderr)
    with ExitStack() as stack:
        run(_client(stack))
    llm = [s for s in exporter.get_finished_spans() if (s.attributes or {}).get(attr.USE_CASE_NAME)]
    _print_stamped(llm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
