"""The OTTL statements: recognise a model call, read its model and token counts, price one model.

The first four groups (:func:`prelude`) mirror the cost engine, key for key:
:func:`otel_usecase.cost.calls.is_model_call` and :func:`otel_usecase.cost.usage.read_usage`.
:func:`model_statement` prices one model with its per-token rates, guarded by
the model-name condition of :mod:`.model_match`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, TieredPrices

from ..cost.calls import MODEL_OPERATIONS, NOT_CALL_OPERATIONS
from ..cost.prices import Price, PriceBook
from ..cost.usage import (
    CACHE_READ_KEYS,
    CACHE_WRITE_KEYS,
    INPUT_KEYS,
    MODEL_KEYS,
    OUTPUT_KEYS,
    REASONING_KEYS,
    TOTAL_KEYS,
)
from .model_match import Atom, Literals, ModelCondition, Term, clause_terms, simplify
from .ottl import alternation, attr, cache, lit, per_token, re_literal, set_where

__all__ = ["ModelStatement", "model_statement", "prelude", "rate_terms", "rates_of", "same_model"]

_OPERATION: Final = "gen_ai.operation.name"
_SYSTEM: Final = "gen_ai.system"
_PROVIDER_NAME: Final = "gen_ai.provider.name"
_OI_KIND: Final = "openinference.span.kind"


@dataclass(frozen=True, slots=True)
class ModelStatement:
    """The statement that prices one model, and what it was made from."""

    names: tuple[str, ...]
    """The model names asked for that this statement prices."""
    price: Price
    statement: str
    notes: tuple[str, ...]
    """Caveats, written as comments above the statement."""


def rates_of(price: Price) -> tuple[object, ...]:
    return (
        price.input_mtok,
        price.output_mtok,
        price.cache_read_mtok,
        price.cache_write_mtok,
        getattr(price, "reasoning_mtok", None),
        getattr(price, "per_request", None),
        price.tiered,
    )


def same_model(a: Price, b: Price) -> bool:
    return (a.provider, a.model, rates_of(a)) == (b.provider, b.model, rates_of(b))


def prelude() -> tuple[tuple[str, tuple[str, ...]], ...]:
    call, model = cache("call"), cache("model")
    operation = attr(_OPERATION)
    kind = attr(_OI_KIND)
    model_ops = "^" + alternation(re_literal(op) for op in sorted(MODEL_OPERATIONS)) + "$"
    other_ops = "^" + alternation(re_literal(op) for op in sorted(NOT_CALL_OPERATIONS)) + "$"
    detect = (
        set_where(
            call,
            "true",
            " or ".join(f"{attr(k)} != nil" for k in (_OPERATION, _SYSTEM, _PROVIDER_NAME, _OI_KIND)),
        ),
        set_where(call, "false", f"{kind} != nil and not IsMatch({kind}, {lit('^(?i:llm|embedding)$')})"),
        set_where(call, "false", f"IsMatch({operation}, {lit(other_ops)})"),
        set_where(call, "true", f"IsMatch({operation}, {lit(model_ops)})"),
    )
    non_blank = lit(r"\S")
    names = tuple(
        set_where(model, f"ToLowerCase({attr(key)})", f"{call} == true and IsMatch({attr(key)}, {non_blank})")
        for key in reversed(MODEL_KEYS)
    )

    def first_of(name: str, keys: tuple[str, ...], default: str | None = None) -> tuple[str, ...]:
        target = cache(name)
        out = [] if default is None else [set_where(target, default, f"{model} != nil")]
        out += [
            set_where(target, f"Double({attr(key)})", f"{model} != nil and {attr(key)} != nil")
            for key in reversed(keys)
        ]
        return tuple(out)

    tokens = (
        first_of("input", INPUT_KEYS)
        + first_of("output", OUTPUT_KEYS)
        + first_of("cache_read", CACHE_READ_KEYS, "0.0")
        + first_of("cache_write", CACHE_WRITE_KEYS, "0.0")
        + first_of("reasoning", REASONING_KEYS, "0.0")
        + first_of("total", TOTAL_KEYS)
    )

    c = cache
    known = f"{c('total')} != nil and {c('input')} != nil and {c('output')} != nil"
    fixes = (
        set_where(c("cached"), f"{c('cache_read')} + {c('cache_write')}", f"{model} != nil"),
        set_where(c("input_fixed"), "true", f"{c('input')} != nil and {c('input')} < {c('cached')}"),
        set_where(c("input"), f"{c('input')} + {c('cached')}", f"{c('input_fixed')} == true"),
        set_where(c("output_fixed"), "true", f"{c('output')} != nil and {c('output')} < {c('reasoning')}"),
        set_where(c("output"), f"{c('output')} + {c('reasoning')}", f"{c('output_fixed')} == true"),
        set_where(c("add_in"), "0.0", known),
        set_where(c("add_in"), c("cached"), f"{c('add_in')} != nil and {c('input_fixed')} == nil"),
        set_where(c("add_out"), "0.0", f"{c('add_in')} != nil"),
        set_where(c("add_out"), c("reasoning"), f"{c('add_out')} != nil and {c('output_fixed')} == nil"),
        set_where(c("base"), f"{c('input')} + {c('output')}", f"{c('add_in')} != nil"),
        set_where(c("with_in"), f"{c('base')} + {c('add_in')}", f"{c('add_in')} != nil"),
        set_where(c("with_out"), f"{c('base')} + {c('add_out')}", f"{c('add_in')} != nil"),
        set_where(c("with_both"), f"{c('with_in')} + {c('add_out')}", f"{c('add_in')} != nil"),
        set_where(
            c("fix"),
            lit("input"),
            f"{c('add_in')} != nil and {c('add_in')} > 0.0 and {c('total')} == {c('with_in')}",
        ),
        set_where(
            c("fix"),
            lit("output"),
            f"{c('fix')} == nil and {c('add_out')} != nil and {c('add_out')} > 0.0"
            f" and {c('total')} == {c('with_out')}",
        ),
        set_where(
            c("fix"),
            lit("both"),
            f"{c('fix')} == nil and {c('add_in')} != nil and {c('add_in')} > 0.0 and {c('add_out')} > 0.0"
            f" and {c('total')} == {c('with_both')}",
        ),
        set_where(
            c("input"),
            f"{c('input')} + {c('add_in')}",
            f"{c('fix')} == {lit('input')} or {c('fix')} == {lit('both')}",
        ),
        set_where(
            c("output"),
            f"{c('output')} + {c('add_out')}",
            f"{c('fix')} == {lit('output')} or {c('fix')} == {lit('both')}",
        ),
        set_where(c("input"), c("cached"), f"{c('input')} == nil and {c('output')} != nil"),
        set_where(c("output"), c("reasoning"), f"{c('output')} == nil and {c('input')} != nil"),
    )
    return (
        ("1. Is this span one model call? (as otel_usecase.cost.calls.is_model_call)", detect),
        ("2. The model: response model, else request model, else llm.model_name; lower-cased.", names),
        (
            "3. Token counts as doubles, first present key wins; cached and reasoning parts default to 0.",
            tokens,
        ),
        (
            "4. Normalise as otel_usecase.cost.usage.read_usage, then default an unknown input or output.",
            fixes,
        ),
    )


def rate_terms(price: Price) -> list[str]:
    """The arithmetic terms of a price, in USD per token; [] when it has no token rates."""
    c = cache
    p_in, p_out = price.input_mtok, price.output_mtok
    p_read, p_write = price.cache_read_mtok, price.cache_write_mtok
    p_reason = getattr(price, "reasoning_mtok", None)
    per_request = getattr(price, "per_request", None)
    terms: list[str] = []
    if p_in is not None:
        parts = [c("input")]
        if p_read is not None:
            parts.append(c("cache_read"))
        if p_write is not None:
            parts.append(c("cache_write"))
        base = parts[0] if len(parts) == 1 else "(" + " - ".join(parts) + ")"
        terms.append(f"{base} * {per_token(p_in)}")
    if p_read is not None:
        terms.append(f"{c('cache_read')} * {per_token(p_read)}")
    if p_write is not None:
        terms.append(f"{c('cache_write')} * {per_token(p_write)}")
    if p_out is not None:
        out = f"({c('output')} - {c('reasoning')})" if p_reason is not None else c("output")
        terms.append(f"{out} * {per_token(p_out)}")
    if p_reason is not None:
        terms.append(f"{c('reasoning')} * {per_token(p_reason)}")
    if not terms:
        return []
    if per_request is not None:
        terms.append(per_token(per_request * 1_000_000))
    return terms


def model_statement(
    asked: list[str],
    price: Price,
    book: PriceBook,
    provider: str | None,
    probes: list[tuple[str, bool]],
) -> ModelStatement:
    notes: list[str] = []
    info = _model_info(price)
    own_names = list(dict.fromkeys(n.lower() for n in [*asked, price.model]))
    terms: list[Term] = [(Atom("^" + re_literal(n) + "$"),) for n in own_names]
    if info is not None:
        rule_terms = clause_terms(info.match)
        if rule_terms is None:
            notes.append("genai-prices' match rule for it is not expressible in RE2: exact names only.")
        else:
            terms.extend(rule_terms)
    condition = ModelCondition(tuple(terms), Literals())

    rates = rates_of(price)
    exact_out: list[str] = []
    prefix_out: list[str] = []
    for probe, is_prefix in probes:
        if not condition.matches(probe) or probe in own_names:
            continue
        other = book.lookup(probe, provider)
        if other is not None and rates_of(other) == rates:
            continue
        if is_prefix and any(n.startswith(probe) for n in own_names):
            continue  # excluding the prefix would exclude a name asked for
        (prefix_out if is_prefix else exact_out).append(probe)
    excluded = Literals(tuple(sorted(exact_out)), tuple(sorted(prefix_out)))
    # a rule's own literal that is excluded whole is dropped rather than excluded
    dropped = {"^" + re_literal(e) + "$" for e in excluded.exact} | {
        "^" + re_literal(p) for p in excluded.prefix
    }
    kept = [t for t in terms if not (len(t) == 1 and not t[0].negate and t[0].pattern in dropped)]
    still = ModelCondition(tuple(kept), Literals())
    leftover = Literals(
        tuple(e for e in excluded.exact if still.matches(e)),
        tuple(p for p in excluded.prefix if still.matches(p)),
    )
    condition = ModelCondition(simplify(kept), leftover)
    if exact_out or prefix_out:
        shown = sorted(exact_out) + [p + "*" for p in sorted(prefix_out)]
        notes.append("Not for names genai-prices prices differently: " + ", ".join(shown) + ".")

    if price.tiered:
        start = _first_tier_start(info)
        above = f" above {start:,} input tokens" if start is not None else ""
        notes.append(f"Tiered price: base tier only; calls{above} are priced at the base rate (too low).")
    if info is not None and not _static_price(info):
        notes.append("Its price changes by date or time of day: this is the price in force when generated.")

    where = f"{cache('cost')} == nil and {cache('input')} != nil and {condition.ottl()}"
    statement = set_where(cache("cost"), " + ".join(rate_terms(price)), where)
    return ModelStatement(names=tuple(asked), price=price, statement=statement, notes=tuple(notes))


def _model_info(price: Price) -> ModelInfo | None:
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


def _static_price(info: ModelInfo) -> bool:
    prices = info.prices
    return not isinstance(prices, list) or len(prices) <= 1


def _first_tier_start(info: ModelInfo | None) -> int | None:
    if info is None:
        return None
    prices = info.prices if not isinstance(info.prices, list) else info.prices[-1].prices
    starts = [
        tier.start
        for value in vars(prices).values()
        if isinstance(value, TieredPrices)
        for tier in value.tiers
    ]
    return min(starts) if starts else None
