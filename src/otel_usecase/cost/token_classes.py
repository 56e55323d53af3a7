"""The token classes a provider bills: one table, from which everything else is derived.

Why this exists: a call's cost depends on more than input and output tokens
(cache reads and writes, a 1-hour cache write, reasoning, audio, image and video
tokens are each billed at their own rate where the provider has one), and each
instrumentation spells them its own way. Listing them once, here, the way
genai-prices' ``data_units.py`` lists its units, keeps the span readers
(:mod:`otel_usecase.cost.usage`), the prices (:mod:`otel_usecase.cost.prices`),
the ledger columns (:mod:`otel_usecase.store.base`), the report columns and the
collector's OTTL in step: adding a class is one row here plus its tests.

Each row says:

* ``name``: the class, and the ledger column ``<name>_tokens``.
* ``usage_key``: genai-prices' usage key. What the class is *included in* (the
  inclusive meaning :class:`~otel_usecase.cost.usage.LLMUsage` uses: OpenAI's
  prompt count includes cached and audio tokens) is derived from genai-prices'
  unit dimensions (:data:`INCLUDED_IN`), not written by hand, so the pricing
  decomposition and ours cannot disagree.
* ``span_keys``: the span attributes that carry the count, first present wins,
  in every convention the readers know (GenAI semconv and its older spellings,
  ``opentelemetry-util-genai``'s per-modality keys, Traceloop, OpenInference).
* ``needs_own_price``: whether tokens of this class may be priced at the rate of
  the class they are included in when a model lists no rate of their own.
  Audio and generated images/video cost several times text where they are
  billed; priced as text they would be a silent under-count, so a call that has
  them and a model without their rate is ``unpriced`` (reason ``unknown token
  class audio``). Image and video *input* are billed as text input by the
  providers that list no separate rate (OpenAI's chat models, Gemini), so they
  fall back.
* ``token_type``: the ``gen_ai.token.type`` value used for this class in metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

__all__ = [
    "BY_NAME",
    "COLUMNS",
    "INCLUDED_IN",
    "INPUT",
    "NOT_ON_SPANS",
    "OUTPUT",
    "SPAN_KEYS",
    "TOKEN_CLASSES",
    "TokenClass",
    "markdown_table",
    "unknown_class_reason",
    "unpriceable",
]


@dataclass(frozen=True, slots=True)
class TokenClass:
    """One billed token class; see the module docstring for each field."""

    name: str
    usage_key: str
    span_keys: tuple[str, ...]
    token_type: str
    needs_own_price: bool = False
    label: str = ""
    """How a reason names the class (``unknown token class audio``); default: the name."""
    doc: str = ""

    @property
    def column(self) -> str:
        """The ledger column holding this class's count."""
        return f"{self.name}_tokens"

    @property
    def price_key(self) -> str:
        """genai-prices' price key for this class (``input_audio_mtok`` ...)."""
        return str(_unit_data()[self.usage_key]["price_key"])

    @property
    def reason_label(self) -> str:
        return self.label or self.name.replace("_", " ")


