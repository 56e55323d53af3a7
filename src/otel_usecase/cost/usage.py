"""Token usage of one LLM span, read from whichever convention wrote it.

Why this exists: pricing needs four numbers (input, output, cached, reasoning
tokens) but the instrumentations in the wild spell them in at least three
conventions, with two meanings of "input tokens". This module turns any of them
into one :class:`LLMUsage` with a single meaning, so the pricing code never
has to know who instrumented the call.

The meaning of :class:`LLMUsage` (OpenAI's, and the GenAI semantic conventions'):

* ``input_tokens`` counts *every* input token, cache reads and cache writes
  included; ``cache_read_tokens`` and ``cache_write_tokens`` are parts of it.
* ``output_tokens`` counts *every* output token, reasoning included;
  ``reasoning_tokens`` is a part of it.

Each token is counted once: a price engine subtracts the parts from the whole to
price them at their own rate.

Attributes read, first present key wins (sources checked)
---------------------------------------------------------
Input tokens
    ``gen_ai.usage.input_tokens`` (GenAI semconv; Traceloop
    ``opentelemetry-instrumentation-openai`` 0.62 and ``-anthropic`` 0.62;
    ``opentelemetry-instrumentation-openai-v2`` 2.4b0),
    ``gen_ai.usage.prompt_tokens`` (older semconv; Traceloop up to ~0.4x),
    ``llm.token_count.prompt`` (OpenInference), ``llm.usage.prompt_tokens``
    (earliest OpenLLMetry).
Output tokens
    ``gen_ai.usage.output_tokens``, ``gen_ai.usage.completion_tokens``,
    ``llm.token_count.completion``, ``llm.usage.completion_tokens``.
Cache reads
    ``gen_ai.usage.cache_read.input_tokens`` (semconv; Traceloop 0.62),
    ``gen_ai.usage.cache_read_input_tokens`` (Traceloop ``semconv_ai`` < 0.5,
    e.g. Traceloop anthropic 0.40), ``llm.token_count.prompt_details.cache_read``
    (OpenInference).
Cache writes
    ``gen_ai.usage.cache_creation.input_tokens`` (semconv; Traceloop 0.62),
    ``gen_ai.usage.cache_write.input_tokens`` (``opentelemetry-util-genai``
    1.3b0), ``gen_ai.usage.cache_creation_input_tokens`` (older Traceloop),
    ``llm.token_count.prompt_details.cache_write`` (OpenInference).
Reasoning
    ``gen_ai.usage.reasoning.output_tokens`` (semconv),
    ``gen_ai.usage.reasoning_tokens`` (Traceloop openai 0.62, chat and Responses
    API), ``llm.usage.reasoning_tokens`` (Traceloop ``semconv_ai`` < 0.5),
    ``llm.token_count.completion_details.reasoning`` (OpenInference).
Total (only used to tell the two meanings of input apart)
    ``gen_ai.usage.total_tokens`` (Traceloop), ``llm.usage.total_tokens``,
    ``llm.token_count.total`` (OpenInference).
Model
    ``gen_ai.response.model``, else ``gen_ai.request.model``, else
    ``llm.model_name`` (OpenInference). The response model is preferred: it is
    the dated snapshot that was billed, and on Azure the request model is only
    the deployment name.
Provider
    ``gen_ai.provider.name`` (semconv; Traceloop 0.62 writes it, e.g.
    ``openai``, ``azure.ai.openai``, ``aws.bedrock``, ``gcp.vertex_ai``,
    ``openrouter``, ``anthropic``), else ``gen_ai.system`` (older semconv;
    Traceloop ``semconv_ai`` ``GenAISystem`` values such as ``az.ai.openai``,
    ``gcp.gen_ai``, ``mistral_ai``), else ``llm.provider`` / ``llm.system``
    (OpenInference: ``openai``, ``azure``, ``aws``, ``google``, ``mistralai``,
    ``xai`` ...). Lower-cased, otherwise raw: mapping to a price source's
    provider is the pricing module's job.

What "input tokens" means per source
------------------------------------
* OpenAI API: ``prompt_tokens`` / ``input_tokens`` include
  ``cached_tokens``; ``completion_tokens`` include ``reasoning_tokens``. Both
  OpenAI instrumentations copy them unchanged.
* Anthropic API: ``usage.input_tokens`` *excludes* ``cache_read_input_tokens``
  and ``cache_creation_input_tokens``. But the instrumentations add them back:
  Traceloop ``opentelemetry-instrumentation-anthropic`` 0.62.4
  (``__init__._set_token_usage`` and ``streaming._set_token_usage``) writes
  ``gen_ai.usage.input_tokens = input_tokens + cache_read + cache_creation``
  (its ``span_utils.set_response_attributes`` first writes the raw value, then
  ``_set_token_usage`` overwrites it); 0.40.0 did the same into
  ``gen_ai.usage.prompt_tokens``; 0.25/0.33 wrote the raw value but no cache
  attributes at all. OpenInference ``openinference-instrumentation-anthropic``
  3.1.0 (``_utils._get_token_counts``) and 1.0.0 write
  ``llm.token_count.prompt = input + cache_creation + cache_read``; 0.1.18 did
  so too except when streaming, where it wrote the raw value without cache
  attributes. Thinking tokens are part of ``output_tokens`` there.
* AWS Bedrock Converse: ``inputTokens`` excludes ``cacheReadInputTokens`` and
  ``cacheWriteInputTokens``; ``totalTokens`` is the sum of all of them.

So the inclusive meaning is the norm, and :func:`read_usage` only changes the
numbers when they cannot be inclusive:

1. ``input < cache_read + cache_write`` (impossible if inclusive): the cached
   parts are added to ``input_tokens``. Likewise ``output < reasoning`` adds
   the reasoning tokens to ``output_tokens`` (Gemini's ``candidates`` count
   excludes ``thoughts``).
2. A reported total that equals input + output only once the cached (or
   reasoning) parts are added: they are added. A total that matches neither
   reading (Gemini's includes tool-use prompt tokens) changes nothing.

Bad values (negative, non-numeric, fractional, booleans, above
:data:`MAX_TOKEN_COUNT`) are dropped with a rate-limited warning naming the key
and the value, never raised: this runs in the export path of the application's
telemetry. A count is read the same whether it arrives as an int or as text.

A usage that could not be read in full is *incomplete* (``complete=False``): the
input count is missing or unreadable while the output count is known (every
model request has input tokens), or an output key is present but unreadable.
Its price is then only a lower bound, and the ledger says so (status
``partial``). A missing output count alone is not incomplete: embeddings have none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from .._log import warn_rate_limited
from .call import TokenCounts
from .token_classes import BY_NAME, INPUT, OUTPUT, SPAN_KEYS, TOKEN_CLASSES

__all__ = [
    "CACHE_READ_KEYS",
    "CACHE_WRITE_KEYS",
    "INPUT_KEYS",
    "MAX_TOKEN_COUNT",
    "MODEL_KEYS",
    "OUTPUT_KEYS",
    "READ_KEYS",
    "REASONING_KEYS",
    "TOTAL_KEYS",
    "LLMUsage",
    "is_llm_usage_span",
    "read_usage",
]

_RESPONSE_MODEL: Final = "gen_ai.response.model"
_REQUEST_MODEL: Final = "gen_ai.request.model"
_OI_MODEL: Final = "llm.model_name"
_PROVIDER_NAME: Final = "gen_ai.provider.name"
_SYSTEM: Final = "gen_ai.system"
_OI_PROVIDER: Final = "llm.provider"
_OI_SYSTEM: Final = "llm.system"
_OPERATION: Final = "gen_ai.operation.name"
_TRACELOOP_REQUEST_TYPE: Final = "llm.request.type"

INPUT_KEYS: Final = BY_NAME["input"].span_keys
OUTPUT_KEYS: Final = BY_NAME["output"].span_keys
CACHE_READ_KEYS: Final = BY_NAME["cache_read"].span_keys
CACHE_WRITE_KEYS: Final = BY_NAME["cache_write"].span_keys
REASONING_KEYS: Final = BY_NAME["reasoning"].span_keys
TOTAL_KEYS: Final = (
    "gen_ai.usage.total_tokens",
    "llm.usage.total_tokens",
    "llm.token_count.total",
)
_USAGE_KEYS: Final = INPUT_KEYS + OUTPUT_KEYS
MODEL_KEYS: Final = (_RESPONSE_MODEL, _REQUEST_MODEL, _OI_MODEL)
"""Where the model name is read, first present wins."""

READ_KEYS: Final[frozenset[str]] = frozenset(
    (
        _RESPONSE_MODEL,
        _REQUEST_MODEL,
        _OI_MODEL,
        _PROVIDER_NAME,
        _SYSTEM,
        _OI_PROVIDER,
        _OI_SYSTEM,
        _OPERATION,
        _TRACELOOP_REQUEST_TYPE,
        *SPAN_KEYS,
        *TOTAL_KEYS,
    )
)
"""Every attribute :func:`read_usage` looks at (a receiver decodes only what is read)."""


class LLMUsage(NamedTuple):
    """The usage of one LLM call, in OpenAI's meaning (see the module docstring).

    A named tuple because one is built for every LLM span the exporter sees.

    ``tokens`` maps token-class names (:mod:`otel_usecase.cost.token_classes`) to
    counts, present classes only. A missing ``input`` or ``output`` means
    *unknown*, not zero: an unknown call is stored as unpriced rather than priced
    at $0. A missing part (cache, reasoning, audio ...) is 0: most calls have
    none and its absence changes no price. ``complete`` is False when a count the
    call must have could not be read (see the module docstring): a price computed
    from it is a lower bound.
    """

    model: str | None
    provider: str | None
    tokens: TokenCounts
    operation: str | None = None
    complete: bool = True

    @property
    def input_tokens(self) -> int | None:
        return self.tokens.get("input")

    @property
    def output_tokens(self) -> int | None:
        return self.tokens.get("output")

    def count(self, name: str) -> int:
        """The count of token class ``name``, 0 when absent (also for an unknown input/output)."""
        return self.tokens.get(name) or 0

    @property
    def has_usage(self) -> bool:
        """True when the input or the output token count is known."""
        tokens = self.tokens
        return "input" in tokens or "output" in tokens


def is_llm_usage_span(attributes: Mapping[str, Any]) -> bool:
    """True when the attributes carry an input or output token count.

    A cheap pre-check (key membership only, no parsing) so that exporters can
    skip the many spans that are not LLM calls (HTTP, DB, ...) before reading.
    """
    for key in _USAGE_KEYS:
        if key in attributes:
            return True
    return False


_INPUT: Final = INPUT_KEYS[0]
_OUTPUT: Final = OUTPUT_KEYS[0]
_new_tuple: Final = tuple.__new__
_PART_CLASSES: Final = tuple(c for c in TOKEN_CLASSES if c is not INPUT and c is not OUTPUT)
_DETAIL_KEYS: Final = frozenset(key for c in _PART_CLASSES for key in c.span_keys)
_CLASS_OF_KEY: Final = {key: c.name for c in _PART_CLASSES for key in c.span_keys}


def read_usage(attributes: Mapping[str, Any]) -> LLMUsage:
    """Read one span's token usage, whichever convention wrote it.

    Never raises on bad data: a bad value is treated as missing and reported by
    a rate-limited warning. See the module docstring for the keys and the
    normalisation of cached and reasoning tokens.
    """
    get = attributes.get
    model = _text(get(_RESPONSE_MODEL)) or _text(get(_REQUEST_MODEL)) or _text(get(_OI_MODEL))
    provider = (
        _text(get(_PROVIDER_NAME))
        or _text(get(_SYSTEM))
        or _text(get(_OI_PROVIDER))
        or _text(get(_OI_SYSTEM))
    )
    operation = _text(get(_OPERATION)) or _text(get(_TRACELOOP_REQUEST_TYPE))

    # The first key of each list is what current instrumentations write, as an int:
    # that case is tested inline (this runs once per LLM span), the rest in _first_count.
    input_tokens = get(_INPUT)
    if type(input_tokens) is not int or not 0 <= input_tokens <= MAX_TOKEN_COUNT:
        input_tokens = _first_count(attributes, INPUT_KEYS)
    output_tokens = get(_OUTPUT)
    if type(output_tokens) is not int or not 0 <= output_tokens <= MAX_TOKEN_COUNT:
        output_tokens = _first_count(attributes, OUTPUT_KEYS)
    complete = True
    if input_tokens is None:
        complete = output_tokens is None  # a request without input tokens: the count was lost
    elif output_tokens is None:
        complete = not _any_present(attributes, OUTPUT_KEYS)  # none (embeddings), or unreadable
    tokens: dict[str, int] = {}
    if input_tokens is not None:
        tokens["input"] = input_tokens
    if output_tokens is not None:
        tokens["output"] = output_tokens
    if not _DETAIL_KEYS.isdisjoint(attributes):  # most spans: no part counts at all (one C call)
        _read_parts(attributes, tokens, _DETAIL_KEYS.intersection(attributes))
    # tuple.__new__ skips the Python-level __new__ NamedTuple generates (a frame, 5 arguments).
    return _new_tuple(
        LLMUsage, (model, provider.lower() if provider is not None else None, tokens, operation, complete)
    )


def _read_parts(attributes: Mapping[str, Any], tokens: dict[str, int], present: frozenset[str]) -> None:
    """Add the part counts (cache, reasoning, audio ...) to ``tokens``, and make input/output inclusive."""
    input_tokens = tokens.get("input")
    output_tokens = tokens.get("output")
    # Only the classes one of whose keys the span has (``present``), not all thirteen.
    for name in {_CLASS_OF_KEY[key] for key in present}:
        count = _first_count(attributes, BY_NAME[name].span_keys)
        if count:
            tokens[name] = count
    cache_read = tokens.get("cache_read", 0)
    cache_write = tokens.get("cache_write", 0)
    reasoning = tokens.get("reasoning", 0)

    cached = cache_read + cache_write
    input_fixed = False
    output_fixed = False
    if input_tokens is not None and input_tokens < cached:
        input_tokens += cached
        input_fixed = True
    if output_tokens is not None and output_tokens < reasoning:
        output_tokens += reasoning
        output_fixed = True
    if (cached or reasoning) and input_tokens is not None and output_tokens is not None:
        total = _first_count(attributes, TOTAL_KEYS)
        if total is not None and total != input_tokens + output_tokens:
            add_in = cached if not input_fixed else 0
            add_out = reasoning if not output_fixed else 0
            base = input_tokens + output_tokens
            if add_in and total == base + add_in:
                input_tokens += add_in
            elif add_out and total == base + add_out:
                output_tokens += add_out
            elif add_in and add_out and total == base + add_in + add_out:
                input_tokens += add_in
                output_tokens += add_out
    if input_tokens is not None:
        tokens["input"] = input_tokens
    if output_tokens is not None:
        tokens["output"] = output_tokens


def _text(value: object) -> str | None:
    """A non-empty string attribute, else None (an empty model name names nothing)."""
    if type(value) is str:
        value = value.strip()
        return value or None
    return None


def _first_count(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first valid token count among ``keys``; bad values are skipped with a warning."""
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        count = _parse_count(value)
        if count is not None:
            return count
        warn_rate_limited(
            "usage:" + key,
            "otel-usecase: ignoring %s=%s on an LLM span: not a whole token count from 0 to %s",
            key,
            _shown(value),
            MAX_TOKEN_COUNT,
        )
    return None


