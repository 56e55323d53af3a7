"""Expected figures, computed from published prices (openai.com/api/pricing), and what reports say.

gpt-4o-mini  $0.15 input, $0.60 output, $0.075 cached input (per million tokens)
gpt-4o       $2.50 input, $10.00 output, $1.25 cached input
o3-mini      $1.10 input, $4.40 output, $0.55 cached input (reasoning tokens are billed as output)
text-embedding-3-small  $0.02 input
"""

from __future__ import annotations

import json
from typing import Any

from otel_usecase.report.queries import render_report
from otel_usecase.store import open_store

M = 1_000_000
MINI_IN, MINI_OUT, MINI_CACHED = 0.15, 0.60, 0.075
GPT4O_IN, GPT4O_OUT, GPT4O_CACHED = 2.50, 10.00, 1.25
O3_MINI_IN, O3_MINI_OUT = 1.10, 4.40
EMBED_SMALL_IN = 0.02


def openai_cost(
    prompt: int, completion: int, cached: int, p_in: float, p_out: float, p_cached: float
) -> float:
    """OpenAI bills uncached prompt tokens, cached prompt tokens and completion tokens (reasoning included)."""
    return ((prompt - cached) * p_in + cached * p_cached + completion * p_out) / M


def mini_cost(prompt: int, completion: int, cached: int = 0) -> float:
    return openai_cost(prompt, completion, cached, MINI_IN, MINI_OUT, MINI_CACHED)


def report_json(store_url: str, by: str = "use-case", **kwargs: Any) -> list[dict[str, Any]]:
    """What a user sees from ``otel-usecase report --format json``."""
    store = open_store(store_url)
    try:
        return json.loads(render_report(store, by, "json", **kwargs))
    finally:
        store.close()