TOKEN_CLASSES: Final[tuple[TokenClass, ...]] = (
    TokenClass(
        "input",
        "input_tokens",
        (
            "gen_ai.usage.input_tokens",  # GenAI semconv; Traceloop 0.62; -openai-v2; util-genai
            "gen_ai.usage.prompt_tokens",  # older semconv; Traceloop up to ~0.4x
            "llm.token_count.prompt",  # OpenInference
            "llm.usage.prompt_tokens",  # earliest OpenLLMetry
        ),
        "input",
        doc="Every input token, cached, audio and image tokens included.",
    ),
    TokenClass(
        "output",
        "output_tokens",
        (
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
            "llm.usage.completion_tokens",
        ),
        "output",
        doc="Every output token, reasoning and audio tokens included.",
    ),
    TokenClass(
        "cache_read",
        "cache_read_tokens",
        (
            "gen_ai.usage.cache_read.input_tokens",  # semconv; Traceloop 0.62
            "gen_ai.usage.cache_read_input_tokens",  # Traceloop semconv_ai < 0.5
            "llm.token_count.prompt_details.cache_read",  # OpenInference
        ),
        "cache_read",
        doc="Input tokens read from the provider's prompt cache (OpenAI cached_tokens).",
    ),
    TokenClass(
        "cache_write",
        "cache_write_tokens",
        (
            "gen_ai.usage.cache_creation.input_tokens",  # semconv; Traceloop 0.62
            "gen_ai.usage.cache_write.input_tokens",  # opentelemetry-util-genai 1.3b0
            "gen_ai.usage.cache_creation_input_tokens",  # older Traceloop
            "llm.token_count.prompt_details.cache_write",  # OpenInference
        ),
        "cache_write",
        doc="Input tokens written to the prompt cache (Anthropic's 5-minute rate unless split below).",
    ),
    TokenClass(
        "reasoning",
        "output_reasoning_tokens",
        (
            "gen_ai.usage.reasoning.output_tokens",  # semconv
            "gen_ai.usage.reasoning_tokens",  # Traceloop openai 0.62
            "llm.usage.reasoning_tokens",  # Traceloop semconv_ai < 0.5
            "llm.token_count.completion_details.reasoning",  # OpenInference
        ),
        "reasoning",
        doc="Output tokens spent reasoning (priced as output unless the model lists a reasoning rate).",
    ),
    TokenClass(
        "cache_write_1h",
        "cache_write_1h_tokens",
        (
            "gen_ai.usage.cache_creation.ephemeral_1h_input_tokens",  # Anthropic usage.cache_creation
            "llm.token_count.prompt_details.cache_write_1h",
        ),
        "cache_write_1h",
        label="1-hour cache write",
        doc="The part of the cache writes made with Anthropic's 1-hour TTL (2x input, not 1.25x).",
    ),
    TokenClass(
        "input_audio",
        "input_audio_tokens",
        (
            "gen_ai.usage.audio.input_tokens",  # opentelemetry-util-genai
            "llm.token_count.prompt_details.audio",  # OpenInference
        ),
        "input_audio",
        needs_own_price=True,
        label="audio",
        doc="Input tokens of audio (OpenAI prompt_tokens_details.audio_tokens).",
    ),
    TokenClass(
        "cache_audio_read",
        "cache_audio_read_tokens",
        ("gen_ai.usage.audio.cache_read.input_tokens",),  # opentelemetry-util-genai
        "cache_audio_read",
        needs_own_price=True,
        label="cached audio",
        doc="Cached input tokens of audio (realtime models).",
    ),
    TokenClass(
        "output_audio",
        "output_audio_tokens",
        (
            "gen_ai.usage.audio.output_tokens",  # opentelemetry-util-genai
            "llm.token_count.completion_details.audio",  # OpenInference
        ),
        "output_audio",
        needs_own_price=True,
        label="audio",
        doc="Output tokens of audio (OpenAI completion_tokens_details.audio_tokens).",
    ),
    TokenClass(
        "input_image",
        "input_image_tokens",
        (
            "gen_ai.usage.image.input_tokens",  # opentelemetry-util-genai
            "llm.token_count.prompt_details.image",
        ),
        "input_image",
        label="image",
        doc="Input tokens of images (priced as input where the model lists no image rate).",
    ),
    TokenClass(
        "cache_image_read",
        "cache_image_read_tokens",
        ("gen_ai.usage.image.cache_read.input_tokens",),  # opentelemetry-util-genai
        "cache_image_read",
        label="cached image",
        doc="Cached input tokens of images.",
    ),
    TokenClass(
        "output_image",
        "output_image_tokens",
        (
            "gen_ai.usage.image.output_tokens",  # opentelemetry-util-genai
            "llm.token_count.completion_details.image",
        ),
        "output_image",
        needs_own_price=True,
        label="image output",
        doc="Generated image tokens (gpt-image-1, Gemini image models).",
    ),
    TokenClass(
        "input_video",
        "input_video_tokens",
        ("gen_ai.usage.video.input_tokens", "llm.token_count.prompt_details.video"),
        "input_video",
        label="video",
        doc="Input tokens of video (Gemini; priced as input where the model lists no video rate).",
    ),
    TokenClass(
        "output_video",
        "output_video_tokens",
        ("gen_ai.usage.video.output_tokens", "llm.token_count.completion_details.video"),
        "output_video",
        needs_own_price=True,
        label="video output",
        doc="Generated video tokens.",
    ),
)
"""Every token class, in ledger column order. The first five are the ledger's original columns."""

