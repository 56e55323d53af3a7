"""From finished spans to priced calls: the one code path from span to ledger row.

Both the in-process exporter (SDK ``ReadableSpan``) and the OTLP receiver
(decoded protobuf / JSON) describe a span as a :class:`SpanView` and call
:func:`calls_from_spans`, so pricing, run grouping and de-duplication exist once.

**Which spans are calls.** A span is a model call when its GenAI operation is a
model operation (``chat``, ``text_completion``, ``embeddings``, ...), or it has no
operation but carries token usage, or OpenInference marks it ``LLM`` /
``EMBEDDING``. Agent and tool spans (``invoke_agent``, ``execute_tool``) are not
calls even when they carry summed usage, because their children already are.

**Never twice.** Two instrumentations of one request produce two model spans;
the request is counted once, from one of them:

* Nested (``opentelemetry-instrumentation-openai`` and ``-openai-v2``; an agent
  SDK's ``generation``/``response`` span around the OpenAI client's span): the
  inner span is keyed by its outermost ancestor *that is the same request*
  (:func:`otel_usecase.cost.operations.same_request`), so both land on one ledger key
  and the call sink (:mod:`otel_usecase.cost.sink`) keeps the more complete one. The ancestor is known from the
  ``usecase.call.span_id`` attribute that the span processor stamps at start, or
  else from the parent being in the same batch. A chain, agent, tool, workflow
  or task parent is never the same request: every call under it counts.
* Not nested (OpenInference LangChain's ``LLM`` span and the OpenAI client's
  span: OpenInference LangChain never makes its spans current, so the client's
  span is not its child): the span processor marks the LangChain span
  ``usecase.call.duplicate_of`` when the client's span starts inside it, and a
  marked span is not a call.

A span exported twice has the same key, and the call sink drops the second copy
(as the store's upsert would).

**Conditions and the provider's figure.** Each call is priced with the price
conditions its span calls for (:func:`otel_usecase.cost.conditions.price_context`:
the tier served, batch processing); a cost the provider or gateway billed
(:func:`otel_usecase.cost.billed.billed_cost`) is the call's cost, ours kept beside it.

**Partial usage.** A call whose usage could not be read in full (see
:mod:`otel_usecase.cost.usage`) is stored ``partial`` with the cost of what could be
read: a lower bound, never ``priced`` as if complete (a billed figure is the whole cost: ``priced``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from ..scope import keys as attr
from ..scope.validation import is_name, normalised_id
from .billed import BILLED_KEYS, billed_cost
from .call import (
    COST_SOURCE_PROVIDER,
    NO_TAGS,
    REASON_UNKNOWN_MODEL,
    STATUS_NO_USAGE,
    STATUS_PARTIAL,
    STATUS_PRICED,
    STATUS_UNPRICED,
    Call,
)
from .conditions import CONDITION_KEYS, price_context
from .operations import MODEL_OPERATIONS, NOT_CALL_OPERATIONS, OI_KIND, OI_MODEL_KINDS, same_request
from .prices import PriceBook, Quote, warn_unpriced
from .usage import READ_KEYS, LLMUsage, read_usage

__all__ = [
    "CALL_SPAN_ID",
    "ENGINE_KEYS",
    "MODEL_OPERATIONS",
    "NOT_CALL_OPERATIONS",
    "STATUS_NO_USAGE",
    "STATUS_PARTIAL",
    "STATUS_PRICED",
    "STATUS_UNPRICED",
    "UNTRACKED",
    "Call",
    "SpanView",
    "calls_from_spans",
    "is_model_call",
    "status_of",
]

UNTRACKED: Final = "(untracked)"
"""Use case name of LLM calls made outside any scope (each trace is its own run)."""

CALL_SPAN_ID: Final = attr.CALL_SPAN_ID

ENGINE_KEYS: Final[frozenset[str]] = (
    READ_KEYS
    | CONDITION_KEYS
    | BILLED_KEYS
    | frozenset(
        (
            *attr.ALL_KEYS,
            attr.CALL_SPAN_ID,
            attr.CALL_DUPLICATE_OF,
            attr.TAG_NAMES,
            attr.OUTCOME_NAME,  # outcome spans (otel_usecase.outcomes): serve stores them too
            attr.OUTCOME_VALUE,
            OI_KIND,
            "gen_ai.operation.name",
            "gen_ai.system",
            "gen_ai.provider.name",
        )
    )
)
"""Every span attribute the cost engine reads, besides the tags (``usecase.tag.<key>``, found through
``usecase.tags``); the rest (prompts, completions, ...) it never needs."""

_NO_ATTRIBUTES: Final[Mapping[str, Any]] = {}


class SpanView(NamedTuple):
    """What the cost engine needs of a finished span, whatever it was decoded from.

    A named tuple, not a dataclass: one is built per exported span, and tuple
    construction is several times cheaper than a frozen dataclass's.
    """

    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    error: bool = False
    service: str | None = None


def is_model_call(attributes: Mapping[str, Any]) -> bool:
    """Whether a finished span with these attributes is one model request (to be counted)."""
    if attr.CALL_DUPLICATE_OF in attributes:  # the same request as another span: counted there
        return False
    operation = attributes.get("gen_ai.operation.name")
    if operation is not None:
        op = str(operation)
        if op in MODEL_OPERATIONS:
            return True
        if op in NOT_CALL_OPERATIONS:
            return False
    kind = attributes.get(OI_KIND)
    if kind is not None:
        return str(kind).upper() in OI_MODEL_KINDS
    if operation is not None:  # an operation we do not know: count it if it has usage
        return read_usage(attributes).has_usage
    return ("gen_ai.system" in attributes or "gen_ai.provider.name" in attributes) and read_usage(
        attributes
    ).has_usage


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


def calls_from_spans(spans: Iterable[SpanView], prices: PriceBook) -> list[Call]:
    """Price the model-call spans among ``spans`` and group them into runs.

    Never raises on bad data: a value that cannot be read counts as missing and
    ``usage`` / ``pricing`` warn once per problem.
    """
    model_spans = [s for s in spans if is_model_call(s.attributes)]
    if not model_spans:
        return []
    by_id = {s.span_id: s for s in model_spans}
    clock = _DayClock()
    return [
        _call(
            span,
            # Most LLM spans have no LLM parent in the batch: their own id, without the walk.
            _call_key(span, by_id)
            if CALL_SPAN_ID in span.attributes or span.parent_span_id in by_id
            else format(span.span_id, "016x"),
            prices,
            clock,
        )
        for span in model_spans
    ]


class _DayClock:
    """``datetime`` of a span's start, built once per second of start time in a batch.

    Prices can depend on the date (and, for a few providers, the time of day), so
    each call is priced at its own start time; spans of one batch share seconds.
    """

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value: datetime | None = None

    def at(self, start_ns: int) -> datetime | None:
        if not start_ns:
            return None
        second = start_ns // 1_000_000_000
        if second != self._second:
            self._second = second
            self._value = datetime.fromtimestamp(second, tz=UTC)
        return self._value


def _call_key(span: SpanView, by_id: Mapping[int, SpanView]) -> str:
    """The span id a call is recorded under: its outermost ancestor that is the same request, or its own.

    Walks up through parents in the batch only while each is the same model
    request as the span (:func:`~otel_usecase.cost.operations.same_request`): a model
    span under a chain or agent span is its own call.
    """
    stamped = span.attributes.get(CALL_SPAN_ID)
    if isinstance(stamped, str) and len(stamped) == 16:
        return stamped
    current = span
    for _ in range(8):  # nested instrumentations are shallow; stop on cycles in bad data
        parent = by_id.get(current.parent_span_id) if current.parent_span_id is not None else None
        if (
            parent is None
            or parent.trace_id != span.trace_id
            or not same_request(parent.attributes, span.attributes)
        ):
            break
        current = parent
    return _hex_span(current.span_id)


_new_tuple: Final = tuple.__new__


def tags_of_span(attributes: Mapping[str, Any]) -> Mapping[str, str]:
    """The tags on a span: the ``usecase.tag.<key>`` attributes of the keys ``usecase.tags`` lists.

    Read through that list (one lookup for a span without tags, instead of a scan of
    every attribute). Never raises: a key that is not a name or has no value is
    skipped, a value that is not a storable id is normalised as a scope would
    (a call is never refused by the ledger for its tags), at most ``MAX_TAGS``.
    """
    names = attributes.get(attr.TAG_NAMES)
    if not isinstance(names, str) or not names:
        return NO_TAGS
    tags: dict[str, str] = {}
    for name in names.split(","):
        value = attributes.get(attr.TAG_PREFIX + name)
        if value is None or not is_name(name):
            continue
        text = value if isinstance(value, str) else str(value)
        if text:
            tags[name] = normalised_id(text)
            if len(tags) == attr.MAX_TAGS:
                break
    return tags or NO_TAGS


def status_of(usage: LLMUsage, quote: Quote) -> str:
    """The status of a call we priced (not billed): the one rule for the exporter, ``serve`` and ``reprice``.

    ``priced`` when the usage was read in full and has a price, ``partial`` when it
    has a price but part of the usage was unreadable (the cost is a lower bound),
    ``unpriced`` when there is usage but no price, ``no_usage`` when there is none.
    """
    if quote.cost_usd is not None:
        return STATUS_PRICED if usage.complete else STATUS_PARTIAL
    return STATUS_UNPRICED if usage.has_usage else STATUS_NO_USAGE


_PRICE_KEYS: Final = CONDITION_KEYS | BILLED_KEYS
"""The span keys that can change a call's price besides its usage."""


