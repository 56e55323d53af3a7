"""What one LLM call cost, in USD: prices from genai-prices, overridable per model.

Why this exists: matching a model name to a price (``calc_price``) costs about a
hundred microseconds in genai-prices because it scans every provider's match
rules, and an exporter prices every LLM span. So :class:`PriceBook` resolves a
``(provider, model)`` pair once, keeps the matched prices in a bounded cache,
and then prices each call with a handful of Decimal multiplications. The figures
are the same as ``genai_prices.calc_price(...).total_price`` (the tests check it
over the whole bundled snapshot), including genai-prices' rules:

* ``input_tokens`` includes cache reads and writes; a part that has its own
  price (``cache_read_mtok``, ``cache_write_mtok``) is subtracted from the input
  tokens and priced at that rate, a part without one stays priced as input.
  Cache writes are priced at ``cache_write_mtok`` (the 5-minute rate for
  Anthropic): spans don't say which cache TTL was written.
* Reasoning tokens are part of the output tokens and priced as output, unless
  the model publishes a reasoning price (``output_reasoning_mtok``, e.g.
  Perplexity's sonar-deep-research).
* Tiered prices (Gemini, Claude with a long context) use genai-prices' cliff
  rule: once the *total* input tokens pass a tier's start, every token of every
  kind is priced at that tier.
* Per-request fees (``requests_kcount``, Perplexity) are added once per call.
* Prices that change on a date (``StartDateConstraint``) or by time of day
  (DeepSeek's off-peak hours) are picked for the time of the call.

Only token usage is priced: web searches, audio seconds, images and the like
are not on the spans this reads, so they count as zero.

Provider names
--------------
Spans name providers the GenAI-semconv way (``azure.ai.openai``,
``aws.bedrock``, ``gcp.vertex_ai`` ...); :func:`map_provider` turns them into
genai-prices provider ids (``azure``, ``aws``, ``google`` ...). An unknown or
missing provider, or a model its provider doesn't list (an OpenAI client aimed
at another vendor), falls back to genai-prices' guess from the model name, and
a ``provider/model`` name (LiteLLM, OpenRouter style) is tried as that provider's
model. Dated names (``gpt-4o-mini-2024-07-18``) match as genai-prices matches
them.

Overrides file
--------------
:class:`PriceBook` reads an optional TOML file (the ``overrides`` argument, else
the path in ``OTEL_USECASE_PRICES``; read and checked by :mod:`otel_usecase.cost.prices_file`:
a bad file given as an argument raises, one named by the env var is warned about
and not used), whose prices win over genai-prices::

    # USD per million tokens.
    [models."gpt-4o"]              # any provider
    input = 2.50                   # required
    output = 10.00                 # required
    cache_read = 1.25              # optional, default = input
    cache_write = 3.75             # optional, default = input

    [models."openai/gpt-4o-mini"]  # only when the provider is openai
    input = 0.15
    output = 0.60

    [models."llama-3.1-70b"]       # or name the provider with a key
    provider = "groq"
    input = 0.59
    output = 0.79

    [aliases]                      # names spans carry -> model names
    "my-gpt4o-prod" = "gpt-4o"     # e.g. an Azure deployment name

Model names match case-insensitively, exactly, or through genai-prices: an
override for ``gpt-4o`` also prices ``gpt-4o-2024-08-06``, which genai-prices
knows as ``gpt-4o``. A ``prefix/`` is read as a provider only when the prefix
is a provider name :func:`map_provider` knows; otherwise the whole key is the
model name. An alias is resolved once (no chains) before any lookup, and its
target is then priced by the overrides or by genai-prices. Reasoning tokens are
priced as output.

A bad file stops the start with a :class:`PricesFileError` that names the file,
the line and the field: unreadable file, TOML syntax error, unknown section or
field (a typo such as ``ouput``), missing ``input``/``output``, a price that is
not a number, negative or not finite, a duplicate model, an alias that is not a
non-empty string. At run time nothing raises: an unknown model gives ``None``
and the caller reports it once with :func:`warn_unpriced`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final, NamedTuple

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, StartDateConstraint, TieredPrices

from .. import config
from .._log import logger, warn_rate_limited
from .usage import LLMUsage

__all__ = [
    "ENV_PRICES",
    "Price",
    "PriceBook",
    "PricesFileError",
    "Quote",
    "map_provider",
    "warn_unpriced",
]

ENV_PRICES: Final = config.PRICES.env
"""Environment variable holding the path of the overrides TOML file."""

_DEFAULT_CACHE_SIZE: Final = 4096

_PROVIDER_ALIASES: Final[Mapping[str, str]] = {
    # GenAI semconv gen_ai.provider.name / gen_ai.system values, Traceloop's
    # GenAISystem, OpenInference's llm.provider / llm.system, and common spellings.
    "openai": "openai",
    "azure": "azure",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "azure_openai": "azure",
    "aws": "aws",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "amazon_bedrock": "aws",
    "google": "google",
    "gcp.vertex_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gcp.gemini": "google",
    "gemini": "google",
    "gcp.gen_ai": "google",
    "google_genai": "google",
    "anthropic": "anthropic",
    "openrouter": "openrouter",
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "groq": "groq",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "x-ai": "x-ai",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "perplexity": "perplexity",
    "together": "together",
    "together_ai": "together",
    "together-ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "fireworks-ai": "fireworks",
    "cerebras": "cerebras",
    "moonshot": "moonshotai",
    "moonshotai": "moonshotai",
    "novita": "novita",
    "meta": "meta",
    "zai": "zai",
    "minimax": "minimax",
}
"""Instrumentation provider names -> genai-prices provider ids."""

_FALLBACK_PROVIDER: Final[Mapping[str, str]] = {"azure": "openai"}
"""Where to look when a mapped provider is missing from the price data."""


class PricesFileError(ValueError):
    """The overrides file can't be used; the message names file, line and field."""

    def __init__(self, path: str, line: int | None, field: str | None, detail: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.detail = detail
        where = f"prices file {path}"
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", {field}"
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True, slots=True)
class Price:
    """The prices applied to one (provider, model), in USD per million tokens.

    ``None`` means the price source has no separate rate: cache reads and writes
    are then priced as input and reasoning as output. For a tiered price
    (``tiered``) the figures are the base tier's. ``source`` says where the price
    came from, so a stored cost can be explained later. Two rarer parts of a
    price come last: ``reasoning_mtok``, a separate rate for reasoning tokens,
    and ``per_request``, a fee in USD per call (not per million).
    """

    provider: str | None
    model: str
    input_mtok: Decimal | None
    output_mtok: Decimal | None
    cache_read_mtok: Decimal | None
    cache_write_mtok: Decimal | None
    source: str
    tiered: bool = False
    reasoning_mtok: Decimal | None = None
    per_request: Decimal | None = None


