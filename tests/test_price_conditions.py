"""Tests for ``otel_usecase.cost.conditions`` and the prices they select.

The span attributes are what the instrumentations write (the served tier keys
were recorded against FakeOpenAI by the e2e helper, see /work/coord/v2.md); the
expected costs are computed here from OpenAI's and Anthropic's published prices.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from genai_prices import data_snapshot

from otel_usecase._log import reset_rate_limits
from otel_usecase.cost.conditions import (
    CONDITION_KEYS,
    PASSTHROUGH_KEYS,
    format_context,
    parse_context,
    price_context,
)
from otel_usecase.cost.prices import ENV_PRICES, PriceBook, PricesFileError
from otel_usecase.cost.usage import LLMUsage, read_usage

# genai-prices dates its tier and batch prices from mid-October 2026; a call after that.
WHEN = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)

# gpt-5 (https://openai.com/api/pricing): Standard $1.25 in / $10 out per million,
# Priority $2.50 / $20, Flex and Batch $0.625 / $5.
GPT5_CALL = LLMUsage("gpt-5-2025-08-07", "openai", {"input": 8, "output": 82, "reasoning": 64})


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_PRICES, raising=False)
    reset_rate_limits()
    yield
    reset_rate_limits()


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook(None)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "otel_usecase" and r.levelno >= logging.WARNING
    ]


# -- reading the span -----------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        pytest.param(
            {"openai.response.service_tier": "priority"}, {"service_tier": "priority"}, id="traceloop"
        ),
        pytest.param(
            {"gen_ai.openai.response.service_tier": "flex"}, {"service_tier": "flex"}, id="openai-v2"
        ),
        pytest.param({"openai.response.service_tier": "scale"}, {"service_tier": "scale"}, id="scale"),
        pytest.param({"openai.response.service_tier": "default"}, None, id="default"),
        pytest.param({"openai.response.service_tier": "auto"}, None, id="auto"),
        pytest.param({"openai.response.service_tier": "Standard"}, None, id="standard"),
        pytest.param(
            {"anthropic.response.service_tier": "batch"}, {"processing": "batch"}, id="anthropic-batch"
        ),
        pytest.param(
            {"anthropic.response.service_tier": "priority"}, {"service_tier": "priority"}, id="anth-prio"
        ),
        pytest.param({"usecase.price.processing": "batch"}, {"processing": "batch"}, id="passthrough"),
        pytest.param(
            {"openai.response.service_tier": "priority", "usecase.price.service_tier": "flex"},
            {"service_tier": "flex"},
            id="passthrough-wins",
        ),
        pytest.param(
            {"openai.response.service_tier": "flex", "usecase.price.processing": "batch"},
            {"service_tier": "flex", "processing": "batch"},
            id="both",
        ),
        pytest.param({}, None, id="nothing"),
    ],
)
def test_price_context_from_span_attributes(attrs: dict[str, Any], expected: dict[str, str] | None) -> None:
    assert price_context(attrs) == expected


def test_the_served_tier_is_billed_not_the_requested_one() -> None:
    served = {"openai.request.service_tier": "auto", "openai.response.service_tier": "priority"}
    assert price_context(served) == {"service_tier": "priority"}
    downgraded = {"openai.request.service_tier": "priority", "openai.response.service_tier": "default"}
    assert price_context(downgraded) is None
    downgraded_v2 = {"gen_ai.openai.request.service_tier": "flex", "gen_ai.openai.response.service_tier": "default"}
    assert price_context(downgraded_v2) is None


def test_without_a_served_tier_the_requested_one_is_billed_and_marked(caplog: pytest.LogCaptureFixture) -> None:
    # Traceloop records no served tier for streamed chat: pricing a Priority request at the
    # standard rate would halve it silently, so the requested tier is billed, and the context says so.
    with caplog.at_level("WARNING", logger="otel_usecase"):
        assert price_context({"openai.request.service_tier": "priority"}) == {
            "service_tier": "priority",
            "service_tier_from": "request",
        }
    assert "no served tier" in caplog.text and "openai.request.service_tier" in caplog.text
    assert price_context({"gen_ai.openai.request.service_tier": "flex"}) == {
        "service_tier": "flex",
        "service_tier_from": "request",
    }
    assert price_context({"openai.request.service_tier": "auto"}) is None  # auto: standard
    assert format_context(price_context({"openai.request.service_tier": "priority"})) == (
        "service_tier=priority;service_tier_from=request"
    )


def _openinference(body: Any, mime: str = "application/json") -> dict[str, Any]:
    return {
        "llm.system": "openai",
        "llm.model_name": "gpt-5",
        "llm.token_count.prompt": 8,
        "llm.token_count.completion": 82,
        "llm.invocation_parameters": json.dumps({"service_tier": "flex"}),  # requested: not read
        "output.mime_type": mime,
        "output.value": body if isinstance(body, str) else json.dumps(body),
    }


def test_openinference_served_tier_from_the_raw_response() -> None:
    body = {"id": "chatcmpl-1", "model": "gpt-5-2025-08-07", "service_tier": "priority", "usage": {}}
    assert price_context(_openinference(body)) == {"service_tier": "priority"}
    assert price_context(_openinference({**body, "service_tier": "default"})) is None
    assert price_context(_openinference(body, mime="text/plain")) is None
    assert price_context(_openinference('{"service_tier": "priority", broken')) is None
    assert price_context(_openinference("[1, 2]")) is None
    nested = {"choices": [{"message": {"service_tier": "priority"}}]}  # only the top-level key counts
    assert price_context(_openinference(nested)) is None
    huge = json.dumps({"service_tier": "priority", "pad": "x" * 300_000})
    assert price_context(_openinference(huge)) is None  # too long to parse on the export path


@pytest.mark.parametrize("value", [7, "pri ority", "x" * 100, "<script>", True, ""])
def test_bad_condition_values_are_ignored_with_a_warning(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert price_context({"openai.response.service_tier": value}) is None
    if value != "":
        assert any("openai.response.service_tier" in m for m in _warnings(caplog))


def test_canonical_context_string_round_trips() -> None:
    context = {"service_tier": "priority", "processing": "batch"}
    assert format_context(context) == "processing=batch;service_tier=priority"
    assert parse_context(format_context(context)) == context
    assert format_context(None) is None and format_context({}) is None
    assert parse_context(None) is None and parse_context("") is None
    assert parse_context("garbage;=x;y=;service_tier=flex") == {"service_tier": "flex"}


def test_condition_keys_list_every_key_read() -> None:
    assert {
        "openai.response.service_tier",
        "gen_ai.openai.response.service_tier",
        "output.value",
    } <= CONDITION_KEYS
    assert {"openai.request.service_tier", "gen_ai.openai.request.service_tier"} <= CONDITION_KEYS
    assert {f"usecase.price.{k}" for k in PASSTHROUGH_KEYS} <= CONDITION_KEYS


def test_passthrough_keys_cover_every_condition_genai_prices_prices() -> None:
    """Fails when genai-prices starts pricing a condition ``usecase.price.<key>`` cannot set."""
    used = {
        key
        for provider in data_snapshot.get_snapshot().providers
        for model in provider.models
        for variant in model.price_variants or ()
        for key in variant.when
    }
    assert used <= set(PASSTHROUGH_KEYS)


# -- prices under conditions ---------------------------------------------------------


def test_priority_tier_gpt5(book: PriceBook) -> None:
    # The recorded call: 8 in / 82 out (64 of them reasoning), served at Priority.
    attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-5-2025-08-07",
        "gen_ai.usage.input_tokens": 8,
        "gen_ai.usage.output_tokens": 82,
        "gen_ai.usage.reasoning_tokens": 64,
        "openai.request.service_tier": "priority",
        "openai.response.service_tier": "priority",
    }
    quote = book.quote(read_usage(attrs), when=WHEN, context=price_context(attrs))
    assert quote.cost_usd == pytest.approx((8 * 2.50 + 82 * 20) / 1e6, rel=1e-12)
    assert quote.cost_usd == pytest.approx(0.00166, rel=1e-12)
    assert quote.context == "service_tier=priority"
    standard = book.quote(GPT5_CALL, when=WHEN)
    assert standard.cost_usd == pytest.approx((8 * 1.25 + 82 * 10) / 1e6, rel=1e-12)
    assert standard.context is None


def test_flex_tier(book: PriceBook) -> None:
    u = LLMUsage("gpt-5", "openai", {"input": 20_000, "output": 3_000, "cache_read": 10_000})
    quote = book.quote(u, when=WHEN, context={"service_tier": "flex"})
    # Flex: $0.625 in, $0.0625 cached in, $5 out per million
    assert quote.cost_usd == pytest.approx((10_000 * 0.625 + 10_000 * 0.0625 + 3_000 * 5) / 1e6, rel=1e-12)


def test_batch_openai_via_our_attribute(book: PriceBook) -> None:
    attrs = {"usecase.price.processing": "batch"}
    quote = book.quote(GPT5_CALL, when=WHEN, context=price_context(attrs))
    assert quote.cost_usd == pytest.approx((8 * 0.625 + 82 * 5) / 1e6, rel=1e-12)
    assert quote.context == "processing=batch"


def test_batch_anthropic_from_the_served_tier(book: PriceBook) -> None:
    # Claude Sonnet 4.5 (https://www.anthropic.com/pricing): $3 / $15, batch half: $1.50 / $7.50.
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 10_000,
        "gen_ai.usage.output_tokens": 1_000,
        "anthropic.response.service_tier": "batch",
    }
    quote = book.quote(read_usage(attrs), when=WHEN, context=price_context(attrs))
    assert quote.cost_usd == pytest.approx((10_000 * 1.50 + 1_000 * 7.50) / 1e6, rel=1e-12)


def test_a_condition_without_a_price_gets_the_standard_price_and_is_kept(book: PriceBook) -> None:
    # No Scale Tier price is published per token; before genai-prices dated the tiers, none either.
    scale = book.quote(GPT5_CALL, when=WHEN, context={"service_tier": "scale"})
    assert scale.cost_usd == pytest.approx((8 * 1.25 + 82 * 10) / 1e6, rel=1e-12)
    assert scale.context == "service_tier=scale"  # kept, so a re-price with newer data applies it
    assert scale.detail is not None and "standard price" in scale.detail
    early = book.quote(GPT5_CALL, when=datetime(2025, 9, 1, tzinfo=UTC), context={"service_tier": "priority"})
    assert early.cost_usd == pytest.approx((8 * 1.25 + 82 * 10) / 1e6, rel=1e-12)


def test_a_stored_context_string_prices_the_same(book: PriceBook) -> None:
    by_map = book.quote(GPT5_CALL, when=WHEN, context={"service_tier": "priority"})
    assert book.quote(GPT5_CALL, when=WHEN, context="service_tier=priority") == by_map


def test_fallback_provider_ignores_the_context_as_genai_prices_does(book: PriceBook) -> None:
    # Azure lists no gpt-5 tiers; genai-prices prices it from OpenAI's list and ignores the context.
    from genai_prices import Usage, calc_price

    u = LLMUsage("gpt-5", "azure.ai.openai", {"input": 1000, "output": 100})
    quote = book.quote(u, when=WHEN, context={"service_tier": "priority"})
    expected = calc_price(
        Usage(input_tokens=1000, output_tokens=100),
        "gpt-5",
        provider_id="azure",
        genai_request_timestamp=WHEN,
        price_context={"service_tier": "priority"},
    ).total_price
    assert quote.cost_usd == float(expected)


# -- overrides per condition ------------------------------------------------------------

VARIANTS = """\
[models."gpt-5"]
input = 1.00
output = 8.00