def _any_present(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    """Whether any of ``keys`` has a value (read or not)."""
    for key in keys:
        if attributes.get(key) is not None:
            return True
    return False


MAX_TOKEN_COUNT: Final = 10**12
"""Larger counts are not a real call: treated as unreadable, as int or as text (they would also overflow the ledger)."""

_SHOWN_CHARS: Final = 80


def _shown(value: object) -> str:
    """``repr(value)`` for a log line, bounded: a huge int's repr can raise (PEP 651 digit limit)."""
    if type(value) is int and value.bit_length() > 256:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a repr that raises must not stop the warning
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...(" + str(len(text)) + " chars)"


def _parse_count(value: object) -> int | None:
    """A token count from what OTLP/JSON and careless instrumentations produce: ints, whole floats, numeric text.

    One rule for every form, so that ``12`` and ``"12"`` (or ``2**63`` and
    ``"9223372036854775808"``) always read the same: a whole number from 0 to
    :data:`MAX_TOKEN_COUNT`. Booleans are never counts.
    """
    if type(value) is int:
        return value if 0 <= value <= MAX_TOKEN_COUNT else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):  # an int subclass (an IntEnum, numpy's are not)
        return _parse_count(int(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            return _parse_count(int(text))
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and 0 <= value <= MAX_TOKEN_COUNT
        and value.is_integer()
    ):
        return int(value)
    return None