class Quote(NamedTuple):
    """What pricing says about one call's usage.

    ``cost_usd`` is None when the call cannot be priced, and ``reason`` then says
    why (``unknown model``, ``unknown token class audio``, ``inconsistent token
    counts``, ``no usage``). ``source`` is the cost source (``genai-prices
    <version>`` or ``override <file hash>``), ``detail`` the rest of where the
    price came from (an alias, the data's date), ``context`` the price conditions
    applied (``service_tier=priority``), canonical, or None.
    """

    cost_usd: float | None
    source: str | None
    detail: str | None
    reason: str | None
    context: str | None = None


_Five = tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None, Decimal | None]
"""USD per token for input, output, cache read, cache write, reasoning."""


@dataclass(frozen=True, slots=True)
class _Rates:
    """One price, compiled for the hot path: USD per token, tiers pre-merged."""

    price: Price
    base: _Five
    tiers: tuple[tuple[int, _Five], ...]  # (start, rates), highest start first
    per_call: Decimal


class _Entry:
    """The resolved price(s) of one (provider, model); picks the one in force."""

    __slots__ = ()

    def rates(self, when: datetime | None) -> _Rates:
        raise NotImplementedError


class _Static(_Entry):
    __slots__ = ("_rates",)

    def __init__(self, rates: _Rates) -> None:
        self._rates = rates

    def rates(self, when: datetime | None) -> _Rates:
        return self._rates


class _ByDate(_Entry):
    """Prices that change on dates only: the day number decides (cheap)."""

    __slots__ = ("_first", "_steps")

    def __init__(self, steps: tuple[tuple[int, _Rates], ...], first: _Rates) -> None:
        self._steps = steps  # (first UTC day in force, rates), last-listed first
        self._first = first

    def rates(self, when: datetime | None) -> _Rates:
        day = _utc_day(when)
        for start, rates in self._steps:
            if day >= start:
                return rates
        return self._first


