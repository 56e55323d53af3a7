"""The provider's own figure: a USD cost the provider or a gateway billed, when the span carries one.

Why this exists: a gateway that bills the call (OpenRouter's ``usage.cost``,
LiteLLM's spend) knows the real cost, including what no price list has (its own
fees, negotiated rates, routing to a cheaper upstream). When a span carries
such a figure it is the call's cost (``cost_source = provider``) and our own
price is kept beside it for comparison. :data:`BILLED` lists where the figure
is found, once; :func:`billed_cost` reads it.

Not billed: ``gen_ai.usage.cost``. It is an *estimate* by whoever holds a price
table: the transform processor ``otel-usecase collector-config`` generates
writes it (:data:`otel_usecase.collector.plan.COST_ATTRIBUTE`, from the same
genai-prices data we price with), and OpenLIT writes its own from its price
file. Taking it for a provider figure would label our own estimate
``provider`` (a span priced by our collector, then stored by ``serve``), so it
is not read here: such a call is priced by us like any other.

Values: a finite number >= 0 (int, float, or numeric text); anything else is
ignored with a rate-limited warning naming the key and the value, and the next
key is tried. Never raises: this runs in the export path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._log import warn_rate_limited
from .raw_response import MIME_KEY, OUTPUT_KEY, response_json

__all__ = ["BILLED", "BILLED_KEYS", "NOT_BILLED_KEYS", "BilledKey", "billed_cost"]


@dataclass(frozen=True, slots=True)
class BilledKey:
    """Where a billed cost is found: a span attribute, or a path in the raw response JSON it holds."""

    span_key: str
    doc: str
    json_path: tuple[str, ...] | None = None


BILLED: Final[tuple[BilledKey, ...]] = (
    BilledKey("llm.cost.total", "OpenInference semantic conventions: the call's total cost in USD"),
    BilledKey(
        "gen_ai.cost.total_cost", "LiteLLM's OpenTelemetry callback: what LiteLLM charged for the call"
    ),
    BilledKey("litellm.cost.total", "LiteLLM's OpenTelemetry callback, v2 attribute names"),
    BilledKey(
        OUTPUT_KEY,
        "OpenRouter's usage.cost in the raw response JSON OpenInference records (also when streaming)",
        json_path=("usage", "cost"),
    ),
)
"""Where a billed cost is read, first valid wins."""

BILLED_KEYS: Final[frozenset[str]] = frozenset({b.span_key for b in BILLED} | {MIME_KEY})
"""Every span attribute :func:`billed_cost` reads (a receiver decodes only what is read)."""

NOT_BILLED_KEYS: Final[tuple[str, ...]] = ("gen_ai.usage.cost",)
"""Cost attributes that are estimates, never read as billed (see the module docstring)."""


def billed_cost(attributes: Mapping[str, Any]) -> float | None:
    """The USD cost the provider or gateway billed for this span's call, or None."""
    if BILLED_KEYS.isdisjoint(attributes):  # most spans: none of the keys (one C call)
        return None
    get = attributes.get
    for billed in BILLED:
        if billed.json_path is None:
            raw = get(billed.span_key)
            if raw is None:
                continue
        else:
            if billed.span_key not in attributes:
                continue
            raw = _openrouter_cost(response_json(attributes, '"cost"'))
            if raw is None:
                continue
        value = _usd(raw)
        if value is not None:
            return value
        _warn(billed.span_key, raw)
    return None


def _openrouter_cost(body: Mapping[str, Any] | None) -> object:
    """``usage.cost``, plus ``usage.cost_details.upstream_inference_cost`` for a BYOK request.

    With your own provider key (``usage.is_byok``), OpenRouter's ``cost`` is only
    its fee; the provider billed the upstream cost to that key.
    """
    if body is None:
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    cost = usage.get("cost")
    if cost is None or usage.get("is_byok") is not True:
        return cost
    details = usage.get("cost_details")
    upstream = details.get("upstream_inference_cost") if isinstance(details, dict) else None
    fee, extra = _usd(cost), _usd(upstream)
    if fee is None or extra is None:
        return cost
    return fee + extra


def _usd(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except (OverflowError, ValueError):
            return None
        if math.isfinite(value) and value >= 0:
            return value
    return None


def _warn(span_key: str, raw: object) -> None:
    try:
        shown = repr(raw)
    except Exception:  # a repr that raises must not stop the warning
        shown = f"<unprintable {type(raw).__name__}>"
    if len(shown) > 80:
        shown = shown[:80] + "..."
    warn_rate_limited(
        "billed:" + span_key,
        "otel-usecase: ignoring the billed cost %s=%s on an LLM span: not a finite number of USD >= 0",
        span_key,
        shown,
    )
