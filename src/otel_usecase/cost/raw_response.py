"""The raw response JSON OpenInference records on a span (``output.value``), read safely.

Why this exists: some billing facts are on no span attribute of any
instrumentation but are in the provider's response body, which OpenInference
copies to ``output.value`` (``output.mime_type = application/json``): the served
service tier (top-level ``service_tier``) and OpenRouter's billed cost
(``usage.cost``). :mod:`otel_usecase.cost.conditions` and
:mod:`otel_usecase.cost.billed` both read it; parsing it once per span for both
is this module's job (the last text parsed is remembered).

Bounded and never raising: only JSON mime type, only text under
:data:`MAX_CHARS`, only when the text contains the key asked for (a substring
test, far cheaper than a parse), and any parse error is "no JSON".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MAX_CHARS", "MIME_KEY", "OUTPUT_KEY", "response_json"]

OUTPUT_KEY: Final = "output.value"
MIME_KEY: Final = "output.mime_type"
MAX_CHARS: Final = 256 * 1024
"""Longer texts are not parsed (a response with a long completion; its usage is elsewhere)."""

_last: tuple[str, Mapping[str, Any] | None] = ("", None)


def response_json(attributes: Mapping[str, Any], needle: str) -> Mapping[str, Any] | None:
    """The JSON object in ``output.value`` when it is JSON, short enough and contains ``needle``; else None."""
    global _last
    text = attributes.get(OUTPUT_KEY)
    if type(text) is not str or len(text) > MAX_CHARS or needle not in text:
        return None
    mime = attributes.get(MIME_KEY)
    if type(mime) is not str or "json" not in mime.lower():
        return None
    last_text, last_value = _last
    if text is last_text or text == last_text:
        return last_value
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    parsed = value if isinstance(value, dict) else None
    _last = (text, parsed)  # one tuple swap: safe between threads
    return parsed
