"""Which models get a statement, with whose prices: the plan the YAML is rendered from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from .._log import logger
from ..cost.prices import PriceBook
from ..cost.token_classes import TOKEN_CLASSES, TokenClass
from .model_match import probes
from .ottl import attr, cache, set_where
from .rates import ModelRates, model_rates
from .statements import (
    NORMALISED,
    REQUIRED,
    ModelStatement,
    check_statements,
    cost_terms,
    model_statement,
    prelude,
    reason_statements,
)

__all__ = [
    "COST_ATTRIBUTE",
    "DEFAULT_MODELS",
    "PROCESSOR_ID",
    "UNPRICED_REASON_ATTRIBUTE",
    "TransformPlan",
    "book_source",
    "clean_names",
    "plan_transform",
    "read_classes",
    "transform_statements",
]

DEFAULT_MODELS: Final[tuple[str, ...]] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
)
"""Models priced when none are named: popular OpenAI, Anthropic and Google models."""

PROCESSOR_ID: Final = "transform/usecase_cost"
"""The component id of the generated transform processor."""

COST_ATTRIBUTE: Final = "gen_ai.usage.cost"
"""The span attribute the generated statements write: the call's cost in USD (double)."""

UNPRICED_REASON_ATTRIBUTE: Final = "usecase.cost.unpriced_reason"
"""Written instead of the cost when a matched model cannot price the call (``unknown token class audio``)."""


@dataclass(frozen=True, slots=True)
class TransformPlan:
    """Everything :func:`render_transform_processor` writes."""

    prelude: tuple[tuple[str, tuple[str, ...]], ...]
    """(comment, statements) groups that come before the per-model statements."""
    models: tuple[ModelStatement, ...]
    reasons: tuple[str, ...]
    """Unpriced reasons decided before pricing (a class the matched model has no rate for)."""
    checks: tuple[str, ...]
    """Unpriced reasons decided after pricing (counts genai-prices would refuse)."""
    finish: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    """(model, why) for the models asked for that got no statement."""
    source: str
    provider: str | None
    requested: tuple[str, ...] = ()
    """The model names asked for, cleaned (split on commas, de-duplicated)."""
    read: tuple[TokenClass, ...] = ()
    """The token classes whose counts the statements read (:func:`read_classes`)."""

    @property
    def statements(self) -> list[str]:
        out = [s for _, group in self.prelude for s in group]
        out.extend(m.match for m in self.models)
        out.extend(self.reasons)
        out.extend(m.cost for m in self.models)
        out.extend(self.checks)
        out.extend(self.finish)
        return out


def plan_transform(
    models: Sequence[str] | None = None,
    provider: str | None = None,
    prices: PriceBook | None = None,
) -> TransformPlan:
    """Build the statements for ``models`` (default :data:`DEFAULT_MODELS`).

    ``provider`` is passed to :meth:`PriceBook.lookup` (whose prices are used); a
    model without a price is skipped and reported in ``skipped`` (and logged).
    """
    book = prices if prices is not None else PriceBook()
    names = clean_names(models if models is not None else DEFAULT_MODELS)
    skipped: list[tuple[str, str]] = []
    found: list[tuple[list[str], ModelRates]] = []
    for name in names:
        price = book.lookup(name, provider)
        if price is None:
            where = f" at provider {provider!r}" if provider else ""
            skipped.append((name, f"no price{where} in {book_source(book)}"))
            continue
        rates = model_rates(price)
        if not cost_terms(rates):
            skipped.append((name, f"its price ({price.source}) has no token rates"))
            continue
        for entry in found:
            other = entry[1]
            if (other.price.provider, other.price.model, other.signature) == (
                price.provider,
                price.model,
                rates.signature,
            ):
                entry[0].append(name)
                break
        else:
            found.append(([name], rates))
    for name, why in skipped:
        logger.warning("otel-usecase: collector-config: skipping model %r: %s", name, why)

    known_names = list(probes())
    keys = _keys([rates for _, rates in found])
    statements = tuple(
        model_statement(asked, rates, key, book, provider, known_names)
        for (asked, rates), key in zip(found, keys, strict=True)
    )
    read = read_classes(statements)
    return TransformPlan(
        prelude=prelude(read),
        models=statements,
        reasons=reason_statements(read, statements),
        checks=check_statements(statements),
        finish=(
            set_where(attr(COST_ATTRIBUTE), cache("cost"), f"{cache('cost')} != nil"),
            set_where(
                attr(UNPRICED_REASON_ATTRIBUTE),
                cache("unpriced_reason"),
                f"{cache('unpriced_reason')} != nil",
            ),
        ),
        skipped=tuple(skipped),
        source=book_source(book),
        provider=provider,
        requested=tuple(names),
        read=read,
    )


def read_classes(models: Sequence[ModelStatement]) -> tuple[TokenClass, ...]:
    """The token classes whose counts the statements read, in table order.

    Input and output and the parts step 4 normalises, always; any other class
    only when a model of the plan prices it, or when one cannot price it and
    must leave such a call unpriced. So a plan of text-only models reads no
    image or video counts (those fall back to the input rate anyway).
    """
    needed = set(REQUIRED) | {part for parts in NORMALISED.values() for part in parts}
    for model in models:
        needed.update(model.rates.rates)
        needed.update(c.name for c in model.rates.unpriceable())
    return tuple(c for c in TOKEN_CLASSES if c.name in needed)


def _keys(found: Sequence[ModelRates]) -> list[str]:
    """The ``cache["price"]`` value of each model: ``provider/model``, made unique."""
    keys: list[str] = []
    for rates in found:
        price = rates.price
        key = f"{price.provider}/{price.model}" if price.provider else price.model
        base, n = key, 1
        while key in keys:
            n += 1
            key = f"{base}#{n}"
        keys.append(key)
    return keys


def transform_statements(
    models: Sequence[str] | None = None,
    provider: str | None = None,
    prices: PriceBook | None = None,
) -> list[str]:
    """The OTTL statements (span context) that write ``gen_ai.usage.cost`` on LLM spans."""
    return plan_transform(models, provider, prices).statements


def book_source(book: PriceBook) -> str:
    source = f"genai-prices {book.genai_prices_version}"
    if book.overrides_path:
        source += f" and {book.overrides_path}"
    return source


def clean_names(models: Iterable[str]) -> list[str]:
    names: list[str] = []
    for raw in models:
        for part in raw.split(","):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    return names