def _call(span: SpanView, key: str, prices: PriceBook, clock: _DayClock) -> Call:
    """The priced call of one model span.

    A cost the provider billed (:func:`~otel_usecase.cost.billed.billed_cost`) is the
    call's cost and makes it ``priced`` even when part of the usage was unreadable
    (``partial`` says "the cost is a lower bound", and a bill is the whole cost);
    our price is kept beside it in ``computed_cost_usd``.
    """
    a = span.attributes
    get = a.get
    usage = read_usage(a)
    trace_hex = format(span.trace_id, "032x")
    if _PRICE_KEYS.isdisjoint(a):  # most spans: no price condition, no billed figure (one C call)
        quote = prices.quote(usage, when=clock.at(span.start_ns))
        billed = None
    else:
        quote = prices.quote(usage, when=clock.at(span.start_ns), context=price_context(a))
        billed = billed_cost(a)
    reason = quote.reason
    cost: float | None
    source: str | None
    if billed is not None:
        cost, source, status, reason = billed, COST_SOURCE_PROVIDER, STATUS_PRICED, None
    else:
        cost, source = quote.cost_usd, quote.source
        status = status_of(usage, quote)
        if reason == REASON_UNKNOWN_MODEL and usage.has_usage:
            warn_unpriced(usage.model, usage.provider)
    return _new_call(
        trace_hex,
        key,
        span.start_ns,
        span.end_ns,
        span.service,
        _text(get(attr.USE_CASE_NAME)) or UNTRACKED,
        _text(get(attr.USE_CASE_ID)) or trace_hex,
        _text(get(attr.USE_CASE_VERSION)),
        _text(get(attr.USE_CASE_STEP)),
        _text(get(attr.EXPERIENCE_NAME)),
        _text(get(attr.EXPERIENCE_ID)),
        _text(get(attr.USER_ID)),
        usage.provider,
        usage.model,
        usage.operation,
        usage.tokens,
        cost,
        status,
        source,
        quote.detail,
        quote.context,
        reason,
        quote.cost_usd,
        1 if span.error else 0,
        NO_TAGS if attr.TAG_NAMES not in a else tags_of_span(a),
        _text(get(attr.EXPERIENCE_VERSION)),
    )