[[models."gpt-5".variants]]
when = { service_tier = "priority" }
input = 2.00
output = 16.00

[[models."gpt-5".variants]]
when = { processing = "batch" }
output = 4.00
"""


def test_override_per_condition(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(VARIANTS)
    book = PriceBook(path)
    u = LLMUsage("gpt-5", "openai", {"input": 1000, "output": 100})
    assert book.quote(u, when=WHEN).cost_usd == pytest.approx((1000 * 1 + 100 * 8) / 1e6, rel=1e-12)
    priority = book.quote(u, when=WHEN, context={"service_tier": "priority"})
    assert priority.cost_usd == pytest.approx((1000 * 2 + 100 * 16) / 1e6, rel=1e-12)
    assert priority.source is not None and priority.source.startswith("override ")
    batch = book.quote(u, when=WHEN, context={"processing": "batch"})  # input stays at the standard rate
    assert batch.cost_usd == pytest.approx((1000 * 1 + 100 * 4) / 1e6, rel=1e-12)
    lookup = book.lookup("gpt-5", "openai", context="service_tier=priority")
    assert lookup is not None and lookup.input_mtok == 2


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        pytest.param(
            '[models."m"]\ninput = 1\noutput = 1\n[[models."m".variants]]\nwhen = { tier = "x" }\ninput = 2\n',
            'models."m".variants.when.tier',
            "unknown condition",
            id="unknown-condition",
        ),
        pytest.param(
            '[models."m"]\ninput = 1\noutput = 1\n[[models."m".variants]]\ninput = 2\n',
            'models."m".variants.when',
            "missing or empty",
            id="no-when",
        ),
        pytest.param(
            '[models."m"]\ninput = 1\noutput = 1\n[[models."m".variants]]\nwhen = { processing = "batch" }\n',
            'models."m".variants',
            "at least one rate",
            id="no-rate",
        ),
        pytest.param(
            '[models."m"]\ninput = 1\noutput = 1\n[[models."m".variants]]\nwhen = { processing = "batch" }\n'
            "ouput = 2\n",
            'models."m".variants.ouput',
            "did you mean 'output'",
            id="typo",
        ),
    ],
)
def test_bad_variants_name_the_field(tmp_path: Path, text: str, field: str, detail: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PricesFileError) as caught:
        PriceBook(path)
    assert caught.value.field == field
    assert detail in str(caught.value) and str(path) in str(caught.value)
    assert caught.value.line is not None
