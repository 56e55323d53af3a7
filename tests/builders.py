"""Records built by name for the tests: the one place a test's ``Call`` gets every field.

A test names only the fields it is about (``a_call(span_id="b", cost_usd=None, status="unpriced")``);
the rest are a plain priced gpt-4o-mini chat call. Positional construction is avoided on purpose: a
field added to ``Call`` would shift every later value silently.
"""

from __future__ import annotations

from typing import Any, Final

from otel_usecase.cost.call import STATUS_PRICED, Call

CALL_DEFAULTS: Final[dict[str, Any]] = {
    "trace_id": "0" * 31 + "1",
    "span_id": "0" * 15 + "1",
    "start_ns": 1,
    "end_ns": 2,
    "service": None,
    "use_case": "u",
    "run_id": "r",
    "use_case_version": None,
    "step": None,
    "experience_name": None,
    "experience_id": None,
    "user_id": None,
    "provider": "openai",
    "model": "gpt-4o-mini",
    "operation": "chat",
    "tokens": {"input": 1, "output": 1},
    "cost_usd": 0.001,
    "status": STATUS_PRICED,
}
"""Every field of :class:`Call` without a default (a test that forgets one fails at once)."""


def a_call(**fields: Any) -> Call:
    """A priced gpt-4o-mini chat call; ``fields`` replace any of its fields by name."""
    return Call(**{**CALL_DEFAULTS, **fields})
