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
  :mod:`otel_usecase.scope.privacy`).

Inbound headers are also screened before the standard parser sees them: the
SDK's propagator logs a header over 8192 bytes whole (a 1 MB header is a 1 MB
log line) and every invalid member on its own line, on every request. Ours
checks the size first, drops what breaks the W3C limits or grammar, and logs
one short line per reason a minute (see :func:`_screen`).

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
import re
from collections.abc import Iterable, Mapping
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_PROPAGATORS
from opentelemetry.propagators import textmap

from .. import config
from .._log import logger, warn_rate_limited
from . import keys as attr
from ._baggage import BAGGAGE_KEY, baggage_of, is_valid_member
from .privacy import user_id_from_baggage
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

ENV_INBOUND_KEYS: Final = config.INBOUND_KEYS.env
"""Which of our keys ``usecase_baggage`` accepts from inbound requests: ``all``, ``none`` or a list."""
ENV_OUTBOUND_KEYS: Final = config.OUTBOUND_KEYS.env
"""Which of our keys ``usecase_baggage`` writes into outbound requests: ``all``, ``none`` or a list."""

ENTRY_POINT_NAME: Final = "usecase_baggage"
"""The name under the ``opentelemetry_propagator`` entry point group, for ``OTEL_PROPAGATORS``."""

_OUR_KEYS: Final = frozenset((*attr.ALL_KEYS, attr.TAG_KEYS))
"""Our keys as the settings name them: the scope's keys and ``usecase.tag.*`` for every tag at once."""
_SETTING_ORDER: Final = (*attr.ALL_KEYS, attr.TAG_KEYS)


def _setting_key(name: str) -> str:
    """The key of the trust settings that governs baggage entry ``name`` (``usecase.tag.*`` for any tag)."""
    return attr.TAG_KEYS if name.startswith(attr.TAG_PREFIX) else name


DEFAULT_INBOUND_KEYS: Final[frozenset[str]] = frozenset()
"""None of our keys: an edge must not let a client say whose run or user a request belongs to."""
DEFAULT_OUTBOUND_KEYS: Final[frozenset[str]] = _OUR_KEYS - {attr.USER_ID}
"""All our keys but ``user.id`` (tags included): enough for cross-service attribution, no personal data in
headers."""

KeySpec = str | Iterable[str]
"""``"all"``, ``"none"``, ``"usecase.name,usecase.id"``, or an iterable of our keys."""


def parse_keys(spec: KeySpec) -> frozenset[str]:
    """Turn a key setting into the set of our keys it allows; raise ``ValueError`` if it is not one.

    ``all`` and ``none`` are case-insensitive; list items are stripped and
    lower-cased (all our keys are lower case) and must each be one of
    :data:`otel_usecase.scope.keys.ALL_KEYS` or ``usecase.tag.*`` (every tag). An empty string is rejected
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
            raise ValueError(f"{item!r} is not one of our keys ({', '.join(_SETTING_ORDER)}), all or none")
        keys.add(item)
    return frozenset(keys)


def _resolve_keys(
    setting: config.Setting[frozenset[str] | None], given: KeySpec | None, default: frozenset[str]
) -> frozenset[str]:
    """Argument, then env var, then default; a bad argument raises, a bad env value warns."""
    if given is not None:
        return parse_keys(given)
    keys = setting.read()
    return default if keys is None else keys


def _describe(keys: frozenset[str]) -> str:
    if keys == _OUR_KEYS:
        return "all"
    if not keys:
        return "none"
    return ",".join(k for k in _SETTING_ORDER if k in keys)


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
        self._inbound = _resolve_keys(config.INBOUND_KEYS, accept_inbound, DEFAULT_INBOUND_KEYS)
        self._outbound = _resolve_keys(config.OUTBOUND_KEYS, send_outbound, DEFAULT_OUTBOUND_KEYS)
        self._withheld = _OUR_KEYS - self._outbound
        self._tags_withheld = attr.TAG_KEYS in self._withheld
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

        The header is first screened against the W3C limits and the SDK's own
        member check (:func:`_screen`), so that a hostile header costs one
        bounded pass and at most one log line per reason a minute; what is left is
        parsed by the standard propagator into an empty context,
        so that only entries that really came from the request are filtered; a
        value this process already had (a local scope) is never removed, and an
        inbound entry that is refused does not override it.
        """
        if context is None:
            context = otel_context.get_current()
        try:
            header = _screen(_first(getter.get(carrier, self._BAGGAGE_HEADER_NAME)))
            if not header:
                return context
            parsed = super().extract({self._BAGGAGE_HEADER_NAME: header}, Context())
            inbound = baggage_of(parsed)
            if not inbound:
                return context
            kept = self._filter_inbound(inbound)
        except Exception as exc:  # e.g. a getter that cannot read the carrier
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
            setting = _setting_key(name)
            if setting not in _OUR_KEYS:
                kept[name] = value
                continue
            if setting not in self._inbound:
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
            if name in self._withheld or (self._tags_withheld and name.startswith(attr.TAG_PREFIX)):
                if out is None:
                    out = dict(bag)
                del out[name]
            elif name == attr.USER_ID and isinstance(value, str):
                hashed = user_id_from_baggage(value)
                if hashed is None or hashed != value:
                    if out is None:
                        out = dict(bag)
                    if hashed is None:  # the HMAC key is too short: user ids are dropped
                        del out[name]
                    else:
                        out[name] = hashed
        return bag if out is None else out


