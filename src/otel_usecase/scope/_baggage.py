"""Direct access to the baggage entry of an OpenTelemetry ``Context``.

The public ``opentelemetry.baggage`` API copies the whole baggage mapping for
every read (``get_all``) and every written key (``set_baggage``). The span
processor runs on every span of the application and a scope writes seven keys
at once, so both read and write the one baggage dict directly. The context key
is found through the public API (set one entry on an empty context and see
which key appears), so no private name of the SDK is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, cast

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


def _sdk_pair_check() -> Callable[[str, str], bool]:
    """The SDK's own test of a baggage ``key=value`` member (private: read here, and only here).

    The ``usecase_baggage`` propagator screens inbound members with exactly the
    test the SDK's ``W3CBaggagePropagator`` applies, so that what it hands on to
    the SDK never makes the SDK log (it logs every invalid member, whole).
    ``tests/test_trust.py::test_sdk_baggage_member_check_is_still_there`` fails
    if the SDK renames it; until then, a missing one falls back to accepting
    every member, which only lets the SDK log again.
    """
    from opentelemetry import baggage as sdk_baggage

    check = getattr(sdk_baggage, "_is_valid_pair", None)
    if callable(check):
        return cast(Callable[[str, str], bool], check)
    return lambda key, value: True


is_valid_member: Final = _sdk_pair_check()
"""``is_valid_member(key, value)``: whether the SDK's baggage propagator accepts the pair."""
