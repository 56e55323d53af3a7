"""What one LLM call cost, in USD: prices from genai-prices, overridable per model, class and condition.

Why this exists: matching a model name to a price (``calc_price``) costs about a
hundred microseconds in genai-prices because it scans every provider's match
rules, and an exporter prices every LLM span. So :class:`PriceBook` resolves a
``(provider, model)`` pair once, compiles the matched price per price context
(:mod:`otel_usecase.cost.rates`: one USD coefficient per token class, per tier),
keeps both in a bounded cache, and then prices each call with a handful of
Decimal multiplications. The figures are the same as
``genai_prices.calc_price(...).total_price`` (the tests check it over the whole
bundled snapshot, every token class, with and without price contexts), including
genai-prices' rules:

* every token class of :mod:`otel_usecase.cost.token_classes` is priced at its
  own rate when the model has one (cache reads and writes, Anthropic's 1-hour
  cache writes, reasoning, audio, image and video tokens); a class without a
  rate stays in the nearest class that includes it (reasoning priced as output,
  image input as input) -- except audio and generated images/video, which make
  the call unpriced (``unknown token class audio``) rather than priced as text;
* tiered prices (Gemini, Claude with a long context) use genai-prices' cliff
  rule: once the *total* input tokens pass a tier's start, every token of every
  kind is priced at that tier;
* per-request fees (``requests_kcount``, Perplexity) are added once per call;
* prices that change on a date (``StartDateConstraint``) or by time of day
  (DeepSeek's off-peak hours) are picked for the time of the call;
* price conditions (:mod:`otel_usecase.cost.conditions`: the served service
  tier, batch processing ...) select genai-prices' price variants
  (``ModelInfo.get_prices(when, price_context)``); as in genai-prices, they are
  ignored when the model was found through another provider's fallback list
  (an Azure span priced with OpenAI's list).

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

Where a cost came from
----------------------
:class:`Quote` ``source`` is the cost source the ledger stores:
``genai-prices <version>``, or ``override <sha256 of the prices file, 12 hex>``
(the file's bytes, so a changed file is a new source). ``detail`` says the rest:
the model matched (``openai/gpt-5``), an alias, the date of auto-updated price
data, the file's path, and whether a price condition found no price variant.
``context`` is the canonical price context the call was made under (see
:meth:`PriceBook.quote`).

Overrides file
--------------
:class:`PriceBook` reads an optional TOML file (the ``overrides`` argument, else
the path in ``OTEL_USECASE_PRICES``), whose prices win over genai-prices; see
:mod:`otel_usecase.cost.prices_file` for its format (a rate per token class, per
condition variants, aliases). A bad file given as an argument raises
:class:`PricesFileError` naming the file, the line and the field; one named by
the env var is warned about and not used. At run time nothing raises: an
unknown model gives ``unknown model`` and the caller reports it once with
:func:`warn_unpriced`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final, NamedTuple

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, StartDateConstraint

from .. import config
from .._log import logger, warn_rate_limited
from .call import REASON_NO_USAGE, REASON_UNKNOWN_MODEL
from .conditions import format_context, parse_context
from .prices_file import OverrideModel, PricesFile, load_prices_file
from .providers import map_provider, provider_key
from .rates import INCONSISTENT, Compiled, Price, PricesFileError, compile_price, evaluate, in_force
from .token_classes import BY_NAME
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
_CONTEXTS_PER_MODEL: Final = 32
"""Compiled contexts kept per model (a handful exist: tiers, batch); a backstop against odd data."""


class Quote(NamedTuple):
    """What pricing says about one call's usage.

    ``cost_usd`` is None when the call cannot be priced, and ``reason`` then says
    why (``unknown model``, ``unknown token class audio``, ``inconsistent token
    counts``, ``no usage``). ``source`` is the cost source (``genai-prices
    <version>`` or ``override <file hash>``), ``detail`` the rest of where the
    price came from (model matched, alias, data date, file). ``context`` is the
    canonical price context the call was priced under (``service_tier=priority``),
    whether or not the model has a variant for it, so that a re-price with newer
    price data applies it; None when the call had none.
    """

    cost_usd: float | None
    source: str | None
    detail: str | None
    reason: str | None
    context: str | None = None


_new_tuple: Final = tuple.__new__
_TEXT_CLASSES: Final = frozenset(("input", "output", "cache_read", "cache_write", "reasoning"))
"""Classes whose counts the second fast path of :meth:`PriceBook.quote` prices (none needs its own price)."""
assert _TEXT_CLASSES <= BY_NAME.keys() and not any(BY_NAME[name].needs_own_price for name in _TEXT_CLASSES)
_EPOCH: Final = date(1970, 1, 1)


def _utc_day(when: datetime | None) -> int:
    """Days since 1970-01-01 in UTC; naive datetimes are UTC, as in genai-prices."""
    if when is None:
        return int(time.time() // 86400)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when.astimezone(UTC).date() - _EPOCH).days


def _midnight(day: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)


class _Timeline:
    """The compiled price(s) of one model under one context; picks the one in force."""

    __slots__ = ()

    def at(self, when: datetime | None) -> Compiled:
        raise NotImplementedError


class _Static(_Timeline):
    __slots__ = ("_compiled",)

    def __init__(self, compiled: Compiled) -> None:
        self._compiled = compiled

    def at(self, when: datetime | None) -> Compiled:
        return self._compiled


class _ByDate(_Timeline):
    """Prices that change on dates only: the UTC day number decides (cheap)."""

    __slots__ = ("_first", "_steps")

    def __init__(self, steps: tuple[tuple[int, Compiled], ...], first: Compiled) -> None:
        self._steps = steps  # (first UTC day in force, compiled), latest first
        self._first = first

    def at(self, when: datetime | None) -> Compiled:
        day = _utc_day(when)
        for start, compiled in self._steps:
            if day >= start:
                return compiled
        return self._first


class _ByTime(_Timeline):
    """Prices that change by time of day: genai-prices picks, we compile each distinct price once."""

    __slots__ = ("_compiled", "_context", "_info", "_make")

    def __init__(self, info: ModelInfo, context: Mapping[str, str] | None, make: _Maker) -> None:
        self._info = info
        self._context = context
        self._make = make
        self._compiled: dict[tuple[tuple[str, int], ...], Compiled] = {}

    def at(self, when: datetime | None) -> Compiled:
        model_price = self._info.get_prices(when or datetime.now(tz=UTC), self._context)
        # get_prices copies the price when a context applies: key by the identity of its values
        key = tuple((k, id(v)) for k, v in model_price.__dict__.items())
        hit = self._compiled.get(key)
        if hit is None:
            if len(self._compiled) >= 16:  # genai-prices' values are long-lived; this is a backstop
                self._compiled.clear()
            hit = self._make(model_price)
            self._compiled[key] = hit
        return hit


class _Maker:
    """Compiles one resolved ``ModelPrice`` of a model, with its source and detail."""

    __slots__ = ("_detail", "_model", "_provider", "_source", "_standard_note")

    def __init__(self, provider: str | None, model: str, source: str, detail: str, note: str | None) -> None:
        self._provider = provider
        self._model = model
        self._source = source
        self._detail = detail
        self._standard_note = note

    def __call__(self, model_price: ModelPrice, *, standard: bool = False) -> Compiled:
        detail = self._detail
        if standard and self._standard_note:
            detail += "; " + self._standard_note
        return compile_price(
            model_price.__dict__,
            provider=self._provider,
            model=self._model,
            source=self._source,
            detail=detail,
        )


def _timeline(info: ModelInfo, context: Mapping[str, str] | None, make: _Maker) -> _Timeline:
    """Compile ``info``'s prices under ``context`` for every date they change on."""
    prices = info.prices
    constraints = [] if isinstance(prices, ModelPrice) else [c.constraint for c in prices]
    variants = [
        v
        for v in (info.price_variants or ())
        if context and all(context.get(k) == val for k, val in v.when.items())
    ]
    constraints += [v.constraint for v in variants]

    def compiled(when: datetime) -> Compiled:
        resolved = info.get_prices(when, context)
        return make(resolved, standard=bool(context) and resolved == info.get_prices(when))

    if all(c is None for c in constraints):
        return _Static(compiled(datetime(2000, 1, 1, tzinfo=UTC)))
    if all(c is None or isinstance(c, StartDateConstraint) for c in constraints):
        days = sorted(
            {(c.start_date - _EPOCH).days for c in constraints if isinstance(c, StartDateConstraint)}
        )
        first = compiled(_midnight(days[0] - 1))
        steps = tuple((day, compiled(_midnight(day))) for day in reversed(days))
        return _ByDate(steps, first)
    return _ByTime(info, context, make)


