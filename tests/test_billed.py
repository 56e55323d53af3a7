"""Tests for ``otel_usecase.cost.billed``: the cost a provider or gateway billed, read from the span.

The OpenRouter body is the shape OpenRouter documents for ``usage`` (with
``usage: {include: true}`` or by default since 2025), recorded by OpenInference
as ``output.value``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from otel_usecase._log import reset_rate_limits
from otel_usecase.collector.plan import COST_ATTRIBUTE
from otel_usecase.cost.billed import BILLED_KEYS, NOT_BILLED_KEYS, billed_cost


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset_rate_limits()
    yield
    reset_rate_limits()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "otel_usecase" and r.levelno >= logging.WARNING
    ]


OPENROUTER_BODY = {
    "id": "gen-1",
    "model": "openai/gpt-4o-mini",
    "choices": [{"message": {"role": "assistant", "content": "Hi"}}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "cost": 0.00021,
        "is_byok": False,
        "cost_details": {"upstream_inference_cost": None},
    },
}


def _openinference(body: Any, mime: str = "application/json") -> dict[str, Any]:
    return {
        "llm.system": "openai",
        "llm.model_name": "openai/gpt-4o-mini",
        "llm.token_count.prompt": 1000,
        "llm.token_count.completion": 100,
        "output.mime_type": mime,
        "output.value": body if isinstance(body, str) else json.dumps(body),
    }


def test_openrouter_usage_cost_from_the_raw_response() -> None:
    assert billed_cost(_openinference(OPENROUTER_BODY)) == 0.00021


def test_openrouter_byok_adds_the_upstream_cost() -> None:
    # With your own key, OpenRouter's cost is its fee; the provider billed the upstream cost.
    usage = {**OPENROUTER_BODY["usage"], "cost": 0.00001, "is_byok": True}  # type: ignore[dict-item]
    usage["cost_details"] = {"upstream_inference_cost": 0.0002}
    assert billed_cost(_openinference({**OPENROUTER_BODY, "usage": usage})) == pytest.approx(
        0.00021, rel=1e-12
    )


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param(_openinference(OPENROUTER_BODY, mime="text/plain"), id="not-json-mime"),
        pytest.param(_openinference('{"usage": {"cost": 0.1}'), id="broken-json"),
        pytest.param(_openinference({"usage": {"prompt_tokens": 3}}), id="no-cost"),
        pytest.param(_openinference({"usage": "cost"}), id="usage-not-object"),
        pytest.param(_openinference({"pad": "x" * 300_000, "usage": {"cost": 1.0}}), id="too-long"),
        pytest.param({"output.value": json.dumps(OPENROUTER_BODY)}, id="no-mime"),
        pytest.param({}, id="nothing"),
    ],
)
def test_no_billed_cost(attrs: dict[str, Any]) -> None:
    assert billed_cost(attrs) is None


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        pytest.param({"llm.cost.total": 0.0123}, 0.0123, id="openinference"),
        pytest.param({"gen_ai.cost.total_cost": 0.5}, 0.5, id="litellm"),
        pytest.param({"litellm.cost.total": "0.25"}, 0.25, id="litellm-v2-text"),
        pytest.param({"llm.cost.total": 0}, 0.0, id="free"),
    ],
)
def test_billed_cost_attributes(attrs: dict[str, Any], expected: float) -> None:
    assert billed_cost(attrs) == expected


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "cheap", True, [0.1], 10**400])
def test_bad_values_are_ignored_with_a_warning(value: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert billed_cost({"llm.cost.total": value}) is None
        assert billed_cost({"llm.cost.total": value, "gen_ai.cost.total_cost": 0.5}) == 0.5  # the next key
    messages = _warnings(caplog)
    assert messages and "llm.cost.total" in messages[0]


def test_our_collector_estimate_is_not_a_billed_cost() -> None:
    # The collector's transform writes gen_ai.usage.cost from the same price data: an estimate.
    assert COST_ATTRIBUTE in NOT_BILLED_KEYS
    assert COST_ATTRIBUTE not in BILLED_KEYS
    assert billed_cost({COST_ATTRIBUTE: 0.01}) is None
