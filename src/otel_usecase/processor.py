"""The span processor that stamps use case, run, experience, user and tags onto LLM spans.

It runs on every span the application starts, so ``on_start`` is built around a
fast exit: no baggage and no default use case means one dict lookup and return,
with nothing allocated and no lock taken. Only spans that pass the LLM test get
attributes, and the validated values of a baggage dict are cached by identity
(baggage dicts are never mutated; each change makes a new one).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import INVALID_SPAN, set_span_in_context

from . import config
from ._log import logger, warn_rate_limited
from .cost.operations import CALL_MARK_KEYS, call_class, same_request
from .scope import keys as attr
from .scope import tracking as _scope
from .scope._baggage import BAGGAGE_KEY

__all__ = ["LLM_SCOPE_PREFIXES", "LLM_START_ATTRIBUTES", "UseCaseSpanProcessor"]

LLM_SCOPE_PREFIXES: Final[tuple[str, ...]] = (
    "opentelemetry.instrumentation.openai",  # Traceloop openai, upstream openai-v2, openai_agents
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.instrumentation.bedrock",
    "opentelemetry.instrumentation.cohere",
    "opentelemetry.instrumentation.google_generativeai",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.instrumentation.vertexai",
    "opentelemetry.instrumentation.groq",
    "opentelemetry.instrumentation.mistralai",
    "opentelemetry.instrumentation.ollama",
    "opentelemetry.instrumentation.together",
    "opentelemetry.instrumentation.replicate",
    "opentelemetry.instrumentation.watsonx",
    "opentelemetry.instrumentation.sagemaker",
    "opentelemetry.instrumentation.writer",
    "opentelemetry.instrumentation.alephalpha",
    "opentelemetry.instrumentation.transformers",
    "opentelemetry.util.genai",
    "openinference.instrumentation",
)
"""Instrumentation scope name prefixes whose spans are LLM spans."""

LLM_START_ATTRIBUTES: Final[tuple[str, ...]] = (
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.provider.name",
)
"""Attributes that mark an LLM span when present at start (GenAI semantic conventions)."""

_MAX_CACHED_SCOPES: Final = 4096
_MAX_WRAPPERS: Final = 64
_MISSING: Final = object()


def _find_span_key() -> str:
    """The context key of the current span, found through the public API."""
    (key,) = set_span_in_context(INVALID_SPAN, Context()).keys()
    return key


_SPAN_KEY: Final = _find_span_key()


def _context_getter() -> Callable[[], Context]:
    """The fastest way to read the current context.

    With the SDK's default contextvars runtime context this is the ContextVar's
    own ``get`` (one C call instead of two Python ones, on every span); any other
    runtime context goes through the public ``get_current``.
    """
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(variable, ContextVar):
        getter: Callable[[], Context] = variable.get
        return getter
    return otel_context.get_current


_current_context: Final = _context_getter()


class UseCaseSpanProcessor(SpanProcessor):
    """Copies the scope's keys from the parent context's baggage onto spans at start.

    ``spans="llm"`` (default, or env ``OTEL_USECASE_SPANS``) stamps only LLM spans;
    ``spans="all"`` stamps every span inside a scope. Attributes already set by
    the instrumentation are never overwritten. Invalid or over-long values that
    arrived as baggage from another service are dropped with a rate-limited
    warning; nothing here raises into the application.
    """

    def __init__(self, spans: str | None = None) -> None:
        self._all_spans = config.spans_mode(spans) == "all"
        # id(instrumentation scope) -> its "room": 0 when its spans are not LLM spans; else
        # how many attributes an LLM span of it may hold for our direct write (-1: use
        # the public API). A tracer's spans all share its scope object and span limits.
        self._rooms: dict[int, int] = {}
        self._scopes_seen: list[object] = []
        self._last: tuple[object, dict[str, str]] = (None, {})
        self._plain_scope: object = _MISSING
        # (baggage, span) of the latest LLM-scope spans that carried no GenAI mark at start
        # (OpenInference LangChain's): see _claim_wrapper. Bounded; appends are atomic.
        self._wrappers: deque[tuple[object, Span]] = deque(maxlen=_MAX_WRAPPERS)
        self._last_claimer: str | None = None
        # Whether the last span that read the context found baggage: decides which of
        # on_start's two rejecting tests runs first (a hint; either order is correct).
        self._scoped = False
        _scope.load_default_from_env()

    @property
    def spans(self) -> str:
        """Which spans are stamped: ``"llm"`` or ``"all"``."""
        return "all" if self._all_spans else "llm"

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # The hot path of every span the application starts; 9 in 10 spans of a request
        # are not LLM spans and end at one of two tests: "no baggage and no default use
        # case" (one context read) and "not an LLM span" (the span's scope and start
        # attributes). Whichever rejected recent spans runs first: outside any scope the
        # context read, inside one the LLM test, so that a typical span pays for one test.
        # Measured in a real request, each bytecode here costs several times what it costs
        # in a tight loop (the code and the span are cold), so the path is written out
        # inline and reads the SDK span's fields directly. Spans that are not SDK spans,
        # and ``spans="all"``, take the general path.
        try:
            ctx = None
            if not self._scoped:
                ctx = parent_context if parent_context is not None else _current_context()
                bag = ctx.get(BAGGAGE_KEY)
                if not bag:
                    if _scope._default_attributes is None:
                        return
                else:
                    self._scoped = True
            try:
                scope = span._instrumentation_scope
                started = span._attributes._dict  # type: ignore[union-attr]
            except AttributeError:
                if self._all_spans or self._is_llm(span):
                    self._stamp_general(span, parent_context)
                return
            if scope is self._plain_scope:  # never with spans="all": _room does not set it then
                if not (
                    "gen_ai.operation.name" in started
                    or "gen_ai.system" in started
                    or "gen_ai.provider.name" in started
                ):
                    return
                room = 0
            else:
                if self._all_spans:
                    self._stamp_general(span, parent_context)
                    return
                room = self._room(scope, span)
                if not room and not (
                    "gen_ai.operation.name" in started
                    or "gen_ai.system" in started
                    or "gen_ai.provider.name" in started
                ):
                    return
            if ctx is None:
                ctx = parent_context if parent_context is not None else _current_context()
                bag = ctx.get(BAGGAGE_KEY)
                if not bag:
                    self._scoped = False
                    if _scope._default_attributes is None:
                        return
            # An LLM span.
            values = self._values(bag, ctx)
            if not values:
                return
            parent = ctx.get(_SPAN_KEY)
            outer = None
            if parent is not None:
                # Nested in another LLM span, the same request (two instrumentations of one
                # call)? Not when the parent comes from the last non-LLM scope and started as
                # a plain span; else same_request decides.
                parent_started = getattr(parent, "_attributes", None)
                if (
                    getattr(parent, "_instrumentation_scope", None) is not self._plain_scope
                    or type(parent_started) is not BoundedAttributes
                    or "gen_ai.operation.name" in parent_started._dict
                    or "gen_ai.system" in parent_started._dict
                    or "gen_ai.provider.name" in parent_started._dict
                ):
                    outer = self._outer_call_span_id(span, parent)
                    if outer is not None:
                        values = {**values, attr.CALL_SPAN_ID: outer}
            if not (
                "gen_ai.operation.name" in started
                or "openinference.span.kind" in started
                or "gen_ai.system" in started
                or "gen_ai.provider.name" in started
            ):
                self._wrappers.append((bag, span))  # an LLM-scope span whose kind is set at its end
            elif self._wrappers and (outer is None or outer != self._last_claimer):
                self._claim_wrapper(span, started, bag, outer)
            # No lock for the direct write: on_start runs inside start_span, before the
            # span is handed to any code that could touch it from another thread.
            if len(started) + len(values) <= room and started.keys().isdisjoint(values):
                started.update(values)
            else:
                _stamp(span, values)
        except Exception:  # never break the application because of telemetry
            logger.debug("otel_usecase: could not stamp span", exc_info=True)

    def _stamp_general(self, span: Span, parent_context: Context | None) -> None:
        """``on_start`` for any span type and for ``spans="all"``: the same steps through public reads."""
        ctx = parent_context if parent_context is not None else _current_context()
        values = self._values(ctx.get(BAGGAGE_KEY), ctx)
        if not values:
            return
        parent = ctx.get(_SPAN_KEY)
        outer = self._outer_call_span_id(span, parent) if parent is not None else None
        if outer is not None:
            values = {**values, attr.CALL_SPAN_ID: outer}
        if self._is_llm(span):
            started = _attributes_of(span)
            if not any(key in started for key in CALL_MARK_KEYS):
                self._wrappers.append((ctx.get(BAGGAGE_KEY), span))
            elif self._wrappers and (outer is None or outer != self._last_claimer):
                self._claim_wrapper(span, started, ctx.get(BAGGAGE_KEY), outer)
        _stamp(span, values)

    def _room(self, scope: object, span: object) -> int:
        """The room of ``scope`` (see ``_rooms``); remembers the last scope whose spans are not LLM spans."""
        room = self._rooms.get(id(scope))
        if room is None:
            room = self._remember_scope(scope, span)
        if not room and not self._all_spans:
            # A strong reference: its identity cannot be reused while it is held here.
            self._plain_scope = scope
        return room

    def _remember_scope(self, scope: object, span: object) -> int:
        """Decide once per instrumentation scope whether its spans are LLM spans, and their room.

        Keyed by the scope object's identity (hashing an InstrumentationScope builds a
        tuple); the scope is kept alive in ``_scopes_seen`` so its id is not reused. The
        direct write needs the SDK's attribute map with no value-length limit (values
        would have to be truncated) and room for our keys (else the SDK evicts).
        """
        room = 0
        if (getattr(scope, "name", None) or "").startswith(LLM_SCOPE_PREFIXES):
            attributes = getattr(span, "_attributes", None)
            if type(attributes) is BoundedAttributes and attributes.max_value_len is None:
                room = sys.maxsize if attributes.maxlen is None else attributes.maxlen
            else:
                room = -1
        if len(self._rooms) >= _MAX_CACHED_SCOPES:
            self._rooms = {}
            self._scopes_seen = []
        self._scopes_seen.append(scope)
        self._rooms[id(scope)] = room
        return room

    def _is_llm(self, span: ReadableSpan) -> bool:
        """Whether ``span`` is an LLM span (the test ``on_start`` makes inline), for any span type."""
        scope = getattr(span, "_instrumentation_scope", _MISSING)
        if scope is _MISSING:
            scope = span.instrumentation_scope
        if self._room(scope, span):
            return True
        started_with = _attributes_of(span)
        for key in LLM_START_ATTRIBUTES:
            if key in started_with:
                return True
        return False

    def _outer_call_span_id(self, span: Span, parent: object) -> str | None:
        """The outermost same-request span's id when this span is nested in ``parent``, the same request.

        ``parent`` is the same request only when both are model-request spans of the
        same class (:func:`~otel_usecase.cost.operations.same_request`): two
        instrumentations of one call. Under a chain, agent, tool or workflow span
        every call is its own.
        """
        if not isinstance(parent, ReadableSpan):
            return None
        parent_attributes = _attributes_of(parent)
        if not same_request(parent_attributes, _attributes_of(span)):
            return None
        outer = parent_attributes.get(attr.CALL_SPAN_ID)
        if isinstance(outer, str):
            return outer
        parent_context = parent.get_span_context()
        return None if parent_context is None else format(parent_context.span_id, "016x")

    def _claim_wrapper(
        self, span: Span, started: Mapping[str, object], bag: object, outer: str | None
    ) -> None:
        """Mark the framework span this client span's request runs inside as its duplicate.

        OpenInference LangChain's spans carry nothing at start (their kind is set at
        the end) and are never made current, so the OpenAI client's span of the same
        request is not their child. When a model-request span starts, the latest
        still-open such span of the same scope (the same baggage dict) is the
        LangChain model run that sent it: it gets ``usecase.call.duplicate_of`` and
        the request is counted once, from the client's span. Sequential calls pair
        exactly; concurrent LangChain calls in one scope may pair with another
        call's span, which can count a request twice. Runs only once such spans
        were seen, and once per request: the request's outermost span (``outer``,
        None when ``span`` is it) claims; an inner span only when the outer one was
        not seen here (``_last_claimer``).
        """
        if call_class(started) is None:
            return
        own = span.get_span_context()
        if own is None:
            return
        self._last_claimer = outer if outer is not None else format(own.span_id, "016x")
        for entry in reversed(list(self._wrappers)):
            wrapper = entry[1]
            if entry[0] is not bag or getattr(wrapper, "end_time", None) is not None:
                continue
            try:
                self._wrappers.remove(entry)
            except ValueError:  # claimed by another thread
                continue
            if isinstance(wrapper, Span) and wrapper.is_recording():
                wrapper.set_attribute(attr.CALL_DUPLICATE_OF, format(own.span_id, "016x"))
            return

    def _values(self, bag: object, ctx: Context) -> dict[str, str]:
        """What to stamp on an LLM span started in ``ctx``, whose baggage is ``bag``.

        The scope's values as ``track_context`` wrote them in this process (valid as
        they are), else those of baggage from elsewhere, validated once per baggage
        dict; then the default use case when no scope names one.
        """
        entry = ctx.get(_scope.SCOPE_KEY)
        if type(entry) is tuple and entry[1] is bag:
            values: dict[str, str] = entry[2]
        elif not bag:
            values = {}
        else:
            last = self._last
            if last[0] is bag:
                values = last[1]
            else:
                values = _clean(bag) if isinstance(bag, Mapping) else {}
                self._last = (bag, values)
        default = _scope._default_attributes
        if default is not None and attr.USE_CASE_NAME not in values:
            values = {**default, **values}
        return values

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _attributes_of(span: ReadableSpan) -> Mapping[str, object]:
    """The span's attributes without the copy-free proxy the public property allocates."""
    attributes = getattr(span, "_attributes", None)
    if type(attributes) is BoundedAttributes:
        return attributes._dict
    return span.attributes or {}