# --- screening inbound headers ---------------------------------------------------------------

MAX_HEADER_BYTES: Final = 8192
"""W3C baggage: the most bytes of a ``baggage`` header a receiver must take; a longer one is ignored whole."""
MAX_MEMBERS: Final = 180
"""W3C baggage: the most list members a receiver must take; the first ones are kept."""
MAX_MEMBER_BYTES: Final = 4096
"""W3C baggage: the most bytes of one list member; a longer one is ignored."""

_DELIMITER: Final = re.compile(r"[ \t]*,[ \t]*")  # the SDK's own split
_SHOWN_KEY: Final = 40


def _first(items: object) -> object:
    """The first header value, as the SDK takes it (a getter returns a list of values)."""
    if items is None or isinstance(items, str | bytes):
        return items
    if isinstance(items, Iterable):
        return next(iter(items), None)
    return items


def _screen(header: object) -> str:
    """The members of an inbound ``baggage`` header the SDK will parse without a word, joined again.

    Bounded work whatever the header: its length is checked before anything
    else (a 1 MB header is never split, copied or logged), and only the first
    :data:`MAX_MEMBERS` members that pass the SDK's own check are kept. What is
    dropped is summarised by :func:`_report`, one line per reason a minute.
    """
    if header is None or header == "":
        return ""
    if not isinstance(header, str):
        _report("not_text", 1, f"a header of type {type(header).__name__}", "")
        return ""
    size = len(header) if len(header) > MAX_HEADER_BYTES else len(header.encode("utf-8", "surrogatepass"))
    if size > MAX_HEADER_BYTES:
        _report(
            "header", 1, f"a header of at least {size} bytes, over the W3C limit of {MAX_HEADER_BYTES}", ""
        )
        return ""
    kept: list[str] = []
    dropped: dict[str, tuple[int, str]] = {}
    for member in _DELIMITER.split(header):
        if not member:
            continue
        reason = _member_problem(member, len(kept))
        if reason is None:
            kept.append(member)
        else:
            count, first = dropped.get(reason, (0, member))
            dropped[reason] = (count + 1, first)
    for reason, (count, first) in dropped.items():
        _report(reason, count, _REASONS[reason], first.split("=", 1)[0])
    return ",".join(kept)


_REASONS: Final = {
    "non_ascii": "non-ASCII characters",
    "member_size": f"members over {MAX_MEMBER_BYTES} bytes",
    "members": f"members beyond the first {MAX_MEMBERS}",
    "format": "members that are not key=value",
    "invalid": "members whose key or value breaks the W3C baggage grammar",
}


def _member_problem(member: str, kept: int) -> str | None:
    """Why the SDK would refuse ``member`` (the same checks, in the same order), or ``None``."""
    if not member.isascii():
        return "non_ascii"
    if len(member) > MAX_MEMBER_BYTES:
        return "member_size"
    if kept >= MAX_MEMBERS:
        return "members"
    name, sep, value = member.partition("=")
    if not sep:
        return "format"
    if not is_valid_member(name.strip(" \t"), value.strip(" \t")):
        return "invalid"
    return None


def _report(reason: str, count: int, what: str, key: str) -> None:
    """One warning per reason a minute: a count and a short, escaped key; never the header."""
    shown = repr(key[:_SHOWN_KEY]) + ("..." if len(key) > _SHOWN_KEY else "") if key else ""
    warn_rate_limited(
        f"propagation:baggage:{reason}",
        "otel_usecase ignored %d inbound baggage item(s): %s%s (reported at most once a minute per reason)",
        count,
        what,
        f", the first with key {shown}" if shown else "",
    )
