"""What one model charges per token class, and how a call's counts split among the classes it prices.

Why this exists: the collector's OTTL prices every class of
:data:`~otel_usecase.cost.token_classes.TOKEN_CLASSES` a model has a rate for,
and must split a call's counts the way genai-prices does
(``genai_prices.decompose.compute_leaf_values``): each priced class is charged
for its *leaf* count, its own count minus the leaf counts of the priced classes
included in it (:data:`~otel_usecase.cost.token_classes.INCLUDED_IN`), so a part
without a rate of its own stays priced at the rate of the class it is part of.
The leaves are kept as linear combinations of the class counts, so that the
OTTL can compute them with ``+`` and ``-`` on the counts it read.

A class that needs its own price (audio, generated images and video: several
times the text rate) must not fall back to a text rate: :meth:`ModelRates.unpriceable`
names the classes a model cannot price, and the OTTL leaves such a call unpriced.

The rates of the classes beyond the legacy five fields of
:class:`~otel_usecase.cost.prices.Price` are read from genai-prices' data for the
model (the price in force now, base tier), and only when the price applied is
genai-prices' own (an override file prices text tokens only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

from ..cost.prices import Price
from ..cost.token_classes import BY_NAME, INCLUDED_IN, TOKEN_CLASSES, TokenClass, unpriceable

__all__ = ["Combination", "ModelRates", "leaves", "model_info", "model_rates", "unpriceable"]

Combination = Mapping[str, int]
"""A linear combination of class counts: class name -> coefficient (never 0)."""


@dataclass(frozen=True, slots=True)
class ModelRates:
    """The per-class rates applied to one (provider, model), in USD per million tokens."""

    price: Price
    rates: Mapping[str, Decimal]
    """Class name -> rate, for the classes the model has a rate for, in table order."""
    per_request: Decimal | None
    """A fee in USD per call (Perplexity), or None."""

    @property
    def signature(self) -> tuple[object, ...]:
        """What two prices must share to price every call the same (provider and model aside)."""
        return (tuple(self.rates.items()), self.per_request, self.price.tiered)

    def unpriceable(self) -> tuple[TokenClass, ...]:
        """The classes this model cannot price: see :func:`unpriceable`."""
        return unpriceable(self.rates)


def model_rates(price: Price) -> ModelRates:
    """The per-class rates of ``price`` (cached: the generator asks for the same model many times)."""
    try:
        return _cached_rates(price)
    except TypeError:  # a price that cannot be hashed is computed each time
        return _model_rates(price)


@cache
def _cached_rates(price: Price) -> ModelRates:
    return _model_rates(price)


def _model_rates(price: Price) -> ModelRates:
    legacy = _legacy_rates(price)
    rates = dict(legacy)
    info = model_info(price)
    if info is not None:
        model_price = info.get_prices(datetime.now(tz=UTC))
        if _same_text_rates(legacy, model_price):  # genai-prices' own price, not an override
            for token_class in TOKEN_CLASSES:
                rate = _base(getattr(model_price, token_class.price_key, None))
                if rate is not None:
                    rates.setdefault(token_class.name, rate)
    ordered = {c.name: rates[c.name] for c in TOKEN_CLASSES if c.name in rates}
    return ModelRates(price=price, rates=ordered, per_request=price.per_request)


def _legacy_rates(price: Price) -> dict[str, Decimal]:
    """The rates :class:`Price` carries as fields (``input_mtok``, ``reasoning_mtok`` ...)."""
    out: dict[str, Decimal] = {}
    for token_class in TOKEN_CLASSES:
        value = getattr(price, token_class.price_key, None)
        if value is None:
            value = getattr(price, f"{token_class.name}_mtok", None)
        if isinstance(value, Decimal):
            out[token_class.name] = value
    return out


def _same_text_rates(legacy: Mapping[str, Decimal], model_price: ModelPrice) -> bool:
    """Whether the rates the price carries are genai-prices' for the model (else: an override)."""
    return all(
        _base(getattr(model_price, BY_NAME[name].price_key, None)) == rate for name, rate in legacy.items()
    )


def _base(value: object) -> Decimal | None:
    if isinstance(value, TieredPrices):
        return value.base
    return value if isinstance(value, Decimal) else None


def model_info(price: Price) -> ModelInfo | None:
    """genai-prices' entry for the model a price belongs to, if it has one."""
    snapshot = data_snapshot.get_snapshot()
    for provider in snapshot.providers:
        if price.provider is not None and provider.id != price.provider:
            continue
        for info in provider.models:
            if info.id == price.model:
                return info
    try:
        return snapshot.find_provider_model(price.model, None, price.provider, None)[1]
    except LookupError:
        return None


def leaves(priced: Iterable[str]) -> dict[str, Combination]:
    """Each priced class's leaf count, as genai-prices decomposes usage.

    ``leaf(c) = count(c) - sum(leaf(d) for d priced and included in c)``:
    ``leaves({"input", "cache_read"})["input"] == {"input": 1, "cache_read": -1}``.
    """
    wanted = set(priced)
    names = [c.name for c in TOKEN_CLASSES if c.name in wanted]  # table order: the same text every run
    done: dict[str, Combination] = {}

    def leaf(name: str) -> Combination:
        found = done.get(name)
        if found is not None:
            return found
        combination = {name: 1}
        for part in names:
            if name in INCLUDED_IN[part]:
                for key, coefficient in leaf(part).items():
                    combination[key] = combination.get(key, 0) - coefficient
        # the class itself first, then its parts in table order: "input - cache_read - input_audio + ..."
        order = [name, *(n for n in names if n != name)]
        result = {key: combination[key] for key in order if combination.get(key)}
        done[name] = result
        return result

    return {name: leaf(name) for name in names}
