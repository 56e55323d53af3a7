"""One model price compiled for the hot path: a USD coefficient per token class.

Why this exists: genai-prices prices a usage by decomposing it over the units a
model has a rate for (``genai_prices.decompose.compute_leaf_values``): the most
specific priced unit takes its tokens, each priced ancestor gets the remainder,
and a class without a rate stays in its nearest priced ancestor (audio tokens of
a model without an audio rate are priced as input). That decomposition is
linear in the counts, so for one resolved ``ModelPrice`` the cost of any usage is

    fee + sum(coefficient[class] * count[class])

with one coefficient per token class of :mod:`otel_usecase.cost.token_classes`
(USD per token, a ``Decimal``) and a per-request fee, per tier of genai-prices'
cliff rule (once the *total* input tokens pass a tier's start, every token is
priced at that tier). :func:`compile_price` computes those coefficients once per
resolved price; pricing a call is then a handful of Decimal multiplications.

The shared types of the price book and the overrides file (:class:`Price`,
:class:`PricesFileError`) live here so that neither imports the other.

Rules kept from genai-prices, checked against ``calc_price`` over its whole
snapshot by the tests:

* tiers: the cliff rule above, per unit, on the total input tokens;
* ``requests_kcount``: a fee per call;
* units outside the token-class table (web searches, audio seconds, text-only
  or tool tokens ...) are never on the spans this reads: they count zero.

Two rules of our own, because a silent under-count is worse than no price:

* a class that ``needs_own_price`` (audio, generated images and video) with
  tokens on a model that has no rate for it, nor for a more general class that
  itself needs its own price (cached audio falls back to input audio), makes
  the call unpriced: ``unknown token class <label>``;
* parts that exceed their whole (more cached than input tokens, cache reads
  plus writes above the input), or a usage whose decomposition would give a
  priced unit a negative count, make it unpriced: ``inconsistent token counts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from genai_prices.data_units import unit_data
from genai_prices.types import TieredPrices

from .call import REASON_INCONSISTENT
from .token_classes import BY_NAME, INCLUDED_IN, TOKEN_CLASSES, unknown_class_reason, unpriceable

__all__ = [
    "INCONSISTENT",
    "Compiled",
    "Price",
    "PricesFileError",
    "compile_price",
    "evaluate",
]

INCONSISTENT: Final = REASON_INCONSISTENT
_REQUESTS_KEY: Final = "requests_kcount"
_ZERO: Final = Decimal(0)


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


_NO_RATES: Final[Mapping[str, Decimal]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Price:
    """The prices applied to one (provider, model), in USD per million tokens.

    ``rates`` has the own rate of every token class the price lists (by class
    name: ``input``, ``cache_read``, ``input_audio`` ...); a class missing from
    it is priced at the rate of the nearest class that includes it. The named
    fields are the five classes every engine knew before the table (None = no
    own rate), kept for the collector's OTTL and the ``prices`` command. For a
    tiered price (``tiered``) the figures are the base tier's. ``source`` is the
    cost source (``genai-prices <version>`` or ``override <file hash>``),
    ``detail`` the rest of where the price came from (the matched model, an
    alias, the data's date, the file). ``per_request`` is a fee in USD per call.
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
    rates: Mapping[str, Decimal] = field(default_factory=lambda: _NO_RATES)
    detail: str | None = None


# -- the table's structure, derived once from genai-prices' unit dimensions ---------------

_DIMS: Final[Mapping[str, frozenset[tuple[str, str]]]] = {
    c.name: frozenset(unit_data[c.usage_key]["dimensions"].items()) for c in TOKEN_CLASSES
}
_NAMES: Final = tuple(c.name for c in TOKEN_CLASSES)
_BY_PRICE_KEY: Final[Mapping[str, str]] = {c.price_key: c.name for c in TOKEN_CLASSES}


def _fill_plan() -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
    """For each class with parts, most specific first: its direct parts, grouped by the dimension they add.

    Parts in one group are disjoint (cache reads and cache writes; audio, image
    and video), so a missing whole is at least the largest group's sum.
    """
    plan: list[tuple[str, tuple[tuple[str, ...], ...]]] = []
    for whole in sorted(_NAMES, key=lambda n: -len(_DIMS[n])):
        groups: dict[str, list[str]] = {}
        for part in _NAMES:
            extra = _DIMS[part] - _DIMS[whole]
            if _DIMS[whole] < _DIMS[part] and len(extra) == 1:
                groups.setdefault(next(iter(extra))[0], []).append(part)
        if groups:
            plan.append((whole, tuple(tuple(g) for g in groups.values())))
    return tuple(plan)


_FILL: Final = _fill_plan()


@dataclass(frozen=True, slots=True)
class Compiled:
    """One resolved price, compiled: see the module docstring.

    ``coefs`` maps every class name to USD per token (base tier); ``tiers`` are
    ``(start, coefs, fee)``, highest start first; ``leaves`` the decomposition
    of each priced class with parts, as ``(class, +1/-1)`` terms (a negative
    leaf = inconsistent counts); ``unpriced`` the classes that need their own
    price and have none, with the label a reason names them by.
    """

    price: Price
    coefs: Mapping[str, Decimal]
    fee: Decimal
    tiers: tuple[tuple[int, Mapping[str, Decimal], Decimal], ...]
    leaves: tuple[tuple[tuple[str, int], ...], ...]
    unpriced: Mapping[str, str]


def _base(value: object) -> Decimal | None:
    if isinstance(value, TieredPrices):
        return value.base
    return value if isinstance(value, Decimal) else None


def _at_tier(value: object, start: int | None) -> Decimal | None:
    """The rate in force when the total input is just above ``start`` (None: the base tier)."""
    if not isinstance(value, TieredPrices):
        return _base(value)
    applicable = value.base
    if start is not None:
        for tier in value.tiers:  # sorted ascending by genai-prices
            if tier.start <= start:
                applicable = tier.price
    return applicable


def _leaf_terms(priced: Iterable[str]) -> dict[str, dict[str, int]]:
    """genai-prices' ``compute_leaf_values``, symbolically: each priced class's leaf as class -> +-1."""
    order = sorted(priced, key=lambda n: (-len(_DIMS[n]), BY_NAME[n].usage_key))
    leaves: dict[str, dict[str, int]] = {}
    for unit in order:
        vector = {unit: 1}
        for other in order:
            if other != unit and other in leaves and _DIMS[unit] <= _DIMS[other]:
                for name, k in leaves[other].items():
                    vector[name] = vector.get(name, 0) - k
        leaves[unit] = {name: k for name, k in vector.items() if k}
    return leaves


def compile_price(
    values: Mapping[str, object],
    *,
    provider: str | None,
    model: str,
    source: str,
    detail: str | None = None,
) -> Compiled:
    """Compile one price (genai-prices price key -> ``Decimal`` or ``TieredPrices``, per million)."""
    own = {
        _BY_PRICE_KEY[key]: value
        for key, value in values.items()
        if key in _BY_PRICE_KEY and isinstance(value, (Decimal, TieredPrices))
    }
    request_fee = values.get(_REQUESTS_KEY)
    if not isinstance(request_fee, (Decimal, TieredPrices)):
        request_fee = None
    leaves = _leaf_terms(own)

    def coefficients(start: int | None) -> tuple[Mapping[str, Decimal], Decimal]:
        coefs = dict.fromkeys(_NAMES, _ZERO)
        for unit, terms in leaves.items():
            rate = _at_tier(own[unit], start)
            if rate is None:
                continue
            per_token = rate.scaleb(-6)
            for name, k in terms.items():
                coefs[name] += per_token * k
        fee = _at_tier(request_fee, start) if request_fee is not None else None
        return MappingProxyType(coefs), fee.scaleb(-3) if fee is not None else _ZERO

    starts = sorted(
        {
            tier.start
            for value in (*own.values(), request_fee)
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        },
        reverse=True,
    )
    base_coefs, base_fee = coefficients(None)
    tiers = tuple((start, *coefficients(start)) for start in starts)
    unpriced = {c.name: unknown_class_reason(c) for c in unpriceable(own)}
    rates = {name: rate for name, value in own.items() if (rate := _base(value)) is not None}
    fee_base = _base(request_fee)
    price = Price(
        provider=provider,
        model=model,
        input_mtok=rates.get("input"),
        output_mtok=rates.get("output"),
        cache_read_mtok=rates.get("cache_read"),
        cache_write_mtok=rates.get("cache_write"),
        source=source,
        tiered=bool(starts),
        reasoning_mtok=rates.get("reasoning"),
        per_request=fee_base.scaleb(-3) if fee_base is not None else None,
        rates=MappingProxyType({n: rates[n] for n in _NAMES if n in rates}),
        detail=detail,
    )
    return Compiled(
        price=price,
        coefs=base_coefs,
        fee=base_fee,
        tiers=tiers,
        leaves=tuple(tuple(terms.items()) for terms in leaves.values() if len(terms) > 1),
        unpriced=MappingProxyType(unpriced),
    )


def in_force(compiled: Compiled, total_input: int) -> tuple[Mapping[str, Decimal], Decimal]:
    """The coefficients and per-request fee in force for a call with ``total_input`` input tokens.

    genai-prices' cliff rule: past a tier's start, every token of the call is priced at that tier.
    """
    if compiled.tiers:
        for start, tier_coefs, tier_fee in compiled.tiers:  # highest start first
            if total_input > start:
                return tier_coefs, tier_fee
    return compiled.coefs, compiled.fee


def evaluate(compiled: Compiled, tokens: Mapping[str, int]) -> Decimal | str:
    """The USD cost of ``tokens`` (any classes), or the reason there is none.

    The general path: fills a missing whole from its parts (a lower bound),
    checks the parts against their wholes and the priced decomposition, and
    refuses a class that needs its own rate. Plain input/output calls take the
    inline path in :meth:`~otel_usecase.cost.prices.PriceBook.quote`.
    """
    counts = dict(tokens)
    for count in counts.values():
        if type(count) is not int or count < 0:
            return INCONSISTENT
    for whole, groups in _FILL:  # most specific first, so a filled whole fills its own whole
        sums = [sum(counts.get(part, 0) for part in group) for group in groups]
        if whole not in counts:
            if max(sums):
                counts[whole] = max(sums)
        elif max(sums) > counts[whole]:  # disjoint parts (cache reads + writes) above their whole
            return INCONSISTENT
    for name, count in counts.items():
        if count:
            for whole in INCLUDED_IN.get(name, ()):
                if count > counts.get(whole, 0):
                    return INCONSISTENT
    for terms in compiled.leaves:
        if sum(k * counts.get(name, 0) for name, k in terms) < 0:
            return INCONSISTENT
    unpriced = compiled.unpriced
    for name, count in counts.items():
        if count and name in unpriced:
            return unpriced[name]
    coefs, fee = in_force(compiled, counts.get("input", 0))
    total = fee
    for name, count in counts.items():
        coef = coefs.get(name)
        if coef is not None and count:
            total += coef * count
    return total