def _new_call(
    trace_id: str,
    span_id: str,
    start_ns: int,
    end_ns: int,
    service: str | None,
    use_case: str,
    run_id: str,
    use_case_version: str | None,
    step: str | None,
    experience_name: str | None,
    experience_id: str | None,
    user_id: str | None,
    provider: str | None,
    model: str | None,
    operation: str | None,
    tokens: Mapping[str, int],
    cost_usd: float | None,
    status: str,
    cost_source: str | None,
    price_source: str | None,
    price_context: str | None,
    unpriced_reason: str | None,
    computed_cost_usd: float | None,
    error: int,
    tags: Mapping[str, str],
    experience_version: str | None,
) -> Call:
    """``Call(**fields)`` by position: the one place the hot path builds a call.

    Why: ``Call`` has 26 fields, and building it by keyword costs about 4 us more
    per call than by position (measured on the benchmark machine: 5.2 us against
    1.3 us), more than half of what pricing a span costs. The parameters are the
    fields of :class:`~otel_usecase.cost.call.Call`, checked at import
    (:data:`_NEW_CALL_CHECKED`), so a field added or moved in ``Call`` fails at
    once; ``tests/test_call_build.py`` checks this function against the keyword
    constructor and :func:`calls_from_spans` field by field against the span.
    """
    return _new_tuple(
        Call,
        (
            trace_id,
            span_id,
            start_ns,
            end_ns,
            service,
            use_case,
            run_id,
            use_case_version,
            step,
            experience_name,
            experience_id,
            user_id,
            provider,
            model,
            operation,
            tokens,
            cost_usd,
            status,
            cost_source,
            price_source,
            price_context,
            unpriced_reason,
            computed_cost_usd,
            error,
            tags,
            experience_version,
        ),
    )


