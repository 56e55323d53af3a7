"""The span processor that stamps use case, run, experience and user onto LLM spans.

It runs on every span the application starts, so ``on_start`` is built around a
fast exit: no baggage and no default use case means one dict lookup and return,
with nothing allocated and no lock taken. Only spans that pass the LLM test get
attributes, and the validated values of a baggage dict are cached by identity
(baggage dicts are never mutated; each change makes a new one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import INVALID_SPAN, set_span_in_context

from . import attributes as attr
from . import config
from . import scope as _scope
from ._baggage import BAGGAGE_KEY
from ._log import logger, warn_rate_limited

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
        self._llm_scope: dict[int, bool] = {}
        self._scopes_seen: list[object] = []
        self._last: tuple[object, dict[str, str]] = (None, {})
        _scope.load_default_from_env()

    @property
    def spans(self) -> str:
        """Which spans are stamped: ``"llm"`` or ``"all"``."""
        return "all" if self._all_spans else "llm"

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # The hot path of every span the application starts; 9 in 10 spans of a request
        # end at the LLM test. It reads the SDK span's fields directly and is written out
        # inline: a Python call or a getattr with a default costs about as much as the
        # test itself. Spans that are not SDK spans take the general path.
        try:
            ctx = parent_context if parent_context is not None else _current_context()
            bag = ctx.get(BAGGAGE_KEY)
            default = _scope._default_attributes
            if not bag and default is None:
                return
            if not self._all_spans:
                try:
                    scope = span._instrumentation_scope
                    started = span._attributes._dict  # type: ignore[union-attr]
                except AttributeError:
                    if not self._is_llm(span):
                        return
                else:
                    known = self._llm_scope.get(id(scope))
                    if known is None:
                        known = self._remember_scope(scope)
                    if not known and (
                        not started
                        or not (
                            "gen_ai.operation.name" in started
                            or "gen_ai.system" in started
                            or "gen_ai.provider.name" in started
                        )
                    ):
                        return
            values = self._values(bag, ctx) if bag else {}
            if default is not None and attr.USE_CASE_NAME not in values:
                values = {**default, **values}
            if not values:
                return
            outer = self._outer_llm_span_id(span, ctx)
            if outer is not None:
                values = {**values, attr.CALL_SPAN_ID: outer}
            _stamp(span, values)
        except Exception:  # never break the application because of telemetry
            logger.debug("otel_usecase: could not stamp span", exc_info=True)

    def _remember_scope(self, scope: object) -> bool:
        """Decide once per instrumentation scope whether its spans are LLM spans.

        Keyed by the scope object's identity (hashing an InstrumentationScope builds a
        tuple); the scope is kept alive in ``_scopes_seen`` so its id is not reused.
        """
        known = (getattr(scope, "name", None) or "").startswith(LLM_SCOPE_PREFIXES)
        if len(self._llm_scope) >= _MAX_CACHED_SCOPES:
            self._llm_scope = {}
            self._scopes_seen = []
        self._scopes_seen.append(scope)
        self._llm_scope[id(scope)] = known
        return known

    def _is_llm(self, span: ReadableSpan) -> bool:
        """Whether ``span`` is an LLM span (the test ``on_start`` makes inline), for any span type."""
        scope = getattr(span, "_instrumentation_scope", _MISSING)
        if scope is _MISSING:
            scope = span.instrumentation_scope
        known = self._llm_scope.get(id(scope))
        if known is None:
            known = self._remember_scope(scope)
        if known:
            return True
        started_with = _attributes_of(span)
        for key in LLM_START_ATTRIBUTES:
            if key in started_with:
                return True
        return False

    def _outer_llm_span_id(self, span: Span, ctx: Context) -> str | None:
        """The outermost LLM span's id when this LLM span is nested in one (two instrumentations)."""
        parent = ctx.get(_SPAN_KEY)
        if not isinstance(parent, ReadableSpan) or not self._is_llm(parent):
            return None
        if self._all_spans and not self._is_llm(span):
            return None
        outer = _attributes_of(parent).get(attr.CALL_SPAN_ID)
        if isinstance(outer, str):
            return outer
        parent_context = parent.get_span_context()
        return None if parent_context is None else format(parent_context.span_id, "016x")

    def _values(self, bag: object, ctx: Context) -> dict[str, str]:
        """Our values in ``bag``: as a local scope wrote them, else validated; cached per baggage dict."""
        last = self._last
        if last[0] is bag:
            return last[1]
        entry = ctx.get(_scope.SCOPE_KEY)
        if type(entry) is tuple and entry[1] is bag:
            values: dict[str, str] = entry[2]  # written by track_context in this process: valid
        else:
            values = _clean(bag) if isinstance(bag, Mapping) else {}
        self._last = (bag, values)
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
    for all of them (no eviction, no truncation) they are written under the
    span's lock directly; otherwise the public API does the work.
    """
    attributes = getattr(span, "_attributes", None)
    lock = getattr(span, "_lock", None)
    if (
        type(attributes) is BoundedAttributes
        and lock is not None
        and not attributes._immutable
        and (attributes.maxlen is None or len(attributes._dict) + len(values) <= attributes.maxlen)
        and (attributes.max_value_len is None or max(map(len, values.values())) <= attributes.max_value_len)
    ):
        target = attributes._dict
        with lock:
            if getattr(span, "_end_time", None) is None:
                for key in values:
                    if key in target:  # never overwrite what the instrumentation set
                        values = {k: v for k, v in values.items() if k not in target}
                        break
                target.update(values)
        return
    existing = span.attributes or {}
    span.set_attributes({k: v for k, v in values.items() if k not in existing})


def _clean(bag: Mapping[str, object]) -> dict[str, str]:
    found = _scope._inbound_scope(bag)
    return found.attributes() if found is not None else {}


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
