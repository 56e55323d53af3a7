"""The OTTL statements: recognise a model call, read its token counts, pick its price, price it.

The first four groups (:func:`prelude`) mirror the cost engine, key for key:
:func:`otel_usecase.cost.calls.is_model_call` and :func:`otel_usecase.cost.usage.read_usage`;
the counts read are those of the token classes of
:data:`~otel_usecase.cost.token_classes.TOKEN_CLASSES` the plan needs, each from
the class's own ``span_keys``. Then, per model, :func:`model_statement` writes
two statements: one that recognises the model by name (the condition of
:mod:`.model_match`) and one that prices it, class by class, with the parts
split as genai-prices splits them (:func:`.rates.leaves`). :func:`reason_statements`
leaves a call unpriced, with the reason, when it has tokens of a class its model
has no rate for and that must not be priced as text (audio ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from genai_prices.types import ModelInfo, TieredPrices

from ..cost.call import REASON_INCONSISTENT
from ..cost.calls import MODEL_OPERATIONS, NOT_CALL_OPERATIONS
from ..cost.prices import Price, PriceBook
from ..cost.token_classes import INPUT, OUTPUT, TokenClass, unknown_class_reason
from ..cost.usage import MODEL_KEYS, TOTAL_KEYS
from .model_match import Atom, Literals, ModelCondition, Term, clause_terms, simplify
from .ottl import alternation, attr, cache, lit, per_token, re_literal, set_where
from .rates import Combination, ModelRates, leaves, model_info, model_rates

__all__ = [
    "INCONSISTENT",
    "NORMALISED",
    "REQUIRED",
    "ModelStatement",
    "check_statements",
    "cost_terms",
    "model_statement",
    "prelude",
    "reason_statements",
    "unknown_class_reason",
]

_OPERATION: Final = "gen_ai.operation.name"
_SYSTEM: Final = "gen_ai.system"
_PROVIDER_NAME: Final = "gen_ai.provider.name"
_OI_KIND: Final = "openinference.span.kind"

REQUIRED: Final[tuple[str, ...]] = (INPUT.name, OUTPUT.name)
"""The classes every call has; unknown (nil) when absent, not 0."""
NORMALISED: Final[Mapping[str, tuple[str, ...]]] = {
    INPUT.name: ("cache_read", "cache_write"),
    OUTPUT.name: ("reasoning",),
}
"""The parts :func:`otel_usecase.cost.usage.read_usage` adds back to a count that cannot include them.

After step 4 a count is never smaller than these parts, so its leaf needs no check.
"""

INCONSISTENT: Final = REASON_INCONSISTENT
"""The unpriced reason of a call whose parts exceed the count they are part of."""


@dataclass(frozen=True, slots=True)
class ModelStatement:
    """The statements of one model, and what they were made from."""

    names: tuple[str, ...]
    """The model names asked for that these statements price."""
    rates: ModelRates
    key: str
    """The value the match statement writes to ``cache["price"]`` (``openai/gpt-4o``)."""
    match: str
    """``cache["price"]`` set to :attr:`key` when the span's model is this one."""
    cost: str
    """``cache["cost"]`` computed with this model's rates."""
    notes: tuple[str, ...]
    """Caveats, written as comments above the statements."""

    @property
    def price(self) -> Price:
        return self.rates.price

    @property
    def statements(self) -> tuple[str, str]:
        return (self.match, self.cost)