class _Entry:
    """One (provider, model) resolved: the model's price data and its compiled timelines per context."""

    __slots__ = ("_context_applies", "_info", "_make", "_timelines")

    def __init__(self, info: ModelInfo, make: _Maker, *, context_applies: bool) -> None:
        self._info = info
        self._make = make
        self._context_applies = context_applies
        self._timelines: dict[str | None, _Timeline] = {}

    def at(self, when: datetime | None, key: str | None, context: Mapping[str, str] | None) -> Compiled:
        if not self._context_applies:
            key = context = None
        timeline = self._timelines.get(key)
        if timeline is None:
            timeline = _timeline(self._info, context, self._make)
            if len(self._timelines) >= _CONTEXTS_PER_MODEL:
                self._timelines.clear()
            self._timelines[key] = timeline
        return timeline.at(when)


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

    Lookups are cached per (provider, model), misses included, in a bounded dict,
    and compiled per price context: the first call of a model pays for the
    match, the next ones a dict lookup. Safe to share between threads.
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
        self._file = PricesFile({}, {}, "")
        if self.overrides_path is not None:
            try:
                self._file = load_prices_file(self.overrides_path)
            except PricesFileError as exc:
                if not from_env:
                    raise  # a file named in code or on the command line: the caller's mistake
                # From the environment: warn and price with genai-prices alone, because this runs
                # while opentelemetry-instrument configures the SDK, where raising turns off every
                # exporter, not just ours.
                config.PRICES.warn_bad(self.overrides_path, str(exc), "pricing with genai-prices alone")
                self.overrides_path = None
        self.overrides_source: str | None = (
            f"override {self._file.digest[:12]}" if self.overrides_path is not None else None
        )
        self.genai_prices_version = genai_prices.__version__
        self._cache_size = max(1, cache_size)
        self._cache: dict[tuple[str | None, str], _Entry | None] = {}
        self._lock = threading.Lock()
        self._snapshot = data_snapshot.get_snapshot()
        self._data_note = self._note_for(self._snapshot)

    def lookup(
        self,
        model: str,
        provider: str | None = None,
        *,
        when: datetime | None = None,
        context: Mapping[str, str] | str | None = None,
    ) -> Price | None:
        """The price in force for ``model`` at ``provider`` (now, or at ``when``, under ``context``), or None.

        ``Price.rates`` has the rate of every token class the model lists.
        """
        key, ctx = _context_args(context)
        entry = self._entry(provider.strip().lower() if provider else None, model)
        return entry.at(when, key, ctx).price if entry is not None else None

    def quote(
        self,
        usage: LLMUsage,
        *,
        when: datetime | None = None,
        context: Mapping[str, str] | str | None = None,
    ) -> Quote:
        """Price one call's usage: the cost, where its price came from, or why there is none.

        ``when``: the time of the call (date- and time-dependent prices; default
        now). ``context``: the price context
        (:func:`otel_usecase.cost.conditions.price_context`, or its canonical
        string as stored), echoed canonical in ``Quote.context``. Never raises
        on bad data (this runs in the export path).
        """
        if context:
            key, ctx = _context_args(context)
        else:
            key = ctx = None
        tokens = usage.tokens
        if "input" not in tokens and "output" not in tokens:
            return _new_tuple(Quote, (None, None, None, REASON_NO_USAGE, key))
        model = usage.model
        entry = self._entry(usage.provider, model) if model is not None else None
        if entry is None:
            return _new_tuple(Quote, (None, None, None, REASON_UNKNOWN_MODEL, key))
        try:
            compiled = entry.at(when, key, ctx)
        except Exception:  # bad price data must never break export
            logger.debug("otel-usecase: compiling the price of %r failed", model, exc_info=True)
            return _new_tuple(Quote, (None, None, None, REASON_UNKNOWN_MODEL, key))
        price = compiled.price
        try:
            if len(tokens) == 2 and "input" in tokens and "output" in tokens:  # most calls: no parts
                input_tokens = tokens["input"]
                coefs, fee = (
                    in_force(compiled, input_tokens) if compiled.tiers else (compiled.coefs, compiled.fee)
                )
                usd = fee + coefs["input"] * input_tokens + coefs["output"] * tokens["output"]
                return _new_tuple(Quote, (float(usd), price.source, price.detail, None, key))
            if tokens.keys() <= _TEXT_CLASSES and "input" in tokens and "output" in tokens:
                # cache and reasoning parts only (the next most common calls): two checks cover
                # every rule of the general path, as these parts never need their own price.
                get = tokens.get
                input_tokens = tokens["input"]
                cache_read, cache_write, reasoning = (
                    get("cache_read", 0),
                    get("cache_write", 0),
                    get("reasoning", 0),
                )
                if (
                    0 <= cache_read + cache_write <= input_tokens
                    and 0 <= reasoning <= tokens["output"]
                    and (cache_read >= 0 and cache_write >= 0)
                ):
                    coefs, fee = in_force(compiled, input_tokens)
                    usd = fee
                    for name, count in tokens.items():
                        usd += coefs[name] * count
                    return _new_tuple(Quote, (float(usd), price.source, price.detail, None, key))
                result: Decimal | str = INCONSISTENT
            else:
                result = evaluate(compiled, tokens)
        except (TypeError, ValueError, ArithmeticError):  # counts that are not numbers (built by hand)
            result = INCONSISTENT
        if isinstance(result, Decimal):
            return _new_tuple(Quote, (float(result), price.source, price.detail, None, key))
        if result == INCONSISTENT:
            warn_rate_limited(
                "cost:inconsistent",
                "otel-usecase: not pricing a call of %r: inconsistent token counts %r",
                model,
                dict(tokens),
            )
        return _new_tuple(Quote, (None, price.source, price.detail, result, key))

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
                self._data_note = self._note_for(snapshot)
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
        alias_note = None
        target = self._file.aliases.get(name.lower())
        if target is not None:
            alias_note, name = f"alias {name} -> {target}", target
        wanted_provider = provider_key(provider)

        override = self._override(wanted_provider, name)
        if override is not None:
            return self._override_entry(override, alias_note)

        found = self._find_model(name, map_provider(provider))
        if found is None:
            return None
        found_provider, info = found
        override = self._override(found_provider.id, info.id)
        if override is not None:
            return self._override_entry(override, alias_note)
        direct = any(info is listed for listed in found_provider.models)
        notes = [f"{found_provider.id}/{info.id}"]
        if alias_note:
            notes.append(alias_note)
        if self._data_note:
            notes.append(self._data_note)
        detail = "; ".join(notes)
        make = _Maker(
            found_provider.id,
            info.id,
            f"genai-prices {self.genai_prices_version}",
            detail,
            "standard price: no variant for the context",
        )
        return _Entry(info, make, context_applies=direct)

    def _override_entry(self, override: OverrideModel, alias_note: str | None) -> _Entry:
        notes = [f"{override.provider + '/' if override.provider else ''}{override.model}"]
        if alias_note:
            notes.append(alias_note)
        notes.append(f"prices file {self.overrides_path}")
        make = _Maker(
            override.provider,
            override.model,
            self.overrides_source or "override",
            "; ".join(notes),
            "standard price: no variant for the context",
        )
        return _Entry(override.info, make, context_applies=True)

    def _override(self, provider: str | None, model: str) -> OverrideModel | None:
        models = self._file.models
        if not models:
            return None
        name = model.lower()
        if provider is not None:
            scoped = models.get((provider, name))
            if scoped is not None:
                return scoped
        return models.get((None, name))

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

    @staticmethod
    def _note_for(snapshot: data_snapshot.DataSnapshot) -> str | None:
        if snapshot.from_auto_update:
            return f"data of {snapshot.timestamp:%Y-%m-%d %H:%M}"
        return None


def _context_args(context: Mapping[str, str] | str | None) -> tuple[str | None, Mapping[str, str] | None]:
    """(canonical string, mapping) of a context given either way."""
    if not context:
        return None, None
    if isinstance(context, str):
        parsed = parse_context(context)
        return format_context(parsed), parsed
    return format_context(context), context