class _ByTime(_Entry):
    """Prices that change by time of day: genai-prices picks, we compile once each."""

    __slots__ = ("_compiled", "_info", "_make")

    def __init__(self, info: ModelInfo, make: _RatesMaker) -> None:
        self._info = info
        self._make = make
        self._compiled: dict[int, tuple[ModelPrice, _Rates]] = {}

    def rates(self, when: datetime | None) -> _Rates:
        model_price = self._info.get_prices(when or datetime.now(tz=UTC))
        hit = self._compiled.get(id(model_price))
        if hit is None or hit[0] is not model_price:
            if len(self._compiled) >= 16:  # genai-prices returns its own objects; this is a backstop
                self._compiled.clear()
            hit = (model_price, self._make(model_price))
            self._compiled[id(model_price)] = hit
        return hit[1]


class _RatesMaker:
    """Compiles genai-prices ModelPrices of one model into :class:`_Rates`."""

    __slots__ = ("_model", "_provider", "_source")

    def __init__(self, provider: str, model: str, source: str) -> None:
        self._provider = provider
        self._model = model
        self._source = source

    def __call__(self, model_price: ModelPrice) -> _Rates:
        values = model_price.__dict__
        raw = tuple(values.get(key) for key in _PRICE_KEYS)
        per_request = values.get("requests_kcount")
        tiered = any(isinstance(value, TieredPrices) for value in raw)
        base = tuple(_base(value) for value in raw)
        price = Price(
            provider=self._provider,
            model=self._model,
            input_mtok=base[0],
            output_mtok=base[1],
            cache_read_mtok=base[2],
            cache_write_mtok=base[3],
            source=self._source,
            tiered=tiered,
            reasoning_mtok=base[4],
            per_request=per_request.scaleb(-3) if isinstance(per_request, Decimal) else None,
        )
        starts = sorted(
            {tier.start for value in raw if isinstance(value, TieredPrices) for tier in value.tiers},
            reverse=True,
        )
        tiers = tuple((start, _five(_at_tier(value, start) for value in raw)) for start in starts)
        return _Rates(
            price=price,
            base=_five(_base(value) for value in raw),
            tiers=tiers,
            per_call=price.per_request if price.per_request is not None else Decimal(0),
        )


_PRICE_KEYS: Final = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_reasoning_mtok",
)


def _base(value: object) -> Decimal | None:
    if isinstance(value, TieredPrices):
        return value.base
    return value if isinstance(value, Decimal) else None


def _at_tier(value: object, start: int) -> Decimal | None:
    """The price in force when the total input is just above ``start``."""
    if not isinstance(value, TieredPrices):
        return _base(value)
    applicable = value.base
    for tier in value.tiers:  # sorted ascending by genai-prices
        if tier.start <= start:
            applicable = tier.price
    return applicable


def _five(values: Iterable[Decimal | None]) -> _Five:
    """Per-million prices -> per-token prices (exact: a power-of-ten shift)."""
    a, b, c, d, e = (v.scaleb(-6) if v is not None else None for v in values)
    return (a, b, c, d, e)


_EPOCH: Final = date(1970, 1, 1)
_NO_START: Final = -(10**9)


