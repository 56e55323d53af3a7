"""Tests for ``otel_usecase.cost.usage``: token usage from span attributes, whoever wrote them.

The attribute sets below are copied from what the instrumentations write (see
the module docstring of ``otel_usecase.cost.usage`` for the source of each); the
end-to-end tests at the bottom run the real OpenAI instrumentations against
the offline FakeOpenAI server, so a rename upstream shows up here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase._log import reset_rate_limits
from otel_usecase.cost.token_classes import TOKEN_CLASSES
from otel_usecase.cost.usage import (
    INPUT_KEYS,
    MAX_TOKEN_COUNT,
    OUTPUT_KEYS,
    LLMUsage,
    is_llm_usage_span,
    read_usage,
)
from otel_usecase.testing import FakeOpenAI, FakeUsage


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    reset_rate_limits()
    yield
    reset_rate_limits()


def five(
    model: str | None,
    provider: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    operation: str | None = None,
) -> LLMUsage:
    """An LLMUsage of the five classes every engine knew, as the old positional tuple read."""
    tokens = {"input": input_tokens, "output": output_tokens}
    parts = {"cache_read": cache_read, "cache_write": cache_write, "reasoning": reasoning}
    counts = {k: v for k, v in tokens.items() if v is not None} | {k: v for k, v in parts.items() if v}
    return LLMUsage(model, provider, counts, operation)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "otel_usecase" and r.levelno == logging.WARNING
    ]


# -- conventions --------------------------------------------------------------


def test_traceloop_openai_chat_attributes() -> None:
    # opentelemetry-instrumentation-openai 0.62: shared._set_response_attributes + chat_wrappers
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.total_tokens": 1500,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.reasoning_tokens": 120,
    }
    assert read_usage(attrs) == LLMUsage(
        model="gpt-4o-mini-2024-07-18",
        provider="openai",
        tokens={"input": 1200, "output": 300, "cache_read": 1000, "reasoning": 120},
        operation="chat",
    )


def test_current_semconv_attributes() -> None:
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 5000,
        "gen_ai.usage.output_tokens": 700,
        "gen_ai.usage.cache_read.input_tokens": 3000,
        "gen_ai.usage.cache_creation.input_tokens": 1000,
        "gen_ai.usage.reasoning.output_tokens": 200,
    }
    usage = read_usage(attrs)
    assert (usage.input_tokens, usage.output_tokens) == (5000, 700)
    assert (usage.count("cache_read"), usage.count("cache_write"), usage.count("reasoning")) == (
        3000,
        1000,
        200,
    )
    assert usage.model == "claude-sonnet-4-5"


def test_util_genai_cache_write_name() -> None:
    # opentelemetry-util-genai 1.3b0 spells cache writes gen_ai.usage.cache_write.input_tokens
    usage = read_usage(
        {
            "gen_ai.usage.input_tokens": 900,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.cache_write.input_tokens": 800,
        }
    )
    assert usage.count("cache_write") == 800
    assert usage.input_tokens == 900


def test_older_semconv_and_traceloop_names() -> None:
    # Traceloop semconv_ai < 0.5 (e.g. opentelemetry-instrumentation-anthropic 0.40)
    attrs = {
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-3-5-sonnet-20241022",
        "gen_ai.usage.prompt_tokens": 2600,
        "gen_ai.usage.completion_tokens": 300,
        "llm.usage.total_tokens": 2900,
        "gen_ai.usage.cache_read_input_tokens": 2000,
        "gen_ai.usage.cache_creation_input_tokens": 500,
        "llm.usage.reasoning_tokens": 0,
        "llm.request.type": "chat",
    }
    usage = read_usage(attrs)
    assert usage == five("claude-3-5-sonnet-20241022", "anthropic", 2600, 300, 2000, 500, 0, "chat")


def test_openinference_attributes() -> None:
    # openinference-instrumentation-anthropic 3.1.0 _utils._get_token_counts
    attrs = {
        "llm.provider": "anthropic",
        "llm.system": "anthropic",
        "llm.model_name": "claude-3-5-sonnet-20241022",
        "llm.token_count.prompt": 2600,
        "llm.token_count.completion": 300,
        "llm.token_count.prompt_details.cache_read": 2000,
        "llm.token_count.prompt_details.cache_write": 500,
        "llm.token_count.completion_details.reasoning": 50,
        "llm.token_count.total": 2900,
    }
    assert read_usage(attrs) == five("claude-3-5-sonnet-20241022", "anthropic", 2600, 300, 2000, 500, 50)


def test_model_precedence_response_then_request_then_openinference() -> None:
    both = {"gen_ai.request.model": "my-deployment", "gen_ai.response.model": "gpt-4o-2024-08-06"}
    assert read_usage(both).model == "gpt-4o-2024-08-06"
    assert read_usage({"gen_ai.request.model": "gpt-4o", "llm.model_name": "x"}).model == "gpt-4o"
    assert read_usage({"llm.model_name": "gpt-4o"}).model == "gpt-4o"
    assert read_usage({"gen_ai.response.model": "", "gen_ai.request.model": "gpt-4o"}).model == "gpt-4o"
    assert read_usage({"gen_ai.response.model": 42}).model is None


def test_provider_precedence_and_lower_case() -> None:
    assert read_usage({"gen_ai.provider.name": "Azure.AI.OpenAI", "gen_ai.system": "openai"}).provider == (
        "azure.ai.openai"
    )
    assert read_usage({"gen_ai.system": "AWS.Bedrock"}).provider == "aws.bedrock"
    assert read_usage({"llm.provider": "azure", "llm.system": "openai"}).provider == "azure"
    assert read_usage({"llm.system": "openai"}).provider == "openai"
    assert read_usage({}).provider is None


def test_nothing_known() -> None:
    usage = read_usage({})
    assert usage == five(None, None, None, None)
    assert not usage.has_usage


def test_embeddings_have_input_only() -> None:
    usage = read_usage({"gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": 8})
    assert usage.has_usage
    assert (usage.input_tokens, usage.output_tokens) == (8, None)


# -- Anthropic and other "exclusive" counts -----------------------------------


def test_anthropic_traceloop_062_input_already_includes_cache() -> None:
    # _set_token_usage: input_tokens = usage.input_tokens + cache_read + cache_creation
    raw_input, cache_read, cache_write, output = 100, 2000, 500, 300
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": "claude-3-5-sonnet-20241022",
        "gen_ai.usage.input_tokens": raw_input + cache_read + cache_write,
        "gen_ai.usage.output_tokens": output,
        "gen_ai.usage.total_tokens": raw_input + cache_read + cache_write + output,
        "gen_ai.usage.cache_read.input_tokens": cache_read,
        "gen_ai.usage.cache_creation.input_tokens": cache_write,
    }
    usage = read_usage(attrs)
    assert usage.input_tokens == 2600
    assert (usage.count("cache_read"), usage.count("cache_write")) == (2000, 500)


def test_anthropic_raw_input_smaller_than_cache_is_normalised() -> None:
    # The Anthropic API's own meaning: input_tokens excludes cache reads and writes.
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_creation.input_tokens": 500,
    }
    assert read_usage(attrs).input_tokens == 2600


def test_exclusive_input_detected_by_total() -> None:
    # Bedrock Converse style: inputTokens excludes cache, totalTokens counts everything.
    attrs = {
        "gen_ai.usage.input_tokens": 3000,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_creation.input_tokens": 500,
        "gen_ai.usage.total_tokens": 5800,
    }
    assert read_usage(attrs).input_tokens == 5500


def test_inclusive_input_left_alone_when_total_agrees_or_says_nothing() -> None:
    base = {
        "gen_ai.usage.input_tokens": 3000,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 2000,
    }
    assert read_usage(base).input_tokens == 3000
    assert read_usage({**base, "gen_ai.usage.total_tokens": 3300}).input_tokens == 3000
    # A total matching neither reading (e.g. Gemini's tool-use prompt tokens) changes nothing.
    assert read_usage({**base, "gen_ai.usage.total_tokens": 9999}).input_tokens == 3000


def test_output_excluding_reasoning_is_normalised() -> None:
    # Gemini: candidates_token_count excludes thoughts_token_count.
    small = {"gen_ai.usage.output_tokens": 50, "gen_ai.usage.reasoning.output_tokens": 400}
    assert read_usage(small).output_tokens == 450
    by_total = {
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
        "gen_ai.usage.reasoning.output_tokens": 400,
        "gen_ai.usage.total_tokens": 1900,
    }
    usage = read_usage(by_total)
    assert (usage.input_tokens, usage.output_tokens) == (1000, 900)


def test_both_parts_exclusive_detected_by_total() -> None:
    attrs = {
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.reasoning.output_tokens": 400,
        "gen_ai.usage.total_tokens": 2500,
    }
    usage = read_usage(attrs)
    assert (usage.input_tokens, usage.output_tokens) == (1600, 900)


# -- odd values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        (12.0, 12),
        ("12", 12),
        (" 12 ", 12),
        ("12.0", 12),
        ("1e3", 1000),
        (0, 0),
    ],
)
def test_numeric_forms_are_accepted(value: Any, expected: int) -> None:
    assert read_usage({"gen_ai.usage.input_tokens": value}).input_tokens == expected


@pytest.mark.parametrize("value", [-1, -1.0, "-5", "lots", "", 1.5, float("nan"), float("inf"), True, [1, 2]])
def test_bad_values_are_missing_and_warned(value: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        usage = read_usage({"gen_ai.usage.input_tokens": value, "gen_ai.usage.output_tokens": 5})
    assert usage.input_tokens is None
    assert usage.output_tokens == 5
    messages = _warnings(caplog)
    assert len(messages) == 1
    assert "gen_ai.usage.input_tokens" in messages[0]


@pytest.mark.parametrize("form", [int, str], ids=["int", "str"])
@pytest.mark.parametrize(
    "value", [MAX_TOKEN_COUNT + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)], ids=lambda v: f"{v:.3g}"
)
def test_counts_beyond_the_limit_are_unreadable_as_int_or_text(
    form: type, value: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        usage = read_usage({"gen_ai.usage.input_tokens": 1_000, "gen_ai.usage.output_tokens": form(value)})
    assert usage.output_tokens is None
    assert not usage.complete  # an output count was there but could not be read
    (message,) = _warnings(caplog)
    assert "gen_ai.usage.output_tokens" in message and repr(form(value)) in message
    assert str(MAX_TOKEN_COUNT) in message  # the rule, not only the value


def test_the_limit_itself_is_a_count() -> None:
    assert read_usage({"gen_ai.usage.input_tokens": MAX_TOKEN_COUNT}).input_tokens == MAX_TOKEN_COUNT
    assert read_usage({"gen_ai.usage.input_tokens": str(MAX_TOKEN_COUNT)}).input_tokens == MAX_TOKEN_COUNT


def test_a_huge_value_is_named_without_printing_it_all(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        usage = read_usage({"gen_ai.usage.input_tokens": 10**5000, "llm.token_count.completion": "9" * 5000})
    assert (usage.input_tokens, usage.output_tokens) == (None, None)
    messages = _warnings(caplog)
    assert len(messages) == 2 and all(len(m) < 300 for m in messages)
    assert "gen_ai.usage.input_tokens" in messages[0] and "bits" in messages[0]
    assert "llm.token_count.completion" in messages[1] and "'9999" in messages[1]


@given(value=st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, MAX_TOKEN_COUNT, 2**63]))
def test_int_and_text_forms_of_a_count_read_the_same(value: int) -> None:
    for key in (INPUT_KEYS[0], INPUT_KEYS[2], OUTPUT_KEYS[0]):
        as_int = read_usage({key: value, "gen_ai.request.model": "m"})
        assert read_usage({key: str(value), "gen_ai.request.model": "m"}) == as_int
        assert read_usage({key: f" {value} ", "gen_ai.request.model": "m"}) == as_int
    expected = value if 0 <= value <= MAX_TOKEN_COUNT else None
    assert read_usage({INPUT_KEYS[0]: value}).input_tokens == expected


def test_whole_floats_read_like_ints_and_fractions_never() -> None:
    assert read_usage({"gen_ai.usage.input_tokens": 1e12}).input_tokens == MAX_TOKEN_COUNT
    assert read_usage({"gen_ai.usage.input_tokens": 1e13}).input_tokens is None
    assert read_usage({"gen_ai.usage.input_tokens": 2.0**63}).input_tokens is None
    assert read_usage({"gen_ai.usage.input_tokens": "12.5"}).input_tokens is None
    assert read_usage({"gen_ai.usage.input_tokens": False}).input_tokens is None


# -- partial usage: what could not be read ----------------------------------------


def test_unreadable_input_with_a_known_output_is_incomplete() -> None:
    usage = read_usage({"gen_ai.usage.input_tokens": "lots", "gen_ai.usage.output_tokens": 50})
    assert (usage.input_tokens, usage.output_tokens, usage.complete) == (None, 50, False)


def test_missing_input_with_a_known_output_is_incomplete() -> None:
    """Every model request has input tokens: a span that reports only output lost the input count."""
    assert not read_usage({"gen_ai.usage.output_tokens": 50}).complete


def test_unreadable_output_with_a_known_input_is_incomplete() -> None:
    usage = read_usage({"llm.token_count.prompt": 400, "llm.token_count.completion": -2})
    assert (usage.input_tokens, usage.output_tokens, usage.complete) == (400, None, False)


def test_input_only_is_complete_for_embeddings() -> None:
    assert read_usage({"gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": 8}).complete


def test_a_bad_value_that_another_convention_supplies_is_complete() -> None:
    usage = read_usage(
        {
            "gen_ai.usage.input_tokens": "n/a",
            "gen_ai.usage.prompt_tokens": 40,
            "llm.usage.completion_tokens": 3,
        }
    )
    assert (usage.input_tokens, usage.output_tokens, usage.complete) == (40, 3, True)


def test_bad_value_falls_back_to_the_next_convention() -> None:
    usage = read_usage({"gen_ai.usage.input_tokens": "n/a", "gen_ai.usage.prompt_tokens": 40})
    assert usage.input_tokens == 40


def test_bad_cache_value_counts_as_zero() -> None:
    usage = read_usage({"gen_ai.usage.input_tokens": 40, "gen_ai.usage.cache_read.input_tokens": -3})
    assert (usage.input_tokens, usage.count("cache_read")) == (40, 0)


def test_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        for _ in range(50):
            read_usage({"gen_ai.usage.output_tokens": -1})
    assert len(_warnings(caplog)) == 1


def test_is_llm_usage_span() -> None:
    assert is_llm_usage_span({"gen_ai.usage.input_tokens": 1})
    assert is_llm_usage_span({"llm.token_count.completion": 1})
    assert is_llm_usage_span({"gen_ai.usage.prompt_tokens": 1})
    assert not is_llm_usage_span({"http.method": "GET", "gen_ai.request.model": "gpt-4o"})
    assert not is_llm_usage_span({})


# -- end to end: the real instrumentations --------------------------------------


def _spans_from(instrumentor: Any, usage: FakeUsage, *, stream: bool = False) -> list[dict[str, Any]]:
    if instrumentor.is_instrumented_by_opentelemetry:
        pytest.skip("the OpenAI instrumentation is already active in this process")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor.instrument(tracer_provider=provider)
    try:
        with (
            FakeOpenAI(usage=usage) as fake,
            openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10) as client,
        ):
            messages: Any = [{"role": "user", "content": "Hello"}]
            if stream:
                chunks = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                for _ in chunks:
                    pass
            else:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            client.embeddings.create(model="text-embedding-3-small", input="Hello")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


def test_traceloop_openai_end_to_end() -> None:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    fake_usage = FakeUsage(
        prompt_tokens=1200, completion_tokens=300, cached_tokens=1000, reasoning_tokens=120
    )
    chat, embeddings = _spans_from(OpenAIInstrumentor(), fake_usage)
    assert is_llm_usage_span(chat)
    assert read_usage(chat) == five("gpt-4o-mini", "openai", 1200, 300, 1000, 0, 120, "chat")
    assert read_usage(embeddings) == five(
        "text-embedding-3-small", "openai", 1200, None, 0, 0, 0, "embeddings"
    )


def test_traceloop_openai_streaming_end_to_end() -> None:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    fake_usage = FakeUsage(prompt_tokens=1200, completion_tokens=300, cached_tokens=1000)
    chat, _ = _spans_from(OpenAIInstrumentor(), fake_usage, stream=True)
    usage = read_usage(chat)
    assert (usage.input_tokens, usage.output_tokens, usage.count("cache_read")) == (1200, 300, 1000)


def test_openai_v2_end_to_end() -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    fake_usage = FakeUsage(
        prompt_tokens=1200, completion_tokens=300, cached_tokens=1000, reasoning_tokens=120
    )
    instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
    chat, embeddings = _spans_from(instrumentor, fake_usage)
    # openai-v2 2.4b0 writes gen_ai.system and no cache / reasoning details.
    assert read_usage(chat) == five("gpt-4o-mini", "openai", 1200, 300, 0, 0, 0, "chat")
    assert read_usage(embeddings).input_tokens == 1200


# -- every token class of the table ----------------------------------------------

_PART_KEYS = [
    pytest.param(c.name, key, id=key)
    for c in TOKEN_CLASSES
    if c.name not in ("input", "output")
    for key in c.span_keys
]


@pytest.mark.parametrize(("name", "key"), _PART_KEYS)
def test_every_class_is_read_from_each_of_its_span_keys(name: str, key: str) -> None:
    attrs = {"gen_ai.usage.input_tokens": 5000, "gen_ai.usage.output_tokens": 3000, key: 700}
    usage = read_usage(attrs)
    assert usage.count(name) == 700
    assert (usage.input_tokens, usage.output_tokens) == (5000, 3000)  # parts never change an inclusive whole


def test_openinference_audio_tokens() -> None:
    # openinference-instrumentation-openai 0.1.66, chat with audio in and out (the e2e helper's record)
    attrs = {
        "llm.system": "openai",
        "llm.model_name": "gpt-4o-audio-preview-2025-06-03",
        "llm.token_count.prompt": 1000,
        "llm.token_count.completion": 500,
        "llm.token_count.total": 1500,
        "llm.token_count.prompt_details.audio": 600,
        "llm.token_count.completion_details.audio": 400,
        "llm.token_count.prompt_details.cache_read": 100,
    }
    usage = read_usage(attrs)
    assert usage.tokens == {
        "input": 1000,
        "output": 500,
        "input_audio": 600,
        "output_audio": 400,
        "cache_read": 100,
    }


def test_util_genai_per_modality_tokens() -> None:
    # opentelemetry-util-genai's per-modality keys (a realtime call: audio, cached audio, images)
    attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-realtime",
        "gen_ai.usage.input_tokens": 2000,
        "gen_ai.usage.output_tokens": 800,
        "gen_ai.usage.cache_read.input_tokens": 900,
        "gen_ai.usage.audio.input_tokens": 1500,
        "gen_ai.usage.audio.cache_read.input_tokens": 700,
        "gen_ai.usage.audio.output_tokens": 600,
        "gen_ai.usage.image.input_tokens": 300,
        "gen_ai.usage.image.cache_read.input_tokens": 100,
    }
    assert read_usage(attrs).tokens == {
        "input": 2000,
        "output": 800,
        "cache_read": 900,
        "input_audio": 1500,
        "cache_audio_read": 700,
        "output_audio": 600,
        "input_image": 300,
        "cache_image_read": 100,
    }


def test_anthropic_one_hour_cache_write_is_a_part_of_the_cache_writes() -> None:
    # Anthropic usage.cache_creation.ephemeral_1h_input_tokens beside the 5m+1h total
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 12_000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_creation.input_tokens": 10_000,
        "gen_ai.usage.cache_creation.ephemeral_1h_input_tokens": 6_000,
    }
    usage = read_usage(attrs)
    assert (usage.count("cache_write"), usage.count("cache_write_1h"), usage.input_tokens) == (
        10_000,
        6_000,
        12_000,
    )