def prelude(read: Sequence[TokenClass]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Groups 1-4: is it a call, its model, the counts of the classes in ``read``, normalised."""
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

    tokens: tuple[str, ...] = ()
    for token_class in read:
        default = None if token_class.name in REQUIRED else "0.0"
        tokens += first_of(token_class.name, token_class.span_keys, default)
    tokens += first_of("total", TOTAL_KEYS)

    c = cache
    (reasoning,) = NORMALISED[OUTPUT.name]
    known = f"{c('total')} != nil and {c('input')} != nil and {c('output')} != nil"
    fixes = (
        set_where(c("cached"), " + ".join(c(n) for n in NORMALISED[INPUT.name]), f"{model} != nil"),
        set_where(c("input_fixed"), "true", f"{c('input')} != nil and {c('input')} < {c('cached')}"),
        set_where(c("input"), f"{c('input')} + {c('cached')}", f"{c('input_fixed')} == true"),
        set_where(c("output_fixed"), "true", f"{c('output')} != nil and {c('output')} < {c(reasoning)}"),
        set_where(c("output"), f"{c('output')} + {c(reasoning)}", f"{c('output_fixed')} == true"),
        set_where(c("add_in"), "0.0", known),
        set_where(c("add_in"), c("cached"), f"{c('add_in')} != nil and {c('input_fixed')} == nil"),
        set_where(c("add_out"), "0.0", f"{c('add_in')} != nil"),
        set_where(c("add_out"), c(reasoning), f"{c('add_out')} != nil and {c('output_fixed')} == nil"),
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
        set_where(c("output"), c(reasoning), f"{c('output')} == nil and {c('input')} != nil"),
    )
    return (
        ("1. Is this span one model call? (as otel_usecase.cost.calls.is_model_call)", detect),
        ("2. The model: response model, else request model, else llm.model_name; lower-cased.", names),
        (
            "3. Token counts by class, as doubles, first present key wins; a missing part is 0.",
            tokens,
        ),
        (
            "4. Normalise as otel_usecase.cost.usage.read_usage, then default an unknown input or output.",
            fixes,
        ),
    )


def model_statement(
    asked: list[str],
    rates: ModelRates,
    key: str,
    book: PriceBook,
    provider: str | None,
    probes: list[tuple[str, bool]],
) -> ModelStatement:
    """The match and cost statements of one model (see :class:`ModelStatement`)."""
    price = rates.price
    notes: list[str] = []
    info = model_info(price)
    own_names = list(dict.fromkeys(n.lower() for n in [*asked, price.model]))
    terms: list[Term] = [(Atom("^" + re_literal(n) + "$"),) for n in own_names]
    if info is not None:
        rule_terms = clause_terms(info.match)
        if rule_terms is None:
            notes.append("genai-prices' match rule for it is not expressible in RE2: exact names only.")
        else:
            terms.extend(rule_terms)
    condition = ModelCondition(tuple(terms), Literals())

    exact_out: list[str] = []
    prefix_out: list[str] = []
    for probe, is_prefix in probes:
        if not condition.matches(probe) or probe in own_names:
            continue
        other = book.lookup(probe, provider)
        if other is not None and model_rates(other).signature == rates.signature:
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
    chosen = cache("price")
    match = set_where(chosen, lit(key), f"{chosen} == nil and {cache('input')} != nil and {condition.ottl()}")
    mine = f"{chosen} == {lit(key)} and {cache('unpriced_reason')} == nil"
    checks = [f"{_combination(leaf)} >= 0.0" for leaf in _checked_leaves(rates)]
    cost = set_where(cache("cost"), " + ".join(cost_terms(rates)), " and ".join([mine, *checks]))
    return ModelStatement(
        names=tuple(asked), rates=rates, key=key, match=match, cost=cost, notes=tuple(notes)
    )


def cost_terms(rates: ModelRates) -> list[str]:
    """The terms of a price, in USD per token: each priced class's leaf count times its rate; [] if none."""
    terms = []
    for name, leaf in leaves(rates.rates).items():
        count = _combination(leaf)
        if len(leaf) > 1:
            count = f"({count})"
        terms.append(f"{count} * {per_token(rates.rates[name])}")
    if terms and rates.per_request is not None:
        terms.append(per_token(rates.per_request * 1_000_000))
    return terms


def _checked_leaves(rates: ModelRates) -> list[Combination]:
    """The leaves a bad span can make negative (genai-prices refuses to price those).

    A count's leaf that subtracts only the parts step 4 normalises is never negative.
    """
    out = []
    for name, leaf in leaves(rates.rates).items():
        subtracted = {part for part, coefficient in leaf.items() if coefficient < 0}
        if subtracted and not subtracted <= set(NORMALISED.get(name, ())):
            out.append(leaf)
    return out


def _combination(leaf: Combination) -> str:
    """``{"input": 1, "cache_read": -1}`` -> ``cache["input"] - cache["cache_read"]`` (the leaf's own class first)."""
    text = ""
    for name, coefficient in leaf.items():
        size = abs(coefficient)
        term = cache(name) if size == 1 else f"{size}.0 * {cache(name)}"
        if not text:
            text = term if coefficient > 0 else f"0.0 - {term}"
        else:
            text += f" {'+' if coefficient > 0 else '-'} {term}"
    return text


def reason_statements(read: Iterable[TokenClass], models: Sequence[ModelStatement]) -> tuple[str, ...]:
    """Leave a call unpriced, with the reason, when its model has no rate for a class it must not price as text.

    One statement per such class, not per model: the models that lack the rate
    are named by their ``cache["price"]`` key, or the ones that have it,
    whichever list is shorter.
    """
    chosen, reason = cache("price"), cache("unpriced_reason")
    out = []
    for token_class in read:
        if not token_class.needs_own_price:
            continue
        lacking = [m.key for m in models if token_class in m.rates.unpriceable()]
        if not lacking:
            continue
        having = [m.key for m in models if m.key not in lacking]
        if not having:
            which = f"{chosen} != nil"
        elif len(lacking) <= len(having):
            which = f"IsMatch({chosen}, {lit(_exactly(lacking))})"
        else:
            which = f"{chosen} != nil and not IsMatch({chosen}, {lit(_exactly(having))})"
        out.append(
            set_where(
                reason,
                lit(unknown_class_reason(token_class)),
                f"{reason} == nil and {cache(token_class.name)} > 0.0 and {which}",
            )
        )
    return tuple(out)


def check_statements(models: Sequence[ModelStatement]) -> tuple[str, ...]:
    """The reason of a call whose model matched but whose counts failed a leaf check (none if no checks)."""
    if not any(_checked_leaves(m.rates) for m in models):
        return ()
    chosen, reason = cache("price"), cache("unpriced_reason")
    return (
        set_where(
            reason, lit(INCONSISTENT), f"{chosen} != nil and {cache('cost')} == nil and {reason} == nil"
        ),
    )


def _exactly(keys: Sequence[str]) -> str:
    return "^" + alternation(re_literal(k) for k in keys) + "$"


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
