"""UseCaseSpanProcessor against a real SDK TracerProvider and the real OpenAI instrumentation."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import openai
import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseSpanProcessor, set_default_use_case, track, track_context
from otel_usecase.scope import keys as attr

from .conftest import Traced

MESSAGES = [{"role": "user", "content": "Summarise this."}]


def stamped(span: object) -> dict[str, object]:
    attributes = getattr(span, "attributes", None) or {}
    return {k: v for k, v in attributes.items() if k in attr.ALL_KEYS}


def test_llm_span_in_scope_is_stamped(traced: Traced, client: openai.OpenAI) -> None:
    exp = str(uuid.uuid4())
    with track_context(
        "document_summarization",
        use_case_version="v3",
        use_case_step="summarize",
        experience_name="support_chat",
        experience_id=exp,
        user_id="u-42",
    ) as scope:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (span,) = traced.llm_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation.openai")
    assert stamped(span) == {
        attr.USE_CASE_NAME: "document_summarization",
        attr.USE_CASE_ID: scope.use_case_id,
        attr.USE_CASE_VERSION: "v3",
        attr.USE_CASE_STEP: "summarize",
        attr.EXPERIENCE_NAME: "support_chat",
        attr.EXPERIENCE_ID: exp,
        attr.USER_ID: "u-42",
    }


def test_streaming_and_embeddings_spans_are_stamped(traced: Traced, client: openai.OpenAI) -> None:
    with track_context("rag", user_id="u-1") as scope:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    spans = traced.llm_spans()
    assert {s.attributes["gen_ai.operation.name"] for s in spans} == {"chat", "embeddings"}  # type: ignore[index]
    for span in spans:
        assert stamped(span)[attr.USE_CASE_ID] == scope.use_case_id
        assert stamped(span)[attr.USER_ID] == "u-1"


def test_non_llm_spans_are_not_stamped_by_default(traced: Traced, client: openai.OpenAI) -> None:
    tracer = traced.provider.get_tracer("my.app")
    with track_context("rag"), tracer.start_as_current_span("handler"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    by_name = {s.name: s for s in traced.spans()}
    assert stamped(by_name["handler"]) == {}
    assert stamped(by_name["openai.chat"])[attr.USE_CASE_NAME] == "rag"


def test_span_with_genai_attribute_at_start_is_llm() -> None:
    provider, exporter = _provider(UseCaseSpanProcessor())
    tracer = provider.get_tracer("some.custom.llm.wrapper")
    with track_context("custom"):
        tracer.start_span("call", attributes={"gen_ai.provider.name": "mistral_ai"}).end()
        tracer.start_span("plain").end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert stamped(spans["call"])[attr.USE_CASE_NAME] == "custom"
    assert stamped(spans["plain"]) == {}


def test_spans_all_stamps_every_span_in_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_USECASE_SPANS", "all")
    provider, exporter = _provider(UseCaseSpanProcessor())
    tracer = provider.get_tracer("my.app")
    tracer.start_span("outside").end()
    with track_context("everything"):
        tracer.start_span("inside").end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert stamped(spans["inside"])[attr.USE_CASE_NAME] == "everything"
    assert stamped(spans["outside"]) == {}


@pytest.mark.parametrize("default", [None, "background"])
def test_spans_in_and_out_of_scopes_in_any_order(default: str | None) -> None:
    """on_start orders its two tests by what recent spans needed; results must not depend on it."""
    if default is not None:
        set_default_use_case(default)
    provider, exporter = _provider(UseCaseSpanProcessor())
    app = provider.get_tracer("my.app")
    llm = provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    expected: dict[str, dict[str, object]] = {}
    pattern = ["in", "in", "out", "out", "in", "out", "in", "in", "out"]
    for i, where in enumerate(pattern):
        with track_context(f"uc_{i}") if where == "in" else contextlib.nullcontext() as scope:
            app.start_span(f"app-{i}-a").end()
            llm.start_span(f"llm-{i}", attributes={"gen_ai.operation.name": "chat"}).end()
            app.start_span(f"genai-{i}", attributes={"gen_ai.system": "openai"}).end()
            app.start_span(f"app-{i}-b").end()
        if scope is not None:
            llm_stamp: dict[str, object] = {
                attr.USE_CASE_NAME: f"uc_{i}",
                attr.USE_CASE_ID: scope.use_case_id,
            }
        else:
            llm_stamp = {attr.USE_CASE_NAME: default} if default is not None else {}
        expected.update({f"app-{i}-a": {}, f"llm-{i}": llm_stamp, f"genai-{i}": llm_stamp, f"app-{i}-b": {}})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {name: stamped(spans[name]) for name in expected} == expected


@pytest.mark.parametrize("spans", ["llm", "all"])
def test_only_the_same_request_nested_in_a_model_span_is_marked_as_it(spans: str) -> None:
    """usecase.call.span_id joins two instrumentations of one request, never calls under a chain or agent."""
    provider, exporter = _provider(UseCaseSpanProcessor(spans=spans))
    client = provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    inner_client = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    agents = provider.get_tracer("opentelemetry.instrumentation.openai_agents")
    langchain = provider.get_tracer("openinference.instrumentation.langchain")
    chat = {"gen_ai.operation.name": "chat"}
    with track_context("nesting"):
        for parent_tracer, name, parent_attributes in [
            (agents, "invoke_agent", {"gen_ai.operation.name": "invoke_agent"}),
            (agents, "execute_tool", {"gen_ai.operation.name": "execute_tool"}),
            (langchain, "chain", {"openinference.span.kind": "CHAIN"}),
            (langchain, "agent", {"openinference.span.kind": "AGENT"}),
            (langchain, "embedding batch", {"openinference.span.kind": "EMBEDDING"}),
            (client, "chat", chat),
            (agents, "generation", {"gen_ai.operation.name": "chat"}),
        ]:
            with parent_tracer.start_as_current_span(name, attributes=parent_attributes):
                with inner_client.start_as_current_span(f"{name}/chat", attributes=chat):
                    inner_client.start_span(f"{name}/chat/chat", attributes=chat).end()
                inner_client.start_span(
                    f"{name}/embeddings", attributes={"gen_ai.operation.name": "embeddings"}
                ).end()
    spans = {s.name: s for s in exporter.get_finished_spans()}

    def mark(name: str) -> object:
        return (spans[name].attributes or {}).get(attr.CALL_SPAN_ID)

    def hex_id(name: str) -> str:
        return format(spans[name].context.span_id, "016x")

    for name in ("invoke_agent", "execute_tool", "chain", "agent", "embedding batch"):
        assert mark(f"{name}/chat") is None, name  # its own call
        assert mark(f"{name}/chat/chat") == hex_id(f"{name}/chat"), name  # a second instrumentation of it
        assert mark(f"{name}/embeddings") is None, name
    for name in ("chat", "generation"):
        assert mark(f"{name}/chat") == hex_id(name)
        assert mark(f"{name}/chat/chat") == hex_id(name)  # the outermost span of the request
        assert mark(f"{name}/embeddings") is None  # another operation: another request


def test_constructor_argument_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_USECASE_SPANS", "all")
    assert UseCaseSpanProcessor(spans="llm").spans == "llm"
    with pytest.raises(ValueError, match="'some' is not one of llm, all"):
        UseCaseSpanProcessor(spans="some")


def test_bad_env_value_warns_and_uses_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_USECASE_SPANS", "everything")
    assert UseCaseSpanProcessor().spans == "llm"
    assert "OTEL_USECASE_SPANS='everything'" in caplog.text


def test_existing_attribute_is_not_overwritten() -> None:
    provider, exporter = _provider(UseCaseSpanProcessor())
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    with track_context("scoped", user_id="from-scope"):
        tracer.start_span("chat", attributes={attr.USER_ID: "set-by-instrumentation"}).end()
    (span,) = exporter.get_finished_spans()
    assert span.attributes[attr.USER_ID] == "set-by-instrumentation"  # type: ignore[index]
    assert span.attributes[attr.USE_CASE_NAME] == "scoped"  # type: ignore[index]


def test_span_outside_scope_gets_nothing(traced: Traced, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (span,) = traced.llm_spans()
    assert stamped(span) == {}


def test_default_use_case_applies_outside_scopes_only(traced: Traced, client: openai.OpenAI) -> None:
    set_default_use_case("background")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with track_context("explicit"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with track_context(user_id="only-user"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    first, second, third = traced.llm_spans()
    assert stamped(first) == {attr.USE_CASE_NAME: "background"}
    assert stamped(second)[attr.USE_CASE_NAME] == "explicit"
    assert stamped(third) == {attr.USE_CASE_NAME: "background", attr.USER_ID: "only-user"}


def test_default_use_case_from_env(
    monkeypatch: pytest.MonkeyPatch, client: openai.OpenAI, fake_openai: object
) -> None:
    monkeypatch.setenv("OTEL_USECASE_DEFAULT_NAME", "nightly_batch")
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    provider, exporter = _provider(UseCaseSpanProcessor())
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        OpenAIInstrumentor().uninstrument()
    (span,) = exporter.get_finished_spans()
    assert stamped(span) == {attr.USE_CASE_NAME: "nightly_batch"}


def test_untrusted_baggage_is_dropped_or_normalised_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, exporter = _provider(UseCaseSpanProcessor())
    tracer = provider.get_tracer("opentelemetry.instrumentation.anthropic")
    ctx = baggage.set_baggage(attr.USE_CASE_NAME, "name with spaces")
    ctx = baggage.set_baggage(attr.USER_ID, "u" * 257, ctx)
    ctx = baggage.set_baggage(attr.USE_CASE_ID, "run-1", ctx)
    token = context.attach(ctx)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_usecase"):
            for _ in range(5):
                tracer.start_span("messages").end()
    finally:
        context.detach(token)
    # A bad name is dropped; an over-long id is normalised as a local scope would (tests/test_ids.py).
    long_user = "u" * 64 + "~sha256:" + hashlib.sha256(b"u" * 257).hexdigest()[:32]
    for span in exporter.get_finished_spans():
        assert stamped(span) == {attr.USE_CASE_ID: "run-1", attr.USER_ID: long_user}
    name_warnings = [r for r in caplog.records if "usecase.name" in r.getMessage()]
    user_warnings = [r for r in caplog.records if "user.id" in r.getMessage()]
    assert len(name_warnings) == 1 and len(user_warnings) == 1
    assert "'name with spaces'" in name_warnings[0].getMessage()


def test_processor_never_raises_into_the_app() -> None:
    """A span object that breaks on attribute access must not break span creation."""

    class Broken:
        @property
        def instrumentation_scope(self) -> object:
            raise RuntimeError("broken")

    processor = UseCaseSpanProcessor()
    with track_context("x"):
        processor.on_start(Broken())  # type: ignore[arg-type]


@track(use_case_name="document_chatbot", experience_name="support_chat")
async def answer(client: openai.AsyncOpenAI, question: str) -> str:
    response = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
    return response.choices[0].message.content or ""


async def test_async_decorated_calls_are_separate_runs(traced: Traced, fake_openai: object) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0)  # type: ignore[attr-defined]
    await asyncio.gather(*(answer(client, f"q{i}") for i in range(6)))
    spans = traced.llm_spans()
    assert len(spans) == 6
    assert len({stamped(s)[attr.USE_CASE_ID] for s in spans}) == 6
    assert len({stamped(s)[attr.EXPERIENCE_ID] for s in spans}) == 6
    assert {stamped(s)[attr.USE_CASE_NAME] for s in spans} == {"document_chatbot"}


def _provider(processor: UseCaseSpanProcessor) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_stamping_and_reports_do_not_load_the_price_data(tmp_path: Path) -> None:
    """``import otel_usecase`` and ``otel-usecase report`` leave genai-prices (and pydantic) unloaded.

    The report command does not load the OpenTelemetry SDK either: it starts in a tenth of a second.
    """
    script = (
        "import sys\n"
        "from otel_usecase.cli import main\n"
        "from otel_usecase.store import open_store\n"
        f"open_store('sqlite:///{tmp_path}/c.db').close()  # reports read an existing store only\n"
        f"assert main(['report', '--by', 'run', '--format', 'json', '--store', 'sqlite:///{tmp_path}/c.db']) == 0\n"
        "assert 'genai_prices' not in sys.modules, 'the report command loaded genai_prices'\n"
        "assert 'opentelemetry.sdk.trace' not in sys.modules, 'the report command loaded the SDK'\n"
        "import otel_usecase\n"
        "from otel_usecase import UseCaseSpanProcessor, track_context, attributes\n"
        "assert UseCaseSpanProcessor.__module__ == 'otel_usecase.processor' and attributes.USE_CASE_NAME\n"
        "assert 'genai_prices' not in sys.modules, 'import otel_usecase loaded genai_prices'\n"
        "otel_usecase.UseCaseCostExporter\n"
        "assert 'genai_prices' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