def _stamp(span: Span, values: Mapping[str, str]) -> None:
    """Set ``values`` on ``span`` except keys it already has.

    The public ``set_attributes`` validates and cleans every value and takes two
    locks: about 1 us per attribute, on every LLM span. Our values are strings
    validated once per baggage dict, so when the span's attribute map has room
    for all of them (no eviction, no truncation) they are written into it
    directly; otherwise the public API does the work. No lock is needed for the
    direct write: ``on_start`` runs inside ``start_span``, before the span is
    handed to any code that could touch it from another thread.
    """
    attributes = getattr(span, "_attributes", None)
    if (
        type(attributes) is BoundedAttributes
        and not attributes._immutable
        and (attributes.maxlen is None or len(attributes._dict) + len(values) <= attributes.maxlen)
        and (attributes.max_value_len is None or max(map(len, values.values())) <= attributes.max_value_len)
    ):
        target = attributes._dict
        if target.keys().isdisjoint(values):
            target.update(values)
        else:  # never overwrite what the instrumentation set
            target.update({k: v for k, v in values.items() if k not in target})
        return
    existing = span.attributes or {}
    span.set_attributes({k: v for k, v in values.items() if k not in existing})


def _clean(bag: Mapping[str, object]) -> dict[str, str]:
    found = _scope._inbound_scope(bag)
    return found.span_attributes() if found is not None else {}


