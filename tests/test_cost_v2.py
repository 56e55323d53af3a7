"""Cost engine v2 end to end: the price conditions, the billed token classes and the provider's own figure.

Real ``openai`` client -> real instrumentation -> ``UseCaseCostExporter`` -> SQLite -> what the ledger and
``otel-usecase report`` say. Expected figures are computed here from the published per-million-token prices
written below, never from the code under test. Where no installed client path exists (Anthropic, Gemini:
neither their clients nor their instrumentations are installed) the spans are built with the SDK the way
those instrumentations write them and exported through the same pipeline.

What the installed instrumentations write (measured with ``otel_usecase.testing.FakeOpenAI`` scripting the
responses; openai 3.57, Traceloop ``opentelemetry-instrumentation-openai`` 0.62.4, contrib
``opentelemetry-instrumentation-openai-v2`` 2.3b0, ``openinference-instrumentation-openai`` 0.1.66):

Served service tier (the response's ``service_tier``, the tier OpenAI bills)
    Traceloop: ``openai.response.service_tier`` on chat completions and the Responses API, but NOT on a
    streamed chat completion: there only the requested ``openai.request.service_tier`` is on the span.
    openai-v2: ``gen_ai.openai.response.service_tier`` (the pre-1.37 semconv name; the
    ``OTEL_SEMCONV_STABILITY_OPT_IN`` switch changes nothing in 2.3b0), streamed or not, requested tier as
    ``gen_ai.openai.request.service_tier``; the Responses API is not instrumented at all (no span).
    OpenInference: no tier attribute; the served tier is only in ``output.value``, the raw response JSON
    (top-level ``service_tier``, also when streaming), and the requested one in ``llm.invocation_parameters``.
    The tier billed is the one served; a span with only the requested tier (Traceloop, streamed) is billed
    at the requested tier and marked ``service_tier_from=request`` (the documented rule). No response says "batch" for OpenAI's Batch API: an app marks such spans
    ``usecase.price.processing = "batch"``; Anthropic's ``usage.service_tier`` (``batch``) is expected as
    ``anthropic.response.service_tier``, which no installed instrumentation writes.
Audio token counts (``prompt_tokens_details.audio_tokens`` / ``completion_tokens_details.audio_tokens``)
    Traceloop: none (only the input/output totals, so an audio call is indistinguishable from a text one).
    openai-v2: none. OpenInference: ``llm.token_count.prompt_details.audio`` and
    ``llm.token_count.completion_details.audio`` for chat completions; for the Responses API only inside
    ``output.value`` (``usage.input_tokens_details.audio_tokens``).
Cache writes with a TTL (Anthropic ``usage.cache_creation.ephemeral_1h_input_tokens``)
    No installed instrumentation sees Anthropic responses; OpenAI has no cache writes. The span-level test
    writes the total as ``gen_ai.usage.cache_creation.input_tokens`` (what Traceloop anthropic 0.62 writes)
    and the 1-hour part as ``gen_ai.usage.cache_creation.ephemeral_1h_input_tokens`` (the token table's key).
A billed cost (OpenRouter ``usage.cost`` in USD, ``usage.cost_details``)
    Traceloop: none. openai-v2: none. OpenInference: only inside ``output.value`` (``usage.cost``), streamed
    or not. Other: Traceloop strips ``openai/`` off ``gen_ai.response.model``; the others keep it.
Reasoning tokens
    Traceloop ``gen_ai.usage.reasoning_tokens`` (not when streaming); openai-v2 none; OpenInference
    ``llm.token_count.completion_details.reasoning``.

Published prices used (USD per million tokens):
  gpt-5 (openai.com/api/pricing)  standard $1.25 in / $10 out; Priority $2.50 / $20; Flex $0.625 / $5;
                                  Batch API $0.625 / $5
  gpt-audio                       text $2.50 in / $10 out; audio $32 in / $64 out
  gpt-4o-audio-preview            text $2.50 in / $10 out; audio $40 in / $80 out (genai-prices 0.2.3 lists
                                  only the text rates, so the audio tokens have no price there)
  gpt-4o-mini                     $0.15 in / $0.60 out
  claude-haiku-4-5 (anthropic.com/pricing)  $1 in / $5 out; Message Batches $0.50 / $2.50
  claude-sonnet-4-5               $3 in / $15 out, 5-minute cache write $3.75, 1-hour cache write $6,
                                  cache read $0.30; prompts over 200k tokens: $6 in / $22.50 out
  gemini-2.5-pro (ai.google.dev/pricing)  prompts up to 200k tokens $1.25 in / $10 out; over 200k $2.50 / $15
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind

from otel_usecase import track_context
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import M, report_json
from .rigs import CostRig, unwrap_traceloop_leftovers
from .servers import ServeProcess

MSG = [{"role": "user", "content": "hello"}]

GPT5_STANDARD = (1.25, 10.00)
GPT5_PRIORITY = (2.50, 20.00)
GPT5_FLEX = (0.625, 5.00)
GPT5_BATCH = (0.625, 5.00)
GPT_AUDIO_TEXT, GPT_AUDIO_AUDIO = (2.50, 10.00), (32.00, 64.00)
AUDIO_PREVIEW_TEXT, AUDIO_PREVIEW_AUDIO = (2.50, 10.00), (40.00, 80.00)
MINI = (0.15, 0.60)
HAIKU_45_STANDARD, HAIKU_45_BATCH = (1.00, 5.00), (0.50, 2.50)
SONNET_45_IN, SONNET_45_OUT, SONNET_45_WRITE_5M, SONNET_45_WRITE_1H, SONNET_45_READ = (
    3.00,
    15.00,
    3.75,
    6.00,
    0.30,
)
SONNET_45_LONG = (6.00, 22.50)
SONNET_45_SHORT = (SONNET_45_IN, SONNET_45_OUT)
GEMINI_25_PRO_SHORT, GEMINI_25_PRO_LONG = (1.25, 10.00), (2.50, 15.00)

GENAI_PRICES = "genai-prices 0.2.3"
"""The cost source of a call priced from the installed genai-prices (its version, pinned by the venv)."""

#: The gpt-5 call of issue 13: 8 input tokens, 82 output tokens of which 64 reasoning.
GPT5_CALL = FakeUsage(prompt_tokens=8, completion_tokens=82, reasoning_tokens=64)
#: Where the served tier of an Anthropic response (``usage.service_tier``: standard | priority | batch) is
#: expected on a span (named like OpenAI's ``openai.response.service_tier``); no installed instrumentation writes it.
ANTHROPIC_SERVED_TIER = "anthropic.response.service_tier"
ONE_HOUR_CACHE_WRITE = "gen_ai.usage.cache_creation.ephemeral_1h_input_tokens"


def per_million(tokens_and_rates: list[tuple[int, float]]) -> float:
    """Sum of tokens x USD-per-million rate, in USD."""
    return sum(tokens * rate for tokens, rate in tokens_and_rates) / M


def gpt5_cost(rates: tuple[float, float], prompt: int = 8, completion: int = 82) -> float:
    """OpenAI bills input and output (reasoning included) tokens at the tier's rates."""
    return per_million([(prompt, rates[0]), (completion, rates[1])])