def _utc_day(when: datetime | None) -> int:
    """Days since 1970-01-01 in UTC; naive datetimes are UTC, as in genai-prices."""
    if when is None:
        return int(time.time() // 86400)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when.astimezone(UTC).date() - _EPOCH).days


def _entry_for(info: ModelInfo, make: _RatesMaker) -> _Entry:
    prices = info.prices
    if isinstance(prices, ModelPrice):
        return _Static(make(prices))
    if all(c.constraint is None or isinstance(c.constraint, StartDateConstraint) for c in prices):
        steps = tuple(
            (
                _NO_START if c.constraint is None else (c.constraint.start_date - _EPOCH).days,  # type: ignore[union-attr]
                make(c.prices),
            )
            for c in reversed(prices)
        )
        return _ByDate(steps, steps[-1][1])
    return _ByTime(info, make)


def _usd(rates: _Rates, usage: LLMUsage) -> Decimal | None:
    """The cost of ``usage``; None when the parts exceed the whole (bad data)."""
    cache_read = usage.count("cache_read")
    cache_write = usage.count("cache_write")
    reasoning = usage.count("reasoning")
    input_tokens = usage.input_tokens
    if input_tokens is None:
        input_tokens = cache_read + cache_write
    output_tokens = usage.output_tokens
    if output_tokens is None:
        output_tokens = reasoning
    if cache_read < 0 or cache_write < 0 or reasoning < 0:
        return None
    p_in, p_out, p_read, p_write, p_reason = rates.base
    for start, five in rates.tiers:
        if input_tokens > start:
            p_in, p_out, p_read, p_write, p_reason = five
            break
    total = rates.per_call
    if p_read is not None:
        input_tokens -= cache_read
        total += p_read * cache_read
    if p_write is not None:
        input_tokens -= cache_write
        total += p_write * cache_write
    if p_reason is not None:
        output_tokens -= reasoning
        total += p_reason * reasoning
    if input_tokens < 0 or output_tokens < 0:
        return None
    if p_in is not None:
        total += p_in * input_tokens
    if p_out is not None:
        total += p_out * output_tokens
    return total


def map_provider(name: str | None) -> str | None:
    """The genai-prices provider id for an instrumentation's provider name, or None.

    Known spellings come from a table (``azure.ai.openai`` -> ``azure``; plain
    genai-prices matching would take it for ``openai``); anything else goes
    through genai-prices' own provider matching.
    """
    if not name:
        return None
    key = name.strip().lower()
    providers = data_snapshot.get_snapshot().providers
    known = {provider.id for provider in providers}
    mapped = _PROVIDER_ALIASES.get(key)
    if mapped is not None:
        if mapped in known:
            return mapped
        fallback = _FALLBACK_PROVIDER.get(mapped)
        if fallback in known:
            return fallback
    found = data_snapshot.find_provider_by_id(providers, key)
    return found.id if found is not None else None


def _provider_key(name: str | None) -> str | None:
    """How overrides name a provider: its genai-prices id, else its own lower-cased name."""
    if not name:
        return None
    return map_provider(name) or name.strip().lower()


_unpriced_seen: set[tuple[str | None, str | None]] = set()
_UNPRICED_MAX: Final = 4096


def warn_unpriced(model: str | None, provider: str | None = None) -> None:
    """Warn, once per (provider, model) per process, that a model has no price.

    Its calls are still stored, as unpriced: a cost of $0 would be a lie.
    """
    key = (provider, model)
    if key in _unpriced_seen:
        return
    if len(_unpriced_seen) >= _UNPRICED_MAX:
        warn_rate_limited(
            "unpriced:overflow", "otel-usecase: more than %d models have no price", _UNPRICED_MAX
        )
        return
    _unpriced_seen.add(key)
    logger.warning(
        "otel-usecase: no price for model %r (provider %r); its calls are stored as unpriced. "
        "Add it to the prices file named by %s, or alias it to a known model.",
        model,
        provider,
        ENV_PRICES,
    )


def _reset_unpriced_warnings() -> None:
    """Forget which models were reported (tests use it)."""
    _unpriced_seen.clear()


_MISSING: Final = object()


class PriceBook:
    """Prices for LLM calls: genai-prices' bundled data, then the overrides file.

    Lookups are cached per (provider, model), misses included, in a bounded dict:
    the first call of a model pays for the match, the next ones a dict lookup.
    Safe to share between threads.
    """

    genai_prices_version: str

    def __init__(
        self,
        overrides: str | os.PathLike[str] | None = None,
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        from_env = overrides is None
        if overrides is None:
            overrides = config.prices_path()
        self.overrides_path: str | None = os.fspath(overrides) if overrides is not None else None
        self._overrides: dict[tuple[str | None, str], _Rates] = {}
        self._aliases: dict[str, str] = {}
        if self.overrides_path is not None:
            from .prices_file import load_prices_file  # only with an overrides file

            try:
                self._overrides, self._aliases = load_prices_file(self.overrides_path)
            except PricesFileError as exc:
                if not from_env:
                    raise  # a file named in code or on the command line: the caller's mistake
                # From the environment: warn and price with genai-prices alone, because this runs
                # while opentelemetry-instrument configures the SDK, where raising turns off every
                # exporter, not just ours.
                config.PRICES.warn_bad(self.overrides_path, str(exc), "pricing with genai-prices alone")
                self.overrides_path = None
        self.genai_prices_version = genai_prices.__version__
        self._cache_size = max(1, cache_size)
        self._cache: dict[tuple[str | None, str], _Entry | None] = {}
        self._lock = threading.Lock()
        self._snapshot = data_snapshot.get_snapshot()
        self._source = self._source_for(self._snapshot)

    def lookup(
        self, model: str, provider: str | None = None, *, when: datetime | None = None
    ) -> Price | None:
        """The price in force for ``model`` at ``provider`` (now, or at ``when``), or None."""
        entry = self._entry(provider.strip().lower() if provider else None, model)
        return entry.rates(when).price if entry is not None else None

    def cost(self, usage: LLMUsage, *, when: datetime | None = None) -> tuple[float | None, Price | None]:
        """The USD cost of one call and the price applied.

        The cost is None when the model has no price (then the price is None
        too; report it with :func:`warn_unpriced`), when the token counts are
        unknown, or when they contradict each other (more cached than input
        tokens). ``when`` picks date- or time-dependent prices; default now.
        """
        model = usage.model
        if model is None:
            return None, None
        entry = self._entry(usage.provider, model)
        if entry is None:
            return None, None
        rates = entry.rates(when)
        if usage.input_tokens is None and usage.output_tokens is None:
            return None, rates.price
        usd = _usd(rates, usage)
        if usd is None:
            warn_rate_limited(
                "cost:inconsistent",
                "otel-usecase: not pricing a call of %r: inconsistent token counts %r",
                model,
                usage,
            )
            return None, rates.price
        return float(usd), rates.price

    def quote(
        self,
        usage: LLMUsage,
        *,
        when: datetime | None = None,
        context: Mapping[str, str] | None = None,
    ) -> Quote:
        """Price one call's usage: the cost, where its price came from, or why there is none.

        Never raises on bad data (this runs in the export path).
        """
        if not usage.has_usage:
            return Quote(None, None, None, "no usage")
        cost, price = self.cost(usage, when=when)
        if price is None:
            return Quote(None, None, None, "unknown model")
        source = price.source
        if cost is None:
            return Quote(None, source, source, "inconsistent token counts")
        return Quote(cost, source, source, None)

    def clear_cache(self) -> None:
        """Forget resolved prices (they are resolved again on next use)."""
        with self._lock:
            self._cache.clear()

    # -- resolution ---------------------------------------------------------

    def _entry(self, provider: str | None, model: str) -> _Entry | None:
        snapshot = data_snapshot.get_snapshot()
        if snapshot is not self._snapshot:  # genai-prices' UpdatePrices swapped the data
            with self._lock:
                self._cache.clear()
                self._snapshot = snapshot
                self._source = self._source_for(snapshot)
        key = (provider, model)
        entry = self._cache.get(key, _MISSING)
        if entry is not _MISSING:
            return entry  # type: ignore[return-value]
        resolved = self._resolve(provider, model)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first
            self._cache[key] = resolved
        return resolved

    def _resolve(self, provider: str | None, model: str) -> _Entry | None:
        try:
            return self._resolve_unsafe(provider, model)
        except Exception:  # bad data from a span must never break export
            logger.debug("otel-usecase: price lookup failed for %r/%r", provider, model, exc_info=True)
            return None

    def _resolve_unsafe(self, provider: str | None, model: str) -> _Entry | None:
        name = model.strip()
        if not name:
            return None
        alias = None
        target = self._aliases.get(name.lower())
        if target is not None:
            alias, name = name, target
        provider_key = _provider_key(provider)

        override = self._override(provider_key, name)
        if override is not None:
            return _Static(_with_alias(override, alias, name))

        found = self._find_model(name, map_provider(provider))
        if found is None:
            return None
        found_provider, info = found
        override = self._override(found_provider.id, info.id)
        if override is not None:
            return _Static(_with_alias(override, alias, name))
        source = self._source if alias is None else f"alias {alias} -> {name} ({self._source})"
        return _entry_for(info, _RatesMaker(found_provider.id, info.id, source))

    def _override(self, provider_key: str | None, model: str) -> _Rates | None:
        if not self._overrides:
            return None
        name = model.lower()
        if provider_key is not None:
            scoped = self._overrides.get((provider_key, name))
            if scoped is not None:
                return scoped
        return self._overrides.get((None, name))

    def _find_model(self, model: str, provider_id: str | None) -> tuple[Provider, ModelInfo] | None:
        found = self._match(model, provider_id)
        if found is None and provider_id is not None:
            found = self._match(model, None)  # e.g. an OpenAI client aimed at another vendor
        if found is None and "/" in model:
            prefix, rest = model.split("/", 1)
            prefixed = map_provider(prefix)
            if prefixed is not None and rest:
                found = self._match(rest, prefixed)
        return found

    def _match(self, model: str, provider_id: str | None) -> tuple[Provider, ModelInfo] | None:
        try:
            return self._snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            return None

    def _source_for(self, snapshot: data_snapshot.DataSnapshot) -> str:
        source = f"genai-prices {self.genai_prices_version}"
        if snapshot.from_auto_update:
            source += f" (data of {snapshot.timestamp:%Y-%m-%d %H:%M})"
        return source


def _with_alias(rates: _Rates, alias: str | None, target: str) -> _Rates:
    if alias is None:
        return rates
    source = f"alias {alias} -> {target} ({rates.price.source})"
    return replace(rates, price=replace(rates.price, source=source))