def _has_processor(provider: object) -> bool:
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", ())
    return any(isinstance(p, UseCaseSpanProcessor) for p in processors)


def add_to_global_provider() -> UseCaseSpanProcessor | None:
    """Add the processor to the global SDK ``TracerProvider`` once.

    This is the ``opentelemetry_post_instrument`` entry point, so that installing
    the package is all ``opentelemetry-instrument`` users need. It does nothing
    (with a debug log) when ``OTEL_USECASE_ENABLED=false``, when the global
    provider is not an SDK provider, or when a ``UseCaseSpanProcessor`` is already
    there. It never raises: a failure here must not stop the application.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        if not config.env_bool(config.ENV_ENABLED, True):
            logger.debug("otel_usecase: %s=false, not adding the span processor", config.ENV_ENABLED)
            return None
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            logger.debug(
                "otel_usecase: the global tracer provider is %s, not an SDK TracerProvider; "
                "not adding the span processor",
                type(provider).__name__,
            )
            return None
        from .scope.threads import enable_from_env

        enable_from_env()  # threads and pools inherit the scope unless OTEL_USECASE_THREAD_CONTEXT=false
        if _has_processor(provider):
            logger.debug("otel_usecase: UseCaseSpanProcessor already on the tracer provider")
            return None
        processor = UseCaseSpanProcessor()
        provider.add_span_processor(processor)
        logger.debug("otel_usecase: added UseCaseSpanProcessor(spans=%r)", processor.spans)
        return processor
    except Exception as exc:
        warn_rate_limited("post_instrument", "otel_usecase: could not add the span processor: %s", exc)
        return None