# -- fixtures ---------------------------------------------------------------------------------------


def _traceloop() -> Any:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _openai_v2() -> Any:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _openinference() -> Any:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    return OpenAIInstrumentor()


INSTRUMENTATIONS: dict[str, Callable[[], Any]] = {
    "traceloop": _traceloop,
    "openai-v2": _openai_v2,
    "openinference": _openinference,
}


@pytest.fixture
def oi_rig(store_url: str) -> Iterator[CostRig]:
    """The cost pipeline with OpenInference's openai instrumentation (the one that records audio and cost)."""
    rig = CostRig(store_url, instrumentors=[_openinference()])
    try:
        yield rig
    finally:
        rig.close()


def ledger(rig: CostRig) -> list[dict[str, Any]]:
    """Every ledger row as a dict of column -> value, oldest call first, once everything exported is written."""
    rig.flush()
    with sqlite3.connect(rig.store_url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM usecase_calls ORDER BY start_ns, span_id")]


def only_call(rig: CostRig) -> dict[str, Any]:
    rows = ledger(rig)
    assert len(rows) == 1, rows
    return rows[0]


def model_call(rig: CostRig, attributes: dict[str, Any]) -> None:
    """A finished model call span carrying ``attributes`` (set before it ends, as instrumentations do)."""
    tracer = rig.provider.get_tracer("tests.span_level_instrumentation")
    name = f"chat {attributes.get('gen_ai.request.model')}"
    with tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes={"gen_ai.operation.name": "chat"}
    ) as span:
        span.set_attributes(attributes)


