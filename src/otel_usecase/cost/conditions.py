"""Price conditions: the span attributes that change a call's price, as genai-prices' price context.

Why this exists: the same tokens cost twice as much at OpenAI's Priority tier
and half at Flex or in a batch, and genai-prices prices that when given a price
context (``{"service_tier": "priority"}``, ``{"processing": "batch"}``). What a
call was *served* at is on its span, spelled differently by each
instrumentation; :data:`CONDITIONS` lists them, once, and :func:`price_context`
turns a span's attributes into the context
:meth:`~otel_usecase.cost.prices.PriceBook.quote` passes to genai-prices.

The tier billed is the tier *served*, not the one requested: a request for
``auto`` is served at ``default`` or ``priority``, a Priority request can be
served at the standard tier, and the bill follows the response. Only when a span
carries no served tier at all (Traceloop's openai instrumentation does not
record it for streamed chat) is the requested tier
(``openai.request.service_tier``, ``gen_ai.openai.request.service_tier``) used,
because pricing a Priority request at the standard rate would halve its cost
without a word; the context then says so (``service_tier_from=request``) and a
rate-limited warning names the attribute. ``auto`` requested is the standard price.

Served tier values: ``priority``, ``flex``, ``scale``, ``fast`` (and any other
short lower-case word, passed on as is) become ``service_tier=<value>``;
``default``, ``auto`` and ``standard`` mean the standard price (no condition);
Anthropic's ``batch`` becomes ``processing=batch``.

``usecase.price.<key> = <value>`` (our own attribute, for conditions no
instrumentation records) sets a context key directly and wins over what an
instrumentation wrote, e.g. ``usecase.price.processing = "batch"`` on the span
of a Batch API call. The keys are those genai-prices' data conditions on
(:data:`PASSTHROUGH_KEYS`; a test fails when genai-prices adds one).

The context travels as a canonical string (:func:`format_context`: ``k=v``
pairs sorted by key, joined by ``;``), stored with each call so that a
re-price (:func:`parse_context`) applies the same conditions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._log import warn_rate_limited
from .raw_response import MIME_KEY, OUTPUT_KEY, response_json

__all__ = [
    "CONDITIONS",
    "CONDITION_KEYS",
    "PASSTHROUGH_KEYS",
    "PASSTHROUGH_PREFIX",
    "Condition",
    "format_context",
    "parse_context",
    "price_context",
]

PriceContext = Mapping[str, str]

_NO_CONDITION: Final = None
_SERVED_TIER: Final[Mapping[str, tuple[str, str] | None]] = {
    "default": _NO_CONDITION,
    "auto": _NO_CONDITION,
    "standard": _NO_CONDITION,
    "standard_only": _NO_CONDITION,  # Anthropic's request value; not a served tier, but never a surcharge
    "batch": ("processing", "batch"),  # Anthropic usage.service_tier
}
"""Served-tier values with a meaning of their own; any other valid value is ``service_tier=<value>``."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One span attribute that carries a price condition.

    ``values`` maps the values with a meaning of their own (lower-cased) to a
    context pair, or None for "no condition"; any other valid value becomes
    ``context_key=<value>``. ``json_key``: the value is not an attribute but the
    top-level key of the raw response JSON in ``span_key`` (OpenInference).
    """

    span_key: str
    context_key: str
    values: Mapping[str, tuple[str, str] | None]
    doc: str
    json_key: str | None = None


CONDITIONS: Final[tuple[Condition, ...]] = (
    Condition(
        "openai.response.service_tier",
        "service_tier",
        _SERVED_TIER,
        "served tier: GenAI semconv (OpenAI); Traceloop openai 0.62 (not when streaming chat)",
    ),
    Condition(
        "gen_ai.openai.response.service_tier",
        "service_tier",
        _SERVED_TIER,
        "served tier: deprecated semconv; opentelemetry-instrumentation-openai-v2 2.3b0 (streaming too)",
    ),
    Condition(
        "anthropic.response.service_tier",
        "service_tier",
        _SERVED_TIER,
        "served tier: Anthropic usage.service_tier (standard | priority | batch), named like OpenAI's",
    ),
    Condition(
        OUTPUT_KEY,
        "service_tier",
        _SERVED_TIER,
        "served tier: OpenInference openai 0.1.66 records it only in the raw response JSON",
        json_key="service_tier",
    ),
)
"""Every instrumentation attribute read for a price condition; later rows win over earlier ones."""

REQUESTED_TIER: Final[tuple[Condition, ...]] = (
    Condition(
        "openai.request.service_tier",
        "service_tier",
        _SERVED_TIER,
        "requested tier (GenAI semconv; Traceloop): used only when no served tier is on the span",
    ),
    Condition(
        "gen_ai.openai.request.service_tier",
        "service_tier",
        _SERVED_TIER,
        "requested tier (deprecated semconv; openai-v2): used only when no served tier is on the span",
    ),
)
"""Read only when no row of :data:`CONDITIONS` gave a served tier (see the module docstring)."""

FROM_REQUEST: Final = ("service_tier_from", "request")
"""Added to a context whose service tier is the requested one: the ledger shows the price is a best guess."""

PASSTHROUGH_PREFIX: Final = "usecase.price."
PASSTHROUGH_KEYS: Final[tuple[str, ...]] = ("processing", "route", "search_type", "service_tier", "speed")
"""The context keys genai-prices' data conditions on (``PriceVariant.when``), settable as ``usecase.price.<key>``."""

