"""How ``calls_from_spans`` builds a ``Call``: the positional fast path against the plain keyword version.

``cost/calls.py`` builds each call through ``_new_call`` by position, because a
24-field keyword construction costs more than half of pricing a span. These tests
keep that trick honest: ``_new_call`` equals ``Call(**fields)`` for any values, and
every field of a call from ``calls_from_spans`` is the span's value of that name.
Costs come from published prices (gpt-4o-mini $0.15/M input, $0.60/M output).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_usecase.cost import calls as calls_module
from otel_usecase.cost.call import COST_SOURCE_PROVIDER, STATUS_PARTIAL, STATUS_PRICED, Call
from otel_usecase.cost.calls import SpanView, calls_from_spans
from otel_usecase.cost.prices import PriceBook
from otel_usecase.scope import keys as attr

from .expect import mini_cost

PRICES = PriceBook()
NOW_NS = time.time_ns()
"""Calls are priced at their start time: today's prices (genai-prices dates its prices, e.g. when gpt-5 got a Priority price)."""

_text = st.text(min_size=1, max_size=12)
_maybe_text = st.none() | _text
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "trace_id": _text,
    "span_id": _text,
    "start_ns": st.integers(0, 2**63 - 1),
    "end_ns": st.integers(0, 2**63 - 1),
    "tokens": st.dictionaries(st.sampled_from(["input", "output", "cache_read"]), st.integers(0, 10**6)),
    "cost_usd": st.none() | st.floats(0, 10),
    "computed_cost_usd": st.none() | st.floats(0, 10),
    "status": _text,
    "use_case": _text,
    "run_id": _text,
    "error": st.integers(0, 1),
}


@given(st.fixed_dictionaries({name: _FIELD_VALUES.get(name, _maybe_text) for name in Call._fields}))
def test_new_call_is_the_keyword_call(fields: dict[str, Any]) -> None:
    fast = calls_module._new_call(*(fields[name] for name in Call._fields))
    plain = Call(**fields)
    assert type(fast) is Call
    assert fast == plain
    assert all(getattr(fast, name) == value for name, value in fields.items())


def test_new_call_takes_the_fields_of_call_in_order() -> None:
    code = calls_module._new_call.__code__
    assert code.co_varnames[: code.co_argcount] == Call._fields


_SCOPE_KEYS = (
    attr.USE_CASE_NAME,
    attr.USE_CASE_ID,
    attr.USE_CASE_VERSION,
    attr.USE_CASE_STEP,
    attr.EXPERIENCE_NAME,
    attr.EXPERIENCE_ID,
    attr.USER_ID,
)
_FIELD_OF_KEY = dict(
    zip(
        _SCOPE_KEYS,
        ("use_case", "run_id", "use_case_version", "step", "experience_name", "experience_id", "user_id"),
    )
)


def _view(attributes: dict[str, Any], *, error: bool = False) -> SpanView:
    return SpanView(
        trace_id=0xABC,
        span_id=0xDEF,
        parent_span_id=None,
        start_ns=NOW_NS,
        end_ns=NOW_NS + 500_000_000,
        attributes=attributes,
        error=error,
        service="svc",
    )


@settings(max_examples=60)
@given(
    st.lists(
        st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=10),
        min_size=len(_SCOPE_KEYS),
        max_size=len(_SCOPE_KEYS),
        unique=True,
    ),
    st.integers(1, 100_000),
    st.integers(1, 10_000),
    st.booleans(),
)
def test_every_field_of_a_call_is_the_span_value_of_that_name(
    values: list[str], prompt: int, completion: int, error: bool
) -> None:
    """Distinct values per scope key: two fields swapped at the positional call would fail here."""
    scope = dict(zip(_SCOPE_KEYS, values))
    span = _view(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.output_tokens": completion,
            **scope,
        },
        error=error,
    )
    (call,) = calls_from_spans([span], PRICES)
    for key, value in scope.items():
        assert getattr(call, _FIELD_OF_KEY[key]) == value, key
    assert (call.trace_id, call.span_id) == (format(0xABC, "032x"), format(0xDEF, "016x"))
    assert (call.start_ns, call.end_ns, call.service) == (span.start_ns, span.end_ns, "svc")
    assert (call.provider, call.model, call.operation) == ("openai", "gpt-4o-mini", "chat")
    assert dict(call.tokens) == {"input": prompt, "output": completion}
    assert call.status == STATUS_PRICED and call.unpriced_reason is None
    assert call.cost_usd == pytest.approx(mini_cost(prompt, completion))
    assert call.computed_cost_usd == call.cost_usd
    assert call.cost_source is not None and call.cost_source.startswith("genai-prices")
    assert call.error == (1 if error else 0)


MINI_SPAN: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 1_000,
    "gen_ai.usage.output_tokens": 100,
}


def test_a_billed_cost_is_the_cost_and_our_price_stays_beside_it() -> None:
    (call,) = calls_from_spans([_view({**MINI_SPAN, "llm.cost.total": 0.0123})], PRICES)
    assert (call.cost_usd, call.cost_source, call.status) == (0.0123, COST_SOURCE_PROVIDER, STATUS_PRICED)
    assert call.computed_cost_usd == pytest.approx(mini_cost(1_000, 100))
    assert call.unpriced_reason is None


def test_a_billed_cost_makes_a_partial_read_priced() -> None:
    """A bill is the call's whole cost, even when part of the usage could not be read."""
    partial = {**MINI_SPAN, "gen_ai.usage.output_tokens": "lots"}  # output unreadable: a lower bound
    (ours,) = calls_from_spans([_view(partial)], PRICES)
    assert ours.status == STATUS_PARTIAL
    (billed,) = calls_from_spans([_view({**partial, "llm.cost.total": 0.002})], PRICES)
    assert (billed.status, billed.cost_usd, billed.cost_source) == (
        STATUS_PRICED,
        0.002,
        COST_SOURCE_PROVIDER,
    )
    assert billed.computed_cost_usd == ours.cost_usd


def test_the_served_tier_is_the_price_context() -> None:
    """gpt-5 served at Priority: $2.50/M input, $20/M output (standard $1.25/$10); 8 in, 82 out = $0.00166."""
    gpt5 = {**MINI_SPAN, "gen_ai.request.model": "gpt-5", "gen_ai.usage.input_tokens": 8}
    gpt5["gen_ai.usage.output_tokens"] = 82
    (call,) = calls_from_spans([_view({**gpt5, "openai.response.service_tier": "priority"})], PRICES)
    assert call.price_context == "service_tier=priority"
    assert call.cost_usd == pytest.approx((8 * 2.50 + 82 * 20.00) / 1e6)
    (standard,) = calls_from_spans([_view({**gpt5, "openai.response.service_tier": "default"})], PRICES)
    assert standard.price_context is None
    assert standard.cost_usd == pytest.approx((8 * 1.25 + 82 * 10.00) / 1e6)


def test_the_keys_serve_decodes_include_conditions_and_billed_costs() -> None:
    from otel_usecase.cost.billed import BILLED_KEYS
    from otel_usecase.cost.conditions import CONDITION_KEYS
    from otel_usecase.cost.usage import READ_KEYS

    assert READ_KEYS | CONDITION_KEYS | BILLED_KEYS <= calls_module.ENGINE_KEYS