# -- service tiers ----------------------------------------------------------------------------------


def test_priority_tier_gpt5_call_costs_the_priority_price(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """Issue 13's call: served at Priority, it cost $0.00166, not the standard $0.00083."""
    fake_openai.respond(usage=GPT5_CALL, service_tier="priority")
    with track_context("priority_case"):
        client.chat.completions.create(model="gpt-5", messages=MSG, service_tier="priority")
    expected = gpt5_cost(GPT5_PRIORITY)
    assert expected == pytest.approx(0.00166) and gpt5_cost(GPT5_STANDARD) == pytest.approx(0.00083)
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    call = only_call(rig)
    assert (call["input_tokens"], call["output_tokens"], call["reasoning_tokens"]) == (8, 82, 64)
    assert call["status"] == "priced"
    assert call["price_context"] == "service_tier=priority"
    assert call["cost_source"] == GENAI_PRICES
    assert call["computed_cost_usd"] == pytest.approx(expected, rel=1e-9)


API_CALLS: dict[str, Callable[[openai.OpenAI, str | None], None]] = {
    "chat": lambda c, tier: _chat(c, tier, stream=False),
    "chat-stream": lambda c, tier: _chat(c, tier, stream=True),
    "responses": lambda c, tier: _responses(c, tier),
}


def _chat(client: openai.OpenAI, tier: str | None, *, stream: bool) -> None:
    extra: dict[str, Any] = {} if tier is None else {"service_tier": tier}
    if stream:
        chunks = client.chat.completions.create(
            model="gpt-5", messages=MSG, stream=True, stream_options={"include_usage": True}, **extra
        )
        for _ in chunks:
            pass
    else:
        client.chat.completions.create(model="gpt-5", messages=MSG, **extra)


def _responses(client: openai.OpenAI, tier: str | None) -> None:
    extra: dict[str, Any] = {} if tier is None else {"service_tier": tier}
    client.responses.create(model="gpt-5", input="hello", **extra)


SERVED_PRIORITY = (GPT5_PRIORITY, "service_tier=priority")


@pytest.mark.parametrize(
    ("instrumentation", "api", "billed"),
    [
        pytest.param("traceloop", "chat", SERVED_PRIORITY, id="traceloop-chat"),
        # Traceloop 0.62.4 drops the served tier of a streamed chat completion and keeps only the requested
        # one; with no served tier on the span the requested one is billed, and marked (cost/conditions.py):
        # pricing a Priority request at the standard rate would halve it without a word.
        pytest.param(
            "traceloop",
            "chat-stream",
            (GPT5_PRIORITY, "service_tier=priority;service_tier_from=request"),
            id="traceloop-chat-stream",
        ),
        pytest.param("traceloop", "responses", SERVED_PRIORITY, id="traceloop-responses"),
        pytest.param("openai-v2", "chat", SERVED_PRIORITY, id="openai-v2-chat"),
        pytest.param("openai-v2", "chat-stream", SERVED_PRIORITY, id="openai-v2-chat-stream"),
        # openai-v2 2.3b0 does not instrument the Responses API: no span, so no ("openai-v2", "responses").
        pytest.param("openinference", "chat", SERVED_PRIORITY, id="openinference-chat"),
        pytest.param("openinference", "chat-stream", SERVED_PRIORITY, id="openinference-chat-stream"),
        pytest.param("openinference", "responses", SERVED_PRIORITY, id="openinference-responses"),
    ],
)
def test_priority_tier_through_each_instrumentation(
    instrumentation: str,
    api: str,
    billed: tuple[tuple[float, float], str | None],
    store_url: str,
    fake_openai: FakeOpenAI,
    client: openai.OpenAI,
) -> None:
    rates, context = billed
    rig = CostRig(store_url, instrumentors=[INSTRUMENTATIONS[instrumentation]()])
    try:
        fake_openai.respond(usage=GPT5_CALL, service_tier="priority")
        with track_context("priority_case"):
            API_CALLS[api](client, "priority")
        (row,) = rig.report()
        call = only_call(rig)
    finally:
        rig.close()
    assert (row["calls"], row["unpriced_calls"], row["no_usage_calls"]) == (1, 0, 0)
    assert row["cost_usd"] == pytest.approx(gpt5_cost(rates), rel=1e-9)
    assert call["price_context"] == context


def test_flex_tier_gpt5_call_costs_the_flex_price(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """genai-prices 0.2.3 has a gpt-5 ``service_tier=flex`` variant: $0.625 / $5 per million."""
    usage = FakeUsage(prompt_tokens=120_000, completion_tokens=9_000, reasoning_tokens=6_000)
    fake_openai.respond(usage=usage, service_tier="flex")
    with track_context("flex_case"):
        client.responses.create(model="gpt-5", input="summarize the archive", service_tier="flex")
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(gpt5_cost(GPT5_FLEX, 120_000, 9_000), rel=1e-9)
    call = only_call(rig)
    assert call["price_context"] == "service_tier=flex"
    assert call["reasoning_tokens"] == 6_000


@pytest.mark.parametrize(
    ("requested", "served", "rates", "context"),
    [
        # Asked for Priority, the capacity was not there: served (and billed) at the standard tier.
        pytest.param(
            "priority", "default", GPT5_STANDARD, (None, "service_tier=default"), id="priority-served-default"
        ),
        # Asked for nothing (auto) in a project whose default is Priority: billed at Priority.
        pytest.param(None, "priority", GPT5_PRIORITY, ("service_tier=priority",), id="none-served-priority"),
        pytest.param(
            "auto", "priority", GPT5_PRIORITY, ("service_tier=priority",), id="auto-served-priority"
        ),
        pytest.param(
            "flex", "default", GPT5_STANDARD, (None, "service_tier=default"), id="flex-served-default"
        ),
    ],
)
def test_the_tier_billed_is_the_one_served_not_the_one_requested(
    requested: str | None,
    served: str,
    rates: tuple[float, float],
    context: tuple[str | None, ...],
    rig: CostRig,
    fake_openai: FakeOpenAI,
    client: openai.OpenAI,
) -> None:
    fake_openai.respond(usage=GPT5_CALL, service_tier=served)
    with track_context("tier_case"):
        _chat(client, requested, stream=False)
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(gpt5_cost(rates), rel=1e-9)
    assert only_call(rig)["price_context"] in context


def test_served_tier_wins_over_requested_in_openinference_output(
    oi_rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """OpenInference keeps the requested tier in ``llm.invocation_parameters``; the served one decides."""
    fake_openai.respond(usage=GPT5_CALL, service_tier="default")
    with track_context("tier_case"):
        client.chat.completions.create(model="gpt-5", messages=MSG, service_tier="priority")
    (row,) = oi_rig.report()
    assert row["cost_usd"] == pytest.approx(gpt5_cost(GPT5_STANDARD), rel=1e-9)


# -- audio ------------------------------------------------------------------------------------------

AUDIO_CALL = FakeUsage(
    prompt_tokens=1_000, completion_tokens=500, input_audio_tokens=800, output_audio_tokens=400
)


def audio_cost(text: tuple[float, float], audio: tuple[float, float]) -> float:
    """Text tokens at the text rates, audio tokens at the audio rates (the audio counts are parts of the totals)."""
    return per_million([(1_000 - 800, text[0]), (800, audio[0]), (500 - 400, text[1]), (400, audio[1])])


def test_audio_tokens_are_priced_at_the_audio_rate(
    oi_rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=AUDIO_CALL)
    with track_context("voice_reply"):
        client.chat.completions.create(
            model="gpt-audio",
            messages=MSG,
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
        )
    (row,) = oi_rig.report()
    expected = audio_cost(GPT_AUDIO_TEXT, GPT_AUDIO_AUDIO)
    assert expected == pytest.approx(0.0527)  # at the text rate it would be 0.0075
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    call = only_call(oi_rig)
    assert (call["input_tokens"], call["input_audio_tokens"]) == (1_000, 800)
    assert (call["output_tokens"], call["output_audio_tokens"]) == (500, 400)
    assert call["status"] == "priced"


def test_audio_without_an_audio_price_is_unpriced_never_the_text_rate(
    oi_rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """genai-prices lists only gpt-4o-audio-preview's text rates: its audio tokens have no price there."""
    fake_openai.respond(usage=AUDIO_CALL)
    with track_context("voice_reply"):
        client.chat.completions.create(
            model="gpt-4o-audio-preview",
            messages=MSG,
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
        )
    (row,) = oi_rig.report()
    assert (row["calls"], row["unpriced_calls"]) == (1, 1)
    assert row["input_tokens"] == 1_000  # the tokens are kept
    call = only_call(oi_rig)
    assert (call["status"], call["cost_usd"]) == ("unpriced", None)
    assert call["unpriced_reason"] == "unknown token class audio"
    assert (call["input_audio_tokens"], call["output_audio_tokens"]) == (800, 400)


def test_prices_file_gives_the_audio_rate(
    store_url: str, tmp_path: Path, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """The published gpt-4o-audio-preview audio rates, written into the overrides file, price the call."""
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."gpt-4o-audio-preview"]\n'
        "input = 2.5\noutput = 10.0\ninput_audio = 40.0\noutput_audio = 80.0\n"
    )
    rig = CostRig(store_url, prices=str(prices), instrumentors=[_openinference()])
    try:
        fake_openai.respond(usage=AUDIO_CALL)
        with track_context("voice_reply"):
            client.chat.completions.create(
                model="gpt-4o-audio-preview",
                messages=MSG,
                modalities=["text", "audio"],
                audio={"voice": "alloy", "format": "wav"},
            )
        (row,) = rig.report()
        call = only_call(rig)
    finally:
        rig.close()
    expected = audio_cost(AUDIO_PREVIEW_TEXT, AUDIO_PREVIEW_AUDIO)
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert call["cost_source"] == "override " + hashlib.sha256(prices.read_bytes()).hexdigest()[:12]


# -- the provider's own figure ----------------------------------------------------------------------

OPENROUTER_BILLED = 0.000231
"""What OpenRouter billed (``usage.cost``): more than the list price, as with its credit fee."""
OPENROUTER_CALL = FakeUsage(
    prompt_tokens=1_000,
    completion_tokens=100,
    cost=OPENROUTER_BILLED,
    cost_details={
        "upstream_inference_cost": None,
        "upstream_inference_prompt_cost": 0.00015,
        "upstream_inference_completions_cost": 0.00006,
    },
)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat-stream"])
def test_openrouter_billed_cost_is_the_cost_and_our_price_is_kept(
    stream: bool, oi_rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(model="openai/gpt-4o-mini", usage=OPENROUTER_CALL, service_tier=None)
    with track_context("gateway_case"):
        if stream:
            chunks = client.chat.completions.create(
                model="openai/gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}
            )
            for _ in chunks:
                pass
        else:
            client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    (row,) = oi_rig.report()
    list_price = per_million([(1_000, MINI[0]), (100, MINI[1])])
    assert list_price == pytest.approx(0.00021)
    assert row["cost_usd"] == pytest.approx(OPENROUTER_BILLED, rel=1e-9)
    assert row["unpriced_calls"] == 0
    call = only_call(oi_rig)
    assert (call["cost_source"], call["status"]) == ("provider", "priced")
    assert call["cost_usd"] == pytest.approx(OPENROUTER_BILLED, rel=1e-9)
    assert call["computed_cost_usd"] == pytest.approx(list_price, rel=1e-9)


def test_without_a_billed_figure_our_price_is_the_cost(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """Traceloop records no ``usage.cost``: the same gateway call is priced by us, and says so."""
    fake_openai.respond(model="openai/gpt-4o-mini", usage=OPENROUTER_CALL, service_tier=None)
    with track_context("gateway_case"):
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(per_million([(1_000, MINI[0]), (100, MINI[1])]), rel=1e-9)
    call = only_call(rig)
    assert call["cost_source"] == GENAI_PRICES
    assert call["computed_cost_usd"] == pytest.approx(call["cost_usd"], rel=1e-12)


def test_runs_show_and_report_carry_the_billed_cost(
    oi_rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """What a user reads from the console script: the run's cost is the billed figure."""
    fake_openai.respond(model="openai/gpt-4o-mini", usage=OPENROUTER_CALL, service_tier=None)
    with track_context("gateway_case", use_case_id="run-gw-1"):
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    oi_rig.flush()
    calls = json.loads(_cli(["runs", "show", "run-gw-1", "--format", "json", "--store", oi_rig.store_url]))
    assert [c["cost_usd"] for c in calls] == pytest.approx([OPENROUTER_BILLED, OPENROUTER_BILLED])
    (run,) = report_json(oi_rig.store_url, "run")
    assert run["cost_usd"] == pytest.approx(2 * OPENROUTER_BILLED)


def _cli(argv: list[str]) -> str:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "otel-usecase"), *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- span level: batch, long context, 1-hour cache writes ---------------------------------------------


def anthropic_span(model: str, *, input_tokens: int, output_tokens: int, **extra: Any) -> dict[str, Any]:
    """The attributes Traceloop's anthropic instrumentation 0.62 writes (input includes the cached parts)."""
    return {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **extra,
    }


def test_batch_call_costs_the_batch_price(rig: CostRig) -> None:
    """A Message Batches result (``usage.service_tier: "batch"``) is billed at half price."""
    with track_context("nightly_batch"):
        model_call(
            rig,
            anthropic_span(
                "claude-haiku-4-5",
                input_tokens=10_000,
                output_tokens=2_000,
                **{ANTHROPIC_SERVED_TIER: "batch"},
            ),
        )
        model_call(
            rig,
            anthropic_span(
                "claude-haiku-4-5",
                input_tokens=10_000,
                output_tokens=2_000,
                **{ANTHROPIC_SERVED_TIER: "standard"},
            ),
        )
    batch, standard = ledger(rig)
    assert batch["cost_usd"] == pytest.approx(
        per_million([(10_000, HAIKU_45_BATCH[0]), (2_000, HAIKU_45_BATCH[1])])
    )
    assert batch["price_context"] == "processing=batch"
    assert standard["cost_usd"] == pytest.approx(
        per_million([(10_000, HAIKU_45_STANDARD[0]), (2_000, HAIKU_45_STANDARD[1])])
    )
    assert standard["price_context"] is None


def test_openai_batch_api_result_marked_by_the_app_costs_the_batch_price(rig: CostRig) -> None:
    """No OpenAI response says "batch": an app recording Batch API results marks them ``usecase.price.processing``.

    gpt-5 through the Batch API: $0.625 / $5 per million (half the standard $1.25 / $10).
    """
    with track_context("nightly_batch"):
        model_call(
            rig,
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-5",
                "gen_ai.response.model": "gpt-5",
                "gen_ai.usage.input_tokens": 200_000,
                "gen_ai.usage.output_tokens": 20_000,
                "usecase.price.processing": "batch",
            },
        )
    call = only_call(rig)
    assert call["cost_usd"] == pytest.approx(gpt5_cost(GPT5_BATCH, 200_000, 20_000), rel=1e-9)
    assert call["price_context"] == "processing=batch"


LONG_CONTEXT = [
    pytest.param(
        "gcp.gemini", "gemini-2.5-pro", GEMINI_25_PRO_SHORT, GEMINI_25_PRO_LONG, id="gemini-2.5-pro"
    ),
    pytest.param("anthropic", "claude-sonnet-4-5", SONNET_45_SHORT, SONNET_45_LONG, id="claude-sonnet-4-5"),
]


@pytest.mark.parametrize(("provider", "model", "short", "long"), LONG_CONTEXT)
def test_prompts_over_200k_tokens_cost_the_long_context_price(
    provider: str, model: str, short: tuple[float, float], long: tuple[float, float], rig: CostRig
) -> None:
    with track_context("long_context"):
        for prompt in (199_000, 250_000):
            model_call(
                rig,
                {
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": prompt,
                    "gen_ai.usage.output_tokens": 1_000,
                },
            )
    below, above = ledger(rig)
    assert below["cost_usd"] == pytest.approx(per_million([(199_000, short[0]), (1_000, short[1])]), rel=1e-9)
    assert above["cost_usd"] == pytest.approx(per_million([(250_000, long[0]), (1_000, long[1])]), rel=1e-9)
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(below["cost_usd"] + above["cost_usd"])


def test_anthropic_one_hour_cache_write_costs_the_one_hour_rate(rig: CostRig) -> None:
    """cache_creation: 4,000 tokens at the 5-minute TTL ($3.75/M) and 3,000 at the 1-hour TTL ($6/M)."""
    uncached, cache_read, write_5m, write_1h, output = 2_000, 10_000, 4_000, 3_000, 500
    with track_context("cached_prompt"):
        model_call(
            rig,
            anthropic_span(
                "claude-sonnet-4-5",
                input_tokens=uncached + cache_read + write_5m + write_1h,
                output_tokens=output,
                **{
                    "gen_ai.usage.cache_read.input_tokens": cache_read,
                    "gen_ai.usage.cache_creation.input_tokens": write_5m + write_1h,
                    ONE_HOUR_CACHE_WRITE: write_1h,
                },
            ),
        )
    expected = per_million(
        [
            (uncached, SONNET_45_IN),
            (cache_read, SONNET_45_READ),
            (write_5m, SONNET_45_WRITE_5M),
            (write_1h, SONNET_45_WRITE_1H),
            (output, SONNET_45_OUT),
        ]
    )
    assert expected == pytest.approx(0.0495)  # all writes at the 5-minute rate would be 0.04275
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    call = only_call(rig)
    assert (call["cache_write_tokens"], call["cache_write_1h_tokens"], call["cache_read_tokens"]) == (
        7_000,
        3_000,
        10_000,
    )


# -- every token class, span -> ledger -> report ------------------------------------------------------


@st.composite
def class_counts_and_keys(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, int]]:
    """Consistent counts for every class of the table, and span attributes carrying them.

    Each class gets an exclusive part (tokens in no narrower class); a class's count is its own part plus
    those of the classes included in it (``INCLUDED_IN``), so the counts are what a provider reports
    (input includes cached and audio tokens ...). Each count goes on the span under one of its class's
    span keys, so every convention the table lists is exercised.
    """
    from otel_usecase.cost.token_classes import INCLUDED_IN, TOKEN_CLASSES

    own = {c.name: draw(st.integers(0, 5_000_000)) for c in TOKEN_CLASSES}
    counts = {
        c.name: own[c.name] + sum(own[d.name] for d in TOKEN_CLASSES if c.name in INCLUDED_IN[d.name])
        for c in TOKEN_CLASSES
    }
    attributes = {draw(st.sampled_from(c.span_keys)): counts[c.name] for c in TOKEN_CLASSES}
    return counts, attributes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=class_counts_and_keys())
def test_every_token_class_round_trips_span_ledger_report(
    drawn: tuple[dict[str, int], dict[str, int]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from otel_usecase.cost.token_classes import TOKEN_CLASSES

    counts, attributes = drawn
    store_url = "sqlite:///" + str(tmp_path_factory.mktemp("roundtrip") / "costs.db")
    rig = CostRig(store_url, instrumentors=[])
    try:
        with track_context("round_trip"):
            model_call(
                rig,
                {"gen_ai.provider.name": "openai", "gen_ai.request.model": "acme-round-trip", **attributes},
            )
        call = only_call(rig)
        (row,) = rig.report()
    finally:
        rig.close()
    for token_class in TOKEN_CLASSES:
        expected = counts[token_class.name]
        assert call[token_class.column] == expected, (token_class.name, attributes)
        assert row[token_class.column] == expected, (token_class.name, attributes)


# -- the same calls through `otel-usecase serve` ------------------------------------------------------


def app_sending_to_serve(served: ServeProcess, instrumentor: Any, calls: Callable[[], None]) -> None:
    """An app with the processor and the SDK's OTLP/HTTP exporter, sending to ``serve``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_usecase import UseCaseSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(UseCaseSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=served.http_url)))
    unwrap_traceloop_leftovers()
    instrumentor.instrument(tracer_provider=provider)
    try:
        calls()
    finally:
        instrumentor.uninstrument()
        unwrap_traceloop_leftovers()
        provider.shutdown()


def test_tiers_and_billed_costs_are_priced_the_same_through_serve(
    store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """``serve`` reads the same span keys as the exporter: the served tier, OpenInference's raw response."""

    def priority_call() -> None:
        fake_openai.respond(model=None, usage=GPT5_CALL, service_tier="priority")
        with track_context("priority_case"):
            client.chat.completions.create(model="gpt-5", messages=MSG, service_tier="priority")

    def gateway_call() -> None:
        fake_openai.respond(model="openai/gpt-4o-mini", usage=OPENROUTER_CALL, service_tier=None)
        with track_context("gateway_case"):
            client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)

    with ServeProcess(store_url) as served:
        app_sending_to_serve(served, _traceloop(), priority_call)
        app_sending_to_serve(served, _openinference(), lambda: (priority_call(), gateway_call()))
        by_case = {r["use_case"]: r for r in report_json(store_url)}
    assert by_case["priority_case"]["calls"] == 2
    assert by_case["priority_case"]["cost_usd"] == pytest.approx(2 * gpt5_cost(GPT5_PRIORITY), rel=1e-9)
    assert by_case["gateway_case"]["cost_usd"] == pytest.approx(OPENROUTER_BILLED, rel=1e-9)
