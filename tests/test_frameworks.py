"""Calls made inside agent and chain frameworks: each request the server answered is one ledger row.

Real LangChain (``create_agent`` with a tool, and an LCEL chain) traced by OpenInference, and
the real ``openai-agents`` SDK traced by its OpenInference and OpenTelemetry instrumentations,
each also with an OpenAI client instrumentation alongside, all against :class:`FakeOpenAI`,
which counts the requests it answered. Expected costs come from published prices
(``tests/expect.py``), never from the code under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
from otel_usecase.testing import FakeOpenAI, FakeToolCall, FakeUsage

from .expect import mini_cost, report_json

PROMPT, COMPLETION, CACHED = 1_200, 300, 200
USAGE = FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION, cached_tokens=CACHED)
# The Agents SDK instrumentations (OpenInference on chat completions, opentelemetry-instrumentation-
# openai-agents-v2 0.1.0) do not record cached tokens: their spans would price cached input at the
# full rate, so the agents tests send none and check the counting only.
UNCACHED = FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
WEATHER = FakeToolCall("get_weather", '{"city": "Paris"}')


@pytest.fixture(autouse=True)
def _no_leftover_traceloop_wrappers() -> None:
    """Undo the OpenAI wrappers that earlier tests' Traceloop instrumentations left behind.

    ``opentelemetry-instrumentation-openai`` 0.62.4's ``uninstrument`` is a no-op with
    ``opentelemetry-instrumentation`` 0.66: it calls ``unwrap("openai.resources.chat.completions",
    "Completions.create")``, a form that ``unwrap`` resolves to a missing attribute. The wrappers of
    every earlier test stay, start spans for that test's shut-down provider and make them current,
    so this test's spans would have parents it never sees. No application uninstruments; tests do.
    """
    import sys

    import wrapt

    for name in [m for m in sys.modules if m.startswith("openai.resources")]:
        for cls in [c for c in vars(sys.modules[name]).values() if isinstance(c, type)]:
            for attribute, value in list(vars(cls).items()):
                while isinstance(value, wrapt.ObjectProxy) and getattr(
                    getattr(value, "_self_wrapper", None), "__module__", ""
                ).startswith("opentelemetry.instrumentation.openai."):
                    value = value.__wrapped__
                    setattr(cls, attribute, value)


def _instrumentor(name: str) -> Any:
    """The real instrumentor called ``name`` in the test ids."""
    if name == "oi-langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        return LangChainInstrumentor()
    if name == "oi-openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        return OpenAIInstrumentor()
    if name == "traceloop-openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TraceloopOpenAIInstrumentor

        return TraceloopOpenAIInstrumentor()
    if name == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2Instrumentor

        return V2Instrumentor()
    if name == "oi-agents":
        from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

        return OpenAIAgentsInstrumentor()
    if name == "otel-agents":
        from opentelemetry.instrumentation.openai_agents import (
            OpenAIAgentsInstrumentor as OtelAgentsInstrumentor,
        )

        return OtelAgentsInstrumentor()
    raise AssertionError(f"unknown instrumentation {name!r}")


class FrameworkRig:
    """The documented wiring (processor + ``BatchSpanProcessor(UseCaseCostExporter)``) with chosen instrumentations."""

    def __init__(self, store_url: str, instrumentations: tuple[str, ...], *, processor: bool = True) -> None:
        self.store_url = store_url
        self.provider = TracerProvider()
        if processor:
            self.provider.add_span_processor(UseCaseSpanProcessor())
        self.provider.add_span_processor(BatchSpanProcessor(UseCaseCostExporter(store=store_url)))
        self.captured = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.captured))
        self.instrumentors = [_instrumentor(name) for name in instrumentations]
        for instrumentor in self.instrumentors:
            instrumentor.instrument(tracer_provider=self.provider)

    def close(self) -> None:
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        self.provider.shutdown()

    def rows(self) -> dict[str, Any]:
        """The one report row of the test's use case, once everything exported is written."""
        assert self.provider.force_flush()
        (row,) = report_json(self.store_url)
        return row

    def model_spans(self) -> int:
        """How many exported spans describe a model request, whichever instrumentation wrote them."""
        return sum(
            1
            for s in self.captured.get_finished_spans()
            if (s.attributes or {}).get("openinference.span.kind") == "LLM"
            or (s.attributes or {}).get("gen_ai.operation.name") in ("chat", "responses")
        )


@pytest.fixture
def framework_rig(request: pytest.FixtureRequest, store_url: str) -> Iterator[FrameworkRig]:
    """A FrameworkRig with the instrumentations named by the parameter; ``"no-processor"`` leaves ours out."""
    names = tuple(n for n in request.param if n != "no-processor")
    rig = FrameworkRig(store_url, names, processor="no-processor" not in request.param)
    try:
        yield rig
    finally:
        rig.close()


