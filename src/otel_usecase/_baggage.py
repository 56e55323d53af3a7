"""Direct access to the baggage entry of an OpenTelemetry ``Context``.

The public ``opentelemetry.baggage`` API copies the whole baggage mapping for
every read (``get_all``) and every written key (``set_baggage``). The span
processor runs on every span of the application and a scope writes seven keys
at once, so both read and write the one baggage dict directly. The context key
is found through the public API (set one entry on an empty context and see
which key appears), so no private name of the SDK is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import baggage as _otel_baggage
from opentelemetry.context import Context


def _find_baggage_key() -> str:
    ctx = _otel_baggage.set_baggage("otel_usecase.probe", "1", Context())
    (key,) = ctx.keys()
    return key


BAGGAGE_KEY: Final = _find_baggage_key()
"""The key under which ``opentelemetry.baggage`` keeps its dict in a ``Context``."""

_EMPTY: Final[Mapping[str, object]] = {}


def baggage_of(ctx: Context) -> Mapping[str, object]:
    """The baggage dict of ``ctx`` (no copy; empty mapping when there is none)."""
    bag = ctx.get(BAGGAGE_KEY)
    return bag if isinstance(bag, dict) else _EMPTY