def _check_new_call() -> bool:
    code = _new_call.__code__
    names = code.co_varnames[: code.co_argcount]
    if names != Call._fields:
        raise ImportError(f"calls._new_call's parameters {names} are not the fields of Call {Call._fields}")
    return True


_NEW_CALL_CHECKED: Final = _check_new_call()
"""``_new_call`` takes exactly the fields of ``Call``, in order (else this module does not import)."""


def _plain_attributes(span: Any) -> Mapping[str, Any]:
    """The span's attributes as a plain dict, without a copy where the SDK allows.

    ``ReadableSpan.attributes`` is a read-only proxy over ``BoundedAttributes``,
    whose ``get`` of a missing key raises and catches ``KeyError``: the cost engine
    looks up about 25 keys per span, most of them missing, so that costs more than
    pricing. Finished spans' attribute maps are immutable, so reading the dict is safe.
    """
    attributes = getattr(span, "_attributes", None)
    if type(attributes) is BoundedAttributes:
        return attributes._dict
    public = span.attributes
    return dict(public) if public else _NO_ATTRIBUTES


def views_from_readable(spans: Sequence[Any]) -> list[SpanView]:
    """Describe SDK ``ReadableSpan`` objects as :class:`SpanView` (no copy of attributes).

    The SDK hands exporters plain ``ReadableSpan`` objects, whose public
    properties are one Python call each: for those the fields are read directly
    (a third of this function's time per span); any other span type goes through
    the public properties.
    """
    views: list[SpanView] = []
    last_resource: object = None
    service: str | None = None
    for span in spans:
        if type(span) is ReadableSpan:
            ctx = span._context
            parent = span._parent
            resource = span._resource
            status = span._status
            start, end = span._start_time, span._end_time
            attributes = span._attributes
            if type(attributes) is BoundedAttributes:
                attributes = attributes._dict
            else:
                attributes = _plain_attributes(span)
        else:
            ctx = span.context
            parent = span.parent
            resource = span.resource
            status = span.status
            start, end = span.start_time, span.end_time
            attributes = _plain_attributes(span)
        if ctx is None:
            continue
        if resource is not last_resource:  # one resource per provider: look it up once
            last_resource = resource
            service = _text(resource.attributes.get("service.name")) if resource is not None else None
        views.append(
            _new_tuple(
                SpanView,
                (
                    ctx.trace_id,
                    ctx.span_id,
                    parent.span_id if parent is not None else None,
                    start or 0,
                    end or 0,
                    attributes,
                    status is not None and status.status_code is StatusCode.ERROR,
                    service,
                ),
            )
        )
    return views
