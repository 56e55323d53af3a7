"""The ledger row: one priced (or unpriceable) LLM call.

Its own module, free of the pricing and span code, so that the stores and the
``report`` command load without the price data (genai-prices and its
dependencies take longer to import than a report over a small ledger takes).

Fields are read by name everywhere: the token counts travel as one mapping keyed
by token class (:mod:`otel_usecase.cost.token_classes`), and the store turns a
call into its row by column name (``store.base.row_of``), so a new class or field
can never shift another's column.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

__all__ = [
    "COST_SOURCE_PROVIDER",
    "NO_TAGS",
    "REASON_INCONSISTENT",
    "REASON_NO_USAGE",
    "REASON_UNKNOWN_MODEL",
    "STATUS_NO_USAGE",
    "STATUS_PARTIAL",
    "STATUS_PRICED",
    "STATUS_UNPRICED",
    "Call",
    "TokenCounts",
]

TokenCounts = Mapping[str, int]
"""Token counts by class name (``input``, ``cache_read``, ``input_audio`` ...).

A missing ``input`` or ``output`` count is *unknown* (stored NULL, never priced
as 0); a missing part (cache, reasoning, audio ...) is 0."""

STATUS_PRICED: Final = "priced"
"""Usage read in full and priced (or billed by the provider): ``cost_usd`` is the call's cost."""
STATUS_PARTIAL: Final = "partial"
"""Usage read only in part and priced: ``cost_usd`` is a lower bound."""
STATUS_UNPRICED: Final = "unpriced"
"""Usage read but no price: ``cost_usd`` is None and ``unpriced_reason`` says why."""
STATUS_NO_USAGE: Final = "no_usage"
"""No usage on the span (``unpriced_reason`` ``no usage``)."""

REASON_NO_USAGE: Final = "no usage"
"""``unpriced_reason`` of a call without usage on its span."""
REASON_UNKNOWN_MODEL: Final = "unknown model"
"""``unpriced_reason`` of a call whose model no price source knows."""
REASON_INCONSISTENT: Final = "inconsistent token counts"
"""``unpriced_reason`` of a call whose parts exceed the count they are part of."""
# ``unknown token class <label>``: see otel_usecase.cost.token_classes.unknown_class_reason.

COST_SOURCE_PROVIDER: Final = "provider"
"""``cost_source`` of a call whose cost the provider or gateway billed (OpenRouter ``usage.cost`` ...)."""

NO_TAGS: Final[Mapping[str, str]] = MappingProxyType({})
"""The tags of a call made outside any scope with tags: one shared, immutable empty mapping."""


class Call(NamedTuple):
    """One LLM request, priced: one row of the ledger.

    ``cost_usd`` is what the call cost: the provider's billed figure when the span
    carries one (``cost_source`` ``provider``), else our price. ``computed_cost_usd``
    is always our price (None when it cannot be computed), kept beside a billed
    figure for comparison. ``cost_source`` says where ``cost_usd`` came from:
    ``provider``, ``genai-prices <version>`` or ``override <file hash>``;
    ``price_source`` the details of our price (alias, data date); ``price_context``
    the price conditions applied (``service_tier=priority``, ``processing=batch``);
    ``unpriced_reason`` why a call has no cost (``unknown model``, ``unknown token
    class audio``, ``no usage`` ...).
    """

    trace_id: str
    span_id: str
    start_ns: int
    end_ns: int
    service: str | None
    use_case: str
    run_id: str
    use_case_version: str | None
    step: str | None
    experience_name: str | None
    experience_id: str | None
    user_id: str | None
    provider: str | None
    model: str | None
    operation: str | None
    tokens: TokenCounts
    cost_usd: float | None
    status: str
    cost_source: str | None = None
    price_source: str | None = None
    price_context: str | None = None
    unpriced_reason: str | None = None
    computed_cost_usd: float | None = None
    error: int = 0
    """1 when the span's status was ERROR (a failed request), else 0."""
    tags: Mapping[str, str] = NO_TAGS
    """The custom properties of the call's scope (``track_context(tags={"tenant": "acme"})``): keys follow the
    name rule, values the id rule; stored as one JSON object in the ledger's ``tags`` column."""
    experience_version: str | None = None
    """The version of the call's experience (``track_context(experience_version="v2")``, baggage
    ``experience.version``); last, with a default, so that calls built by position before it still build."""

    @property
    def input_tokens(self) -> int | None:
        return self.tokens.get("input")

    @property
    def output_tokens(self) -> int | None:
        return self.tokens.get("output")