def assert_each_request_once(
    rig: FrameworkRig, fake: FakeOpenAI, requests: int, cached: int = CACHED
) -> None:
    """N requests answered = N ledger rows = N times the published price of one request."""
    answered = [r for r in fake.requests if r.path.endswith(("/chat/completions", "/responses"))]
    assert len(answered) == requests
    row = rig.rows()
    assert (row["calls"], row["no_usage_calls"], row["unpriced_calls"]) == (requests, 0, 0)
    assert row["cost_usd"] == pytest.approx(requests * mini_cost(PROMPT, COMPLETION, cached), rel=1e-9)
    assert row["input_tokens"] == requests * PROMPT


# -- LangChain traced by OpenInference -----------------------------------------------------------

LANGCHAIN_SETUPS = [
    ("oi-langchain",),
    ("oi-langchain", "oi-openai"),
    ("oi-langchain", "traceloop-openai"),
    ("oi-langchain", "traceloop-openai", "openai-v2"),
]


def _weather_agent(fake: FakeOpenAI) -> Any:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = ChatOpenAI(model="gpt-4o-mini", base_url=fake.base_url, api_key="test-key", max_retries=0)
    return create_agent(model, tools=[get_weather])


@pytest.mark.parametrize("framework_rig", LANGCHAIN_SETUPS, indirect=True, ids="+".join)
def test_langchain_agent_with_tools_counts_every_request(
    framework_rig: FrameworkRig, fake_openai: FakeOpenAI
) -> None:
    fake_openai.respond(usage=USAGE)
    fake_openai.call_tools(WEATHER, times=2)  # two tool rounds, then the answer: 3 requests per run
    agent = _weather_agent(fake_openai)
    with track_context("weather_agent"):
        agent.invoke({"messages": [{"role": "user", "content": "Weather in Paris?"}]})
    assert framework_rig.model_spans() >= 3
    assert_each_request_once(framework_rig, fake_openai, 3)


@pytest.mark.parametrize(
    "framework_rig", [("oi-langchain",), ("oi-langchain", "oi-openai")], indirect=True, ids="+".join
)
def test_langchain_async_agent_counts_every_request(
    framework_rig: FrameworkRig, fake_openai: FakeOpenAI
) -> None:
    """``ainvoke``: LangChain runs OpenInference's callbacks on executor threads, not the request's."""
    fake_openai.respond(usage=USAGE)
    fake_openai.call_tools(WEATHER, times=1)
    agent = _weather_agent(fake_openai)

    async def run() -> None:
        with track_context("weather_agent"):
            await agent.ainvoke({"messages": [{"role": "user", "content": "Weather in Paris?"}]})

    asyncio.run(run())
    assert_each_request_once(framework_rig, fake_openai, 2)


