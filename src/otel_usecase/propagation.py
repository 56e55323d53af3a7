"""``usecase_baggage``: the W3C baggage propagator with trust rules for our keys.

Why a propagator of its own: the standard ``baggage`` propagator trusts every
inbound entry and sends every entry out. For otel-usecase that means

* **inbound**, any client of an edge service can send
  ``baggage: usecase.id=someone-elses-run,user.id=victim`` and have the LLM
  calls it triggers billed to another run or user;
* **outbound**, ``user.id`` (personal data) goes into the headers of every
  instrumented request, LLM providers and third-party APIs included.

:class:`UseCaseBaggagePropagator` is the standard ``W3CBaggagePropagator`` (its
parsing, encoding and W3C size limits are reused, not rewritten) with two
filters that apply to our seven keys only; every other baggage entry passes
through unchanged in both directions:

* ``accept_inbound`` / ``OTEL_USECASE_INBOUND_KEYS``: which of our keys
  ``extract`` accepts from a request. Default ``none``: whoever picks this
  propagator does so to protect an edge, and an edge must not believe a client
  about whose run or user it is working for.
* ``send_outbound`` / ``OTEL_USECASE_OUTBOUND_KEYS``: which of our keys
  ``inject`` writes into outgoing requests. Default: all but ``user.id``. The
  use case, run, step and experience are what a downstream service needs to
  attribute its own LLM calls and say nothing about a person; the user id is
  personal data, and a propagator cannot tell an internal service from an LLM
  provider, so it stays home unless allowed (ideally hashed, see
  :mod:`otel_usecase.privacy`).

Both settings take ``all``, ``none`` or a comma-separated list of our keys
(``usecase.name,usecase.id``). Resolution: constructor argument, then env var,
then default; a bad env value is warned about and the default used.

Use it *instead of* ``baggage``::

    OTEL_PROPAGATORS=tracecontext,usecase_baggage

Trusted internal services, whose callers are other services of the same
system, keep the standard ``baggage`` propagator or set
``OTEL_USECASE_INBOUND_KEYS=all``. A process that serves both the internet and
internal callers extracts on its internal routes with an instance of its own:
``UseCaseBaggagePropagator(accept_inbound="all").extract(headers)``.

There is deliberately no "trust the caller if it sends a shared-secret header"
mode: ``inject`` cannot tell internal from external destinations, so such a
header would be sent to LLM providers and every other host the service calls,
and the secret would leak to exactly the parties it is meant to keep out.
Trust belongs to the network boundary (which services are reachable from
outside, mTLS, a gateway that strips ``baggage``), expressed here by which
setting each service runs with.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_PROPAGATORS
from opentelemetry.propagators import textmap

from . import attributes as attr
from . import config
from ._baggage import BAGGAGE_KEY, baggage_of
from ._log import logger, warn_rate_limited
from .privacy import user_id_for_telemetry
from .validation import accept_inbound

__all__ = [
    "DEFAULT_INBOUND_KEYS",
    "DEFAULT_OUTBOUND_KEYS",
    "ENTRY_POINT_NAME",
    "ENV_INBOUND_KEYS",
    "ENV_OUTBOUND_KEYS",
    "KeySpec",
    "UseCaseBaggagePropagator",
    "parse_keys",
]

ENV_INBOUND_KEYS: Final = "OTEL_USECASE_INBOUND_KEYS"
"""Which of our keys ``usecase_baggage`` accepts from inbound requests: ``all``, ``none`` or a list."""
ENV_OUTBOUND_KEYS: Final = "OTEL_USECASE_OUTBOUND_KEYS"
"""Which of our keys ``usecase_baggage`` writes into outbound requests: ``all``, ``none`` or a list."""

ENTRY_POINT_NAME: Final = "usecase_baggage"
"""The name under the ``opentelemetry_propagator`` entry point group, for ``OTEL_PROPAGATORS``."""

_OUR_KEYS: Final = frozenset(attr.ALL_KEYS)

DEFAULT_INBOUND_KEYS: Final[frozenset[str]] = frozenset()
"""None of our keys: an edge must not let a client say whose run or user a request belongs to."""
DEFAULT_OUTBOUND_KEYS: Final[frozenset[str]] = _OUR_KEYS - {attr.USER_ID}
"""All our keys but ``user.id``: enough for cross-service attribution, no personal data in headers."""

KeySpec = str | Iterable[str]
"""``"all"``, ``"none"``, ``"usecase.name,usecase.id"``, or an iterable of our keys."""


def parse_keys(spec: KeySpec) -> frozenset[str]:
    """Turn a key setting into the set of our keys it allows; raise ``ValueError`` if it is not one.

    ``all`` and ``none`` are case-insensitive; list items are stripped and
    lower-cased (all our keys are lower case) and must each be one of
    :data:`otel_usecase.attributes.ALL_KEYS`. An empty string is rejected
    rather than read as ``none``, so that a half-written setting is noticed.
    """
    if isinstance(spec, str):
        word = spec.strip().lower()
        if word == "all":
            return _OUR_KEYS
        if word == "none":
            return frozenset()
        items = [item.strip().lower() for item in word.split(",")]
        if not any(items):
            raise ValueError(f"{spec!r} names no key; use all, none or a comma-separated list of keys")
    else:
        items = [item.strip().lower() if isinstance(item, str) else item for item in spec]
    keys: set[str] = set()
    for item in items:
        if item == "":
            continue
        if item not in _OUR_KEYS:
            raise ValueError(f"{item!r} is not one of our keys ({', '.join(attr.ALL_KEYS)}), all or none")
        keys.add(item)
    return frozenset(keys)


def _resolve_keys(env_name: str, given: KeySpec | None, default: frozenset[str]) -> frozenset[str]:
    """Argument, then env var, then default; a bad argument raises, a bad env value warns."""
    if given is not None:
        return parse_keys(given)
    raw = config.env_str(env_name)
    if raw is None:
        return default
    try:
        return parse_keys(raw)
    except ValueError as exc:
        warn_rate_limited(
            f"env:{env_name}", "%s=%r: %s; using the default %s", env_name, raw, exc, _describe(default)
        )
        return default


def _describe(keys: frozenset[str]) -> str:
    if keys == _OUR_KEYS:
        return "all"
    if not keys:
        return "none"
    return ",".join(k for k in attr.ALL_KEYS if k in keys)


def _warn_if_standard_baggage_also_configured() -> None:
    """Both in ``OTEL_PROPAGATORS`` means the standard one still extracts and injects everything."""
    names = [n.strip().lower() for n in os.environ.get(OTEL_PROPAGATORS, "").split(",")]
    if "baggage" in names and ENTRY_POINT_NAME in names:
        warn_rate_limited(
            "propagation:both",
            "otel_usecase: %s lists both baggage and %s; the standard baggage propagator still accepts "
            "and sends every key, so list %s instead of baggage, not next to it",
            OTEL_PROPAGATORS,
            ENTRY_POINT_NAME,
            ENTRY_POINT_NAME,
        )


class UseCaseBaggagePropagator(W3CBaggagePropagator):
    """W3C baggage with per-service rules for which use case keys are accepted and sent.

    ``accept_inbound``: our keys ``extract`` accepts (default ``none``, env
    ``OTEL_USECASE_INBOUND_KEYS``). ``send_outbound``: our keys ``inject``
    writes (default all but ``user.id``, env ``OTEL_USECASE_OUTBOUND_KEYS``).
    Other baggage entries are untouched. Accepted inbound values are validated
    like any baggage value (invalid ones dropped with a rate-limited warning) and
    an accepted ``user.id`` is hashed when user id hashing is on, so that a raw
    id from an upstream service does not reach this service's spans either.
    Neither method raises: a malformed header is the sender's problem.
    """

    def __init__(
        self, *, accept_inbound: KeySpec | None = None, send_outbound: KeySpec | None = None
    ) -> None:
        self._inbound = _resolve_keys(ENV_INBOUND_KEYS, accept_inbound, DEFAULT_INBOUND_KEYS)
        self._outbound = _resolve_keys(ENV_OUTBOUND_KEYS, send_outbound, DEFAULT_OUTBOUND_KEYS)
        self._withheld = _OUR_KEYS - self._outbound
        _warn_if_standard_baggage_also_configured()

    @property
    def accept_inbound(self) -> frozenset[str]:
        """Our keys that ``extract`` accepts from inbound requests."""
        return self._inbound

    @property
    def send_outbound(self) -> frozenset[str]:
        """Our keys that ``inject`` writes into outbound requests."""
        return self._outbound

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(accept_inbound={_describe(self._inbound)!r}, "
            f"send_outbound={_describe(self._outbound)!r})"
        )

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Baggage from ``carrier`` merged into ``context``, without the keys this service does not accept.

        The header is parsed by the standard propagator into an empty context,
        so that only entries that really came from the request are filtered; a
        value this process already had (a local scope) is never removed, and an
        inbound entry that is refused does not override it.
        """
        if context is None:
            context = otel_context.get_current()
        try:
            parsed = super().extract(carrier, Context(), getter)
            inbound = baggage_of(parsed)
            if not inbound:
                return context
            kept = self._filter_inbound(inbound)
        except Exception as exc:  # e.g. a header with lone surrogates or of a type the getter cannot read
            warn_rate_limited(
                "propagation:extract",
                "otel_usecase ignored an unreadable baggage header (%s)",
                type(exc).__name__,
            )
            return context
        if not kept:
            return context
        merged = dict(baggage_of(context))
        merged.update(kept)
        return otel_context.set_value(BAGGAGE_KEY, merged, context)

    def _filter_inbound(self, inbound: Mapping[str, object]) -> dict[str, object]:
        kept: dict[str, object] = {}
        refused: list[str] = []
        for name, value in inbound.items():
            if name not in _OUR_KEYS:
                kept[name] = value
                continue
            if name not in self._inbound:
                refused.append(name)
                continue
            cleaned = accept_inbound(name, value)
            if cleaned is not None:
                kept[name] = cleaned
        if refused:
            # Once a minute: at an edge this is a client trying (or misconfigured) to choose its
            # attribution; on an internal service it is a missing OTEL_USECASE_INBOUND_KEYS.
            warn_rate_limited(
                "propagation:refused",
                "otel_usecase refused inbound baggage keys %s (%s=%s); services whose callers are "
                "trusted internal services accept them with the baggage propagator or %s=all",
                ", ".join(sorted(refused)),
                ENV_INBOUND_KEYS,
                _describe(self._inbound),
                ENV_INBOUND_KEYS,
            )
        return kept

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write the baggage header like the standard propagator, without the keys not to be sent.

        A ``user.id`` that is sent goes out hashed when user id hashing is on,
        even if it was put into baggage by other means than a scope.
        """
        try:
            ctx = context if context is not None else otel_context.get_current()
            bag = baggage_of(ctx)
            if bag:
                outbound = self._filter_outbound(bag)
                if outbound is not bag:
                    ctx = otel_context.set_value(BAGGAGE_KEY, outbound, ctx)
            super().inject(carrier, ctx, setter)
        except Exception:  # telemetry must never fail the application's request
            logger.debug("otel_usecase: could not inject baggage", exc_info=True)

    def _filter_outbound(self, bag: Mapping[str, object]) -> Mapping[str, object]:
        """``bag`` itself when nothing changes, else a filtered copy (a few entries: cheaper than a cache)."""
        out: dict[str, object] | None = None
        for name, value in bag.items():
            if name in self._withheld:
                if out is None:
                    out = dict(bag)
                del out[name]
            elif name == attr.USER_ID and isinstance(value, str):
                hashed = user_id_for_telemetry(value)
                if hashed != value:
                    if out is None:
                        out = dict(bag)
                    out[name] = hashed
        return bag if out is None else out