_PASSTHROUGH: Final = tuple((PASSTHROUGH_PREFIX + key, key) for key in PASSTHROUGH_KEYS)

CONDITION_KEYS: Final[frozenset[str]] = frozenset(
    {c.span_key for c in (*CONDITIONS, *REQUESTED_TIER)}
    | {span_key for span_key, _ in _PASSTHROUGH}
    | {MIME_KEY}
)
"""Every span attribute :func:`price_context` reads (a receiver decodes only what is read)."""

_VALUE: Final = re.compile(r"[a-z0-9][a-z0-9_./-]{0,63}")
"""A context value: a short lower-case word (a tier or route name); anything else is ignored."""


def _value(raw: object, span_key: str) -> str | None:
    if type(raw) is not str:
        if raw is not None:
            _warn(span_key, raw)
        return None
    value = raw.strip().lower()
    if not value:
        return None
    if _VALUE.fullmatch(value) is None:
        _warn(span_key, raw)
        return None
    return value


def _warn(span_key: str, raw: object) -> None:
    shown = repr(raw)
    if len(shown) > 80:
        shown = shown[:80] + "..."
    warn_rate_limited(
        "conditions:" + span_key,
        "otel-usecase: ignoring %s=%s on an LLM span: a price condition is a short lower-case word",
        span_key,
        shown,
    )


def price_context(attributes: Mapping[str, Any]) -> PriceContext | None:
    """The genai-prices price context the span's attributes call for, or None (standard price).

    Never raises: a value that is not a short word is ignored with a rate-limited warning.
    """
    if CONDITION_KEYS.isdisjoint(attributes):  # most spans: none of the keys (one C call)
        return None
    get = attributes.get
    context: dict[str, str] | None = None
    served = False
    for condition in CONDITIONS:
        if condition.json_key is None:
            raw = get(condition.span_key)
            if raw is None:
                continue
        else:
            if condition.span_key not in attributes:
                continue
            body = response_json(attributes, condition.json_key)
            if body is None:
                continue
            raw = body.get(condition.json_key)
            if raw is None:
                continue
        value = _value(raw, condition.span_key)
        if value is None:
            continue
        served = True
        if context is None:
            context = {}
        pair = condition.values.get(value, (condition.context_key, value))
        # A later row replaces what an earlier one said about the same key ...
        context.pop(condition.context_key, None)
        if pair is not None:
            context[pair[0]] = pair[1]
    if not served:
        context = _requested_tier(get, context)
    for span_key, key in _PASSTHROUGH:
        raw = get(span_key)
        if raw is None:
            continue
        value = _value(raw, span_key)
        if value is None:
            continue
        if context is None:
            context = {}
        context[key] = value
    return context or None


def _requested_tier(get: Any, context: dict[str, str] | None) -> dict[str, str] | None:
    """``context`` with the requested tier, for a span that carries no served tier."""
    for condition in REQUESTED_TIER:
        value = _value(get(condition.span_key), condition.span_key)
        if value is None:
            continue
        pair = condition.values.get(value, (condition.context_key, value))
        if pair is None:
            return context
        warn_rate_limited(
            "conditions:requested:" + condition.span_key,
            "otel-usecase: an LLM span has no served tier, only %s=%r: billing the requested tier "
            "(the ledger's price_context says service_tier_from=request)",
            condition.span_key,
            value,
        )
        context = dict(context or {})
        context[pair[0]] = pair[1]
        context[FROM_REQUEST[0]] = FROM_REQUEST[1]
        return context
    return context


def format_context(context: PriceContext | None) -> str | None:
    """The canonical string of a context: ``k=v`` sorted by key, joined by ``;``; None when empty."""
    if not context:
        return None
    return ";".join(f"{key}={context[key]}" for key in sorted(context))


def parse_context(text: str | None) -> PriceContext | None:
    """The context of a canonical string (:func:`format_context`); malformed parts are skipped, never raised."""
    if not text or type(text) is not str:
        return None
    context: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if sep and key and value:
            context[key] = value
    return context or None