def _summary_chain(fake: FakeOpenAI) -> Any:
    """prompt | ChatOpenAI (gpt-4o-mini, on the fake) | text: one model request per input."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="gpt-4o-mini", base_url=fake.base_url, api_key="test-key", max_retries=0)
    return ChatPromptTemplate.from_messages([("user", "Summarise: {text}")]) | model | StrOutputParser()


@pytest.mark.parametrize("framework_rig", LANGCHAIN_SETUPS[:2], indirect=True, ids="+".join)
def test_langchain_chain_calls_in_one_run_each_count(
    framework_rig: FrameworkRig, fake_openai: FakeOpenAI
) -> None:
    fake_openai.respond(usage=USAGE)
    chain = _summary_chain(fake_openai)
    with track_context("summaries"):
        for text in ("one", "two", "three", "four"):
            chain.invoke({"text": text})
    assert_each_request_once(framework_rig, fake_openai, 4)


# -- the openai-agents SDK ------------------------------------------------------------------------

AGENTS_SETUPS = [
    ("oi-agents",),
    ("otel-agents",),
    ("oi-agents", "oi-openai"),
    ("otel-agents", "traceloop-openai"),
    ("otel-agents", "openai-v2"),
]


@pytest.fixture
def agents_sdk(fake_openai: FakeOpenAI) -> Iterator[Any]:
    """The Agents SDK talking to the fake server, its default trace exporter (to api.openai.com) removed."""
    import agents

    agents.set_trace_processors([])  # the instrumentor adds its own processor after this
    agents.set_default_openai_client(
        openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0),
        use_for_tracing=False,
    )
    try:
        yield agents
    finally:
        agents.set_trace_processors([])
        agents.set_default_openai_api("responses")


def _agents_weather_agent(agents_sdk: Any) -> Any:
    """An openai-agents ``Agent`` on gpt-4o-mini with one tool (the fake decides when it is called)."""

    @agents_sdk.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agents_sdk.Agent(
        name="weather", instructions="Answer briefly.", tools=[get_weather], model="gpt-4o-mini"
    )


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
@pytest.mark.parametrize("framework_rig", AGENTS_SETUPS, indirect=True, ids="+".join)
def test_openai_agents_run_with_tools_counts_every_request(
    agents_sdk: Any, framework_rig: FrameworkRig, fake_openai: FakeOpenAI, api: str
) -> None:
    agents_sdk.set_default_openai_api(api)
    fake_openai.respond(usage=UNCACHED)
    fake_openai.call_tools(WEATHER, times=2)
    agent = _agents_weather_agent(agents_sdk)
    with track_context("weather_agent"):
        result = agents_sdk.Runner.run_sync(agent, "Weather in Paris?")
    assert result.final_output
    assert all(
        r.path.endswith("/responses" if api == "responses" else "/chat/completions")
        for r in fake_openai.requests
    )
    assert_each_request_once(framework_rig, fake_openai, 3, cached=0)


@pytest.mark.parametrize(
    "framework_rig",
    [("no-processor", "oi-agents", "oi-openai"), ("no-processor", "otel-agents", "openai-v2")],
    indirect=True,
    ids="+".join,
)
def test_spans_without_the_processor_are_joined_only_within_one_request(
    agents_sdk: Any, framework_rig: FrameworkRig, fake_openai: FakeOpenAI, tmp_path: Any
) -> None:
    """Spans from a service without our processor (as ``serve`` receives them): one batch, no marks.

    The cost engine's own walk up the parents joins the agent SDK's model span and the client's
    span of the same request, and nothing above them. (Not with the Traceloop instrumentation:
    its ``uninstrument`` leaves its wrappers in place, so after another test used it, its spans
    go to that test's provider and this test would not see six model spans.)
    """
    agents_sdk.set_default_openai_api("chat_completions")  # the one API both instrumentations trace
    fake_openai.respond(usage=UNCACHED)
    fake_openai.call_tools(WEATHER, times=2)
    agent = _agents_weather_agent(agents_sdk)
    agents_sdk.Runner.run_sync(agent, "Weather in Paris?")
    assert framework_rig.provider.force_flush()
    spans = framework_rig.captured.get_finished_spans()
    assert framework_rig.model_spans() == 6  # two instrumentations of each of the 3 requests
    one_batch = "sqlite:///" + str(tmp_path / "one_batch.db")
    exporter = UseCaseCostExporter(store=one_batch)
    exporter.export(spans)
    exporter.shutdown()
    (row,) = report_json(one_batch)
    assert (row["use_case"], row["calls"], row["no_usage_calls"]) == ("(untracked)", 3, 0)
    assert row["cost_usd"] == pytest.approx(3 * mini_cost(PROMPT, COMPLETION), rel=1e-9)


@pytest.mark.parametrize(
    "framework_rig",
    [("oi-langchain", "oi-openai"), ("oi-langchain", "traceloop-openai")],
    indirect=True,
    ids="+".join,
)
def test_langchain_call_retried_by_the_client_counts_once(
    framework_rig: FrameworkRig, fake_openai: FakeOpenAI
) -> None:
    """One LangChain model run = one client call, even when the client retried a failed HTTP request inside it."""
    from langchain_openai import ChatOpenAI

    fake_openai.respond(usage=USAGE)
    fake_openai.fail_next(500)
    model = ChatOpenAI(model="gpt-4o-mini", base_url=fake_openai.base_url, api_key="test-key", max_retries=2)
    with track_context("retried"):
        model.invoke("Summarise this.")
    assert len(fake_openai.requests) == 2  # the failed attempt (not billed) and the answered retry
    row = framework_rig.rows()
    assert (row["calls"], row["no_usage_calls"]) == (1, 0)
    assert row["cost_usd"] == pytest.approx(mini_cost(PROMPT, COMPLETION, CACHED), rel=1e-9)


def test_fake_server_tool_calls_reach_the_real_client(fake_openai: FakeOpenAI, client: openai.OpenAI) -> None:
    """What the agent tests rely on: the real client reads the fake's tool calls, streamed or not, then text."""
    fake_openai.call_tools(WEATHER, FakeToolCall("get_time", "{}"), times=2)
    message = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "?"}])
    choice = message.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", "{}"),
    ]
    streamed: dict[int, str] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "?"}], stream=True
    ):
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            streamed[delta_call.index] = (delta_call.function.name if delta_call.function else None) or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert (streamed, finish) == ({0: "get_weather", 1: "get_time"}, "tool_calls")
    after = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "?"}])
    assert after.choices[0].finish_reason == "stop" and after.choices[0].message.content
    with pytest.raises(ValueError, match="JSON"):
        FakeToolCall("broken", "{not json")


@pytest.mark.parametrize("framework_rig", LANGCHAIN_SETUPS[:2], indirect=True, ids="+".join)
def test_langchain_batch_of_concurrent_calls_in_one_scope_each_count_once(
    framework_rig: FrameworkRig, fake_openai: FakeOpenAI
) -> None:
    """``chain.batch``: LangChain runs the calls on a thread pool at once, all in one scope."""
    fake_openai.respond(usage=USAGE)
    chain = _summary_chain(fake_openai)
    texts = [f"text {i}" for i in range(8)]
    with track_context("summaries"):
        chain.batch([{"text": t} for t in texts], config={"max_concurrency": 8})
    assert_each_request_once(framework_rig, fake_openai, len(texts))