INPUT: Final = TOKEN_CLASSES[0]
OUTPUT: Final = TOKEN_CLASSES[1]
BY_NAME: Final[Mapping[str, TokenClass]] = {c.name: c for c in TOKEN_CLASSES}
COLUMNS: Final[tuple[str, ...]] = tuple(c.column for c in TOKEN_CLASSES)
"""The ledger's token columns, in table order."""
SPAN_KEYS: Final[frozenset[str]] = frozenset(key for c in TOKEN_CLASSES for key in c.span_keys)
"""Every span attribute that carries a token count."""


def _unit_data() -> Any:
    """genai-prices' unit table, imported on first use.

    Importing ``genai_prices`` loads its whole price data; the stores and the
    ``report`` command read this module (the ledger's columns) and must not pay
    for that, so only the price key and the inclusion below reach for it.
    """
    from genai_prices.data_units import unit_data

    return unit_data


@cache
def _included_in() -> dict[str, tuple[str, ...]]:
    """For each class, the classes whose counts include it (genai-prices: dimensions a strict subset)."""
    units = _unit_data()
    dims = {c.name: frozenset(units[c.usage_key]["dimensions"].items()) for c in TOKEN_CLASSES}
    return {
        c.name: tuple(o.name for o in TOKEN_CLASSES if o is not c and dims[o.name] < dims[c.name])
        for c in TOKEN_CLASSES
    }


class _IncludedIn(Mapping[str, tuple[str, ...]]):
    """:data:`INCLUDED_IN`, derived from genai-prices' units on first use (see :func:`_unit_data`)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return _included_in()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_included_in())

    def __len__(self) -> int:
        return len(TOKEN_CLASSES)


INCLUDED_IN: Final[Mapping[str, tuple[str, ...]]] = _IncludedIn()
"""``cache_read`` -> ``("input",)``, ``cache_audio_read`` -> ``("input", "cache_read", "input_audio")`` ..."""


NOT_ON_SPANS: Final[Mapping[str, str]] = {
    "output_citation_mtok": "no instrumentation records citation tokens (Perplexity's sonar-deep-research)",
    "input_text_messages_kcount": "a per-message price, not a token class",
}
"""Token-like price keys the installed genai-prices data uses that no row carries, and why.

``tests/test_token_classes.py`` fails when genai-prices starts pricing a token
class that is neither a row nor listed here, so a new billed class gets a row."""


def markdown_table() -> str:
    """The README's token-class table, generated from :data:`TOKEN_CLASSES`."""
    lines = [
        "| class (ledger column) | included in | own price needed | genai-prices price | span keys, first present wins |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in TOKEN_CLASSES:
        included = ", ".join(INCLUDED_IN[c.name]) or "-"
        keys = ", ".join(f"`{key}`" for key in c.span_keys)
        own = "yes" if c.needs_own_price else "no"
        lines.append(f"| `{c.column}` | {included} | {own} | `{c.price_key}` | {keys} |")
    return "\n".join(lines)


def unpriceable(priced: Iterable[str]) -> tuple[TokenClass, ...]:
    """The classes a model with rates for the classes named ``priced`` cannot price.

    A class with ``needs_own_price`` is priceable when the model has a rate for it,
    or for a class it is part of that needs its own price too (cached audio tokens
    at the audio input rate); otherwise its tokens would be priced at the text rate
    of ``input`` or ``output``, a silent under-count. The one rule for the cost
    engine (:mod:`otel_usecase.cost.rates`) and the collector's OTTL.
    """
    names = set(priced)
    return tuple(
        c
        for c in TOKEN_CLASSES
        if c.needs_own_price
        and c.name not in names
        and not any(BY_NAME[parent].needs_own_price and parent in names for parent in INCLUDED_IN[c.name])
    )


def unknown_class_reason(token_class: TokenClass) -> str:
    """The unpriced reason of a call with tokens of ``token_class`` its model has no rate for."""
    return f"unknown token class {token_class.reason_label}"
