"""The ledger row: one priced (or unpriceable) LLM call.

Its own module, free of the pricing and span code, so that the stores and the
``report`` command load without the price data (genai-prices and its
dependencies take longer to import than a report over a small ledger takes).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Call"]


class Call(NamedTuple):
    """One priced (or unpriceable) LLM request: one row of the ledger, in column order."""

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
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    status: str
    price_source: str | None
    error: int
    """1 when the span's status was ERROR (a failed request), else 0."""
