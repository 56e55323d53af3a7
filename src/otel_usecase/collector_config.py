"""Price LLM spans inside an OpenTelemetry Collector: OTTL generated from the price data.

Why this exists: some teams want the cost on the span itself (``gen_ai.usage.cost``,
USD) and a cost metric out of the collector they already run, without sending
anything to ``otel-usecase serve``. The collector's ``transform`` processor can do
the arithmetic with OTTL, but someone has to write one statement per model with
the right prices, and keep them right. This module writes them from the same
:class:`~otel_usecase.pricing.PriceBook` the cost engine uses, so the two agree
(``tests/test_collector_config.py`` runs the generated statements on sample spans
and compares them with ``PriceBook.cost``).

Command line (to be wired as a subcommand of ``otel-usecase``)::

    otel-usecase collector-config transform [--models gpt-4o,gpt-4o-mini ...] [--provider openai]
        [--prices FILE] [--update CONFIG.yaml | --check CONFIG.yaml]

prints the ``processors: transform/usecase_cost: ...`` YAML block (see
:func:`main`); ``--update`` rewrites the generated block of a collector config in
place, ``--check`` exits 1 when that block is stale.

What the statements do, in order, all in the ``span`` context and all with one
``where`` clause each:

1. Decide whether the span is one model call, as :func:`otel_usecase.calls.is_model_call`
   does (a model ``gen_ai.operation.name``, not an agent/tool operation,
   OpenInference ``LLM``/``EMBEDDING``, or a GenAI system/provider with usage).
2. Take the model: ``gen_ai.response.model``, else ``gen_ai.request.model``, else
   ``llm.model_name``, lower-cased (genai-prices matches lower-cased names).
3. Read the token counts as doubles (``Double(...)``; OTTL arithmetic needs both
   sides of one type) into the per-span ``cache``, first present key wins, in the
   key order of :mod:`otel_usecase.usage`; cache reads/writes and reasoning
   default to 0 when absent.
4. Apply :func:`otel_usecase.usage.read_usage`'s two normalisations (cached parts
   added to an input count that cannot include them; a reported total that only
   adds up with them), then the engine's defaults for an unknown input or output.
5. One statement per model computes the cost with the model's per-token prices
   (printed as exact decimals from the Decimal prices), guarded by the model
   name (genai-prices' own match rule for that model, translated to RE2, minus
   any known name genai-prices prices differently) and by "not priced yet", so
   the first matching statement wins.
6. Copy the cost to ``gen_ai.usage.cost`` (a double, USD).

Limits, said in the generated comments too: matching is by model name only (the
provider on the span is not checked: ``--provider`` picks whose prices are used);
a tiered price uses its base tier (long prompts of such models are under-priced);
prices that change by date or time of day are the ones in force at generation;
only token usage is priced (as in the engine); a model outside the list is left
without ``gen_ai.usage.cost``.

This module needs no YAML library: it writes the YAML itself.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

from genai_prices import data_snapshot
from genai_prices.types import (
    ClauseAnd,
    ClauseContains,
    ClauseEndsWith,
    ClauseEquals,
    ClauseOr,
    ClauseRegex,
    ClauseStartsWith,
    ModelInfo,
    TieredPrices,
)

from ._log import logger
from .calls import MODEL_OPERATIONS, NOT_CALL_OPERATIONS
from .pricing import Price, PriceBook, PricesFileError
from .usage import (
    CACHE_READ_KEYS,
    CACHE_WRITE_KEYS,
    INPUT_KEYS,
    MODEL_KEYS,
    OUTPUT_KEYS,
    REASONING_KEYS,
    TOTAL_KEYS,
)

__all__ = [
    "BEGIN_MARKER",
    "COST_ATTRIBUTE",
    "DEFAULT_MODELS",
    "END_MARKER",
    "PROCESSOR_ID",
    "ModelStatement",
    "TransformPlan",
    "add_transform_arguments",
    "main",
    "main_transform",
    "plan_transform",
    "render_transform_processor",
    "run_transform",
    "transform_statements",
    "update_config_text",
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

BEGIN_MARKER: Final = "# BEGIN GENERATED: otel-usecase collector-config transform"
END_MARKER: Final = "# END GENERATED: otel-usecase collector-config transform"
"""Comment lines around the generated block in a collector config (see ``--update``)."""

COMMAND: Final = "otel-usecase collector-config transform"

# Token attribute keys, first present key wins: the very tuples otel_usecase.usage reads.

_OPERATION: Final = "gen_ai.operation.name"
_SYSTEM: Final = "gen_ai.system"
_PROVIDER_NAME: Final = "gen_ai.provider.name"
_OI_KIND: Final = "openinference.span.kind"

# -- OTTL building blocks -----------------------------------------------------


def _lit(text: str) -> str:
    """An OTTL string literal (OTTL unquotes strings as Go does; JSON escapes are valid Go)."""
    return json.dumps(text, ensure_ascii=True)


def _attr(key: str) -> str:
    return f"attributes[{_lit(key)}]"


def _cache(name: str) -> str:
    return f"cache[{_lit(name)}]"


def _set(target: str, value: str, where: str) -> str:
    return f"set({target}, {value}) where {where}"


def _re_literal(text: str) -> str:
    """``text`` as an RE2 (and Python) regex matching it literally, readable in YAML.

    Metacharacters go in brackets (``[.]``) rather than behind backslashes, so the
    common model names need no escaping at all.
    """
    out = []
    for char in text:
        if char in ".+*?()|{}$":
            out.append(f"[{char}]")
        elif char in "\\^[]":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _alternation(items: Iterable[str]) -> str:
    """Regex alternatives in a non-capturing group (no group for a single one)."""
    unique = list(dict.fromkeys(items))
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def _per_token(per_million: Decimal) -> str:
    """USD per token as a plain OTTL float literal, exact: 2.50 per 1M -> ``0.0000025``."""
    text = format(per_million.scaleb(-6).normalize(), "f")
    return text if "." in text else text + ".0"


# -- model name conditions ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Atom:
    """One ``IsMatch(cache["model"], pattern)``, maybe negated; pattern is RE2 and Python."""

    pattern: str
    negate: bool = False

    def matches(self, name: str) -> bool:
        return (re.search(self.pattern, name) is not None) != self.negate


_Term = tuple[_Atom, ...]  # atoms joined by "and"

_RE2_UNSUPPORTED: Final = re.compile(r"\(\?[=!<>]|\(\?P=|\\[1-9]|[*+?}][+]")
_NEGATIVE_LOOKAHEAD: Final = re.compile(r"\^\(\?!(?P<body>.*)\)")


@dataclass(frozen=True, slots=True)
class _Literals:
    """Literal names and prefixes, lower-cased: the common form of a match rule."""

    exact: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()

    def patterns(self) -> list[str]:
        found = []
        if self.exact:
            found.append("^" + _alternation(_re_literal(e) for e in self.exact) + "$")
        if self.prefix:
            found.append("^" + _alternation(_re_literal(p) for p in self.prefix))
        return found


def _clause_terms(clause: object) -> list[_Term] | None:
    """A genai-prices match rule as OR-of-AND atoms, or None if RE2 can't express it."""
    if isinstance(clause, ClauseEquals):
        return [(_Atom("^" + _re_literal(clause.equals.lower()) + "$"),)]
    if isinstance(clause, ClauseStartsWith):
        return [(_Atom("^" + _re_literal(clause.starts_with.lower())),)]
    if isinstance(clause, ClauseEndsWith):
        return [(_Atom(_re_literal(clause.ends_with.lower()) + "$"),)]
    if isinstance(clause, ClauseContains):
        return [(_Atom(_re_literal(clause.contains.lower())),)]
    if isinstance(clause, ClauseRegex):
        return _regex_terms(clause.regex)
    if isinstance(clause, ClauseOr):
        terms: list[_Term] = []
        for child in clause.or_:
            child_terms = _clause_terms(child)
            if child_terms is None:
                return None
            terms.extend(child_terms)
        return terms
    if isinstance(clause, ClauseAnd):
        product: list[_Term] = [()]
        for child in clause.and_:
            child_terms = _clause_terms(child)
            if child_terms is None:
                return None
            product = [left + right for left in product for right in child_terms]
            if len(product) > 16:
                return None
        return product
    return None


def _regex_terms(regex: str) -> list[_Term] | None:
    lookahead = _NEGATIVE_LOOKAHEAD.fullmatch(regex)
    if lookahead is not None:  # "^(?!X)" holds exactly when "^(?:X)" does not match
        body = lookahead.group("body")
        if _re2_safe(body):
            return [(_Atom("^(?:" + body + ")", negate=True),)]
        return None
    return [(_Atom(regex),)] if _re2_safe(regex) else None


def _re2_safe(regex: str) -> bool:
    if _RE2_UNSUPPORTED.search(regex):
        return False
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _ModelCondition:
    """Which lower-cased model names one statement prices."""

    terms: tuple[_Term, ...]
    excluded: _Literals

    def matches(self, name: str) -> bool:
        if any(re.search(p, name) for p in self.excluded.patterns()):
            return False
        return any(all(atom.matches(name) for atom in term) for term in self.terms)

    def ottl(self) -> str:
        model = _cache("model")
        simple = [term[0].pattern for term in self.terms if len(term) == 1 and not term[0].negate]
        parts = []
        if simple:
            parts.append(f"IsMatch({model}, {_lit(_join_patterns(simple))})")
        for term in self.terms:
            if len(term) == 1 and not term[0].negate:
                continue
            atoms = [
                ("not " if atom.negate else "") + f"IsMatch({model}, {_lit(atom.pattern)})" for atom in term
            ]
            parts.append("(" + " and ".join(atoms) + ")" if len(atoms) > 1 else atoms[0])
        text = parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"
        excluded = self.excluded.patterns()
        if excluded:
            text += f" and not IsMatch({model}, {_lit(_join_patterns(excluded))})"
        return text


def _join_patterns(patterns: Sequence[str]) -> str:
    return patterns[0] if len(patterns) == 1 else "|".join(patterns)


def _simplify(terms: Iterable[_Term]) -> tuple[_Term, ...]:
    """Merge the single exact/prefix atoms into one alternation each, keep the rest."""
    exact: list[str] = []
    prefix: list[str] = []
    rest: list[_Term] = []
    literal = re.compile(r"\^((?:[^\\\[\].+*?()|{}$^]|\[[.+*?()|{}$]\]|\\[\\^\[\]])*)(\$?)")
    for term in terms:
        if len(term) == 1 and not term[0].negate:
            match = literal.fullmatch(term[0].pattern)
            if match is not None:
                (exact if match.group(2) else prefix).append(match.group(1))
                continue
        rest.append(term)
    # an exact name that a prefix already covers adds nothing (unescaped forms compare alike)
    exact = [e for e in exact if not any(e.startswith(p) for p in prefix)]
    merged: list[_Term] = []
    if exact:
        merged.append((_Atom("^" + _alternation(exact) + "$"),))
    if prefix:
        merged.append((_Atom("^" + _alternation(prefix)),))
    return tuple(merged + list(dict.fromkeys(rest)))


# -- the plan -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelStatement:
    """The statement that prices one model, and what it was made from."""

    names: tuple[str, ...]
    """The model names asked for that this statement prices."""
    price: Price
    statement: str
    notes: tuple[str, ...]
    """Caveats, written as comments above the statement."""


@dataclass(frozen=True, slots=True)
class TransformPlan:
    """Everything :func:`render_transform_processor` writes."""

    prelude: tuple[tuple[str, tuple[str, ...]], ...]
    """(comment, statements) groups that come before the per-model statements."""
    models: tuple[ModelStatement, ...]
    finish: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    """(model, why) for the models asked for that got no statement."""
    source: str
    provider: str | None
    requested: tuple[str, ...] = ()
    """The model names asked for, cleaned (split on commas, de-duplicated)."""

    @property
    def statements(self) -> list[str]:
        out = [s for _, group in self.prelude for s in group]
        out.extend(m.statement for m in self.models)
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
    names = _clean_names(models if models is not None else DEFAULT_MODELS)
    skipped: list[tuple[str, str]] = []
    found: list[tuple[list[str], Price]] = []
    for name in names:
        price = book.lookup(name, provider)
        if price is None:
            where = f" at provider {provider!r}" if provider else ""
            skipped.append((name, f"no price{where} in {_book_source(book)}"))
            continue
        if _rate_terms(price) == []:
            skipped.append((name, f"its price ({price.source}) has no token rates"))
            continue
        for entry in found:
            if _same_model(entry[1], price):
                entry[0].append(name)
                break
        else:
            found.append(([name], price))
    for name, why in skipped:
        logger.warning("otel-usecase: collector-config: skipping model %r: %s", name, why)

    probes = list(_probes())
    statements = tuple(_model_statement(asked, price, book, provider, probes) for asked, price in found)
    return TransformPlan(
        prelude=_prelude(),
        models=statements,
        finish=(_set(_attr(COST_ATTRIBUTE), _cache("cost"), f"{_cache('cost')} != nil"),),
        skipped=tuple(skipped),
        source=_book_source(book),
        provider=provider,
        requested=tuple(names),
    )


def transform_statements(
    models: Sequence[str] | None = None,
    provider: str | None = None,
    prices: PriceBook | None = None,
) -> list[str]:
    """The OTTL statements (span context) that write ``gen_ai.usage.cost`` on LLM spans."""
    return plan_transform(models, provider, prices).statements


def render_transform_processor(
    models: Sequence[str] | None = None,
    provider: str | None = None,
    prices: PriceBook | None = None,
    *,
    indent: int = 0,
    processors_key: bool = True,
) -> str:
    """The YAML of the ``transform/usecase_cost`` processor, with comments.

    With ``processors_key`` the block starts with ``processors:`` (a config
    fragment of its own); without it, it is the component alone, indented by
    ``indent`` spaces, ready to sit under an existing ``processors:``.
    """
    plan = plan_transform(models, provider, prices)
    return _render(plan, indent=indent, processors_key=processors_key)


def _render(plan: TransformPlan, *, indent: int, processors_key: bool) -> str:
    lines: list[str] = []
    pad = " " * indent
    if processors_key:
        lines.append(pad + "processors:")
        pad += "  "
    regen = COMMAND
    if plan.requested != DEFAULT_MODELS:
        regen += " --models " + ",".join(plan.requested)
    if plan.provider:
        regen += f" --provider {plan.provider}"
    lines += [
        f"{pad}# Generated by otel-usecase from {plan.source}; do not edit by hand. Regenerate with",
        f"{pad}#   {regen} [--prices FILE] [--update CONFIG]",
        f"{pad}# Writes {COST_ATTRIBUTE} (USD, double) on LLM spans of the models below; other spans are",
        f"{pad}# left alone. Matching is by model name only; the provider attribute is not checked.",
    ]
    for name, why in plan.skipped:
        lines.append(f"{pad}# Skipped {name}: {why}.")
    lines += [
        f"{pad}{PROCESSOR_ID}:",
        f"{pad}  error_mode: ignore",
        f"{pad}  trace_statements:",
        f"{pad}    - context: span",
        f"{pad}      statements:",
    ]
    item = pad + "        "
    for comment, group in plan.prelude:
        lines.append(f"{item}# {comment}")
        lines += [f"{item}- {_yaml_single(s)}" for s in group]
    lines.append(f"{item}# 5. One statement per model: the first that matches prices the span.")
    for model in plan.models:
        lines.append(f"{item}# {_describe(model)}")
        lines += [f"{item}#   {note}" for note in model.notes]
        lines.append(f"{item}- {_yaml_single(model.statement)}")
    lines.append(f"{item}# 6. The result.")
    lines += [f"{item}- {_yaml_single(s)}" for s in plan.finish]
    return "\n".join(lines) + "\n"


def _yaml_single(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _describe(model: ModelStatement) -> str:
    p = model.price
    asked = ", ".join(model.names)
    head = f"{asked} -> {p.provider + '/' if p.provider else ''}{p.model}:"
    parts = []
    for label, value in (
        ("input", p.input_mtok),
        ("cache read", p.cache_read_mtok),
        ("cache write", p.cache_write_mtok),
        ("output", p.output_mtok),
        ("reasoning", getattr(p, "reasoning_mtok", None)),
    ):
        if value is not None:
            parts.append(f"{label} ${value}")
    text = f"{head} {', '.join(parts)} per 1M tokens"
    per_request = getattr(p, "per_request", None)
    if per_request is not None:
        text += f", ${per_request} per request"
    return text


def _book_source(book: PriceBook) -> str:
    source = f"genai-prices {book.genai_prices_version}"
    if book.overrides_path:
        source += f" and {book.overrides_path}"
    return source


def _clean_names(models: Iterable[str]) -> list[str]:
    names: list[str] = []
    for raw in models:
        for part in raw.split(","):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    return names


def _rates(price: Price) -> tuple[object, ...]:
    return (
        price.input_mtok,
        price.output_mtok,
        price.cache_read_mtok,
        price.cache_write_mtok,
        getattr(price, "reasoning_mtok", None),
        getattr(price, "per_request", None),
        price.tiered,
    )


def _same_model(a: Price, b: Price) -> bool:
    return (a.provider, a.model, _rates(a)) == (b.provider, b.model, _rates(b))


# -- statements ---------------------------------------------------------------


def _prelude() -> tuple[tuple[str, tuple[str, ...]], ...]:
    call, model = _cache("call"), _cache("model")
    operation = _attr(_OPERATION)
    kind = _attr(_OI_KIND)
    model_ops = "^" + _alternation(_re_literal(op) for op in sorted(MODEL_OPERATIONS)) + "$"
    other_ops = "^" + _alternation(_re_literal(op) for op in sorted(NOT_CALL_OPERATIONS)) + "$"
    detect = (
        _set(
            call,
            "true",
            " or ".join(f"{_attr(k)} != nil" for k in (_OPERATION, _SYSTEM, _PROVIDER_NAME, _OI_KIND)),
        ),
        _set(call, "false", f"{kind} != nil and not IsMatch({kind}, {_lit('^(?i:llm|embedding)$')})"),
        _set(call, "false", f"IsMatch({operation}, {_lit(other_ops)})"),
        _set(call, "true", f"IsMatch({operation}, {_lit(model_ops)})"),
    )
    non_blank = _lit(r"\S")
    names = tuple(
        _set(model, f"ToLowerCase({_attr(key)})", f"{call} == true and IsMatch({_attr(key)}, {non_blank})")
        for key in reversed(MODEL_KEYS)
    )

    def first_of(name: str, keys: tuple[str, ...], default: str | None = None) -> tuple[str, ...]:
        target = _cache(name)
        out = [] if default is None else [_set(target, default, f"{model} != nil")]
        out += [
            _set(target, f"Double({_attr(key)})", f"{model} != nil and {_attr(key)} != nil")
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

    c = _cache
    known = f"{c('total')} != nil and {c('input')} != nil and {c('output')} != nil"
    fixes = (
        _set(c("cached"), f"{c('cache_read')} + {c('cache_write')}", f"{model} != nil"),
        _set(c("input_fixed"), "true", f"{c('input')} != nil and {c('input')} < {c('cached')}"),
        _set(c("input"), f"{c('input')} + {c('cached')}", f"{c('input_fixed')} == true"),
        _set(c("output_fixed"), "true", f"{c('output')} != nil and {c('output')} < {c('reasoning')}"),
        _set(c("output"), f"{c('output')} + {c('reasoning')}", f"{c('output_fixed')} == true"),
        _set(c("add_in"), "0.0", known),
        _set(c("add_in"), c("cached"), f"{c('add_in')} != nil and {c('input_fixed')} == nil"),
        _set(c("add_out"), "0.0", f"{c('add_in')} != nil"),
        _set(c("add_out"), c("reasoning"), f"{c('add_out')} != nil and {c('output_fixed')} == nil"),
        _set(c("base"), f"{c('input')} + {c('output')}", f"{c('add_in')} != nil"),
        _set(c("with_in"), f"{c('base')} + {c('add_in')}", f"{c('add_in')} != nil"),
        _set(c("with_out"), f"{c('base')} + {c('add_out')}", f"{c('add_in')} != nil"),
        _set(c("with_both"), f"{c('with_in')} + {c('add_out')}", f"{c('add_in')} != nil"),
        _set(
            c("fix"),
            _lit("input"),
            f"{c('add_in')} != nil and {c('add_in')} > 0.0 and {c('total')} == {c('with_in')}",
        ),
        _set(
            c("fix"),
            _lit("output"),
            f"{c('fix')} == nil and {c('add_out')} != nil and {c('add_out')} > 0.0"
            f" and {c('total')} == {c('with_out')}",
        ),
        _set(
            c("fix"),
            _lit("both"),
            f"{c('fix')} == nil and {c('add_in')} != nil and {c('add_in')} > 0.0 and {c('add_out')} > 0.0"
            f" and {c('total')} == {c('with_both')}",
        ),
        _set(
            c("input"),
            f"{c('input')} + {c('add_in')}",
            f"{c('fix')} == {_lit('input')} or {c('fix')} == {_lit('both')}",
        ),
        _set(
            c("output"),
            f"{c('output')} + {c('add_out')}",
            f"{c('fix')} == {_lit('output')} or {c('fix')} == {_lit('both')}",
        ),
        _set(c("input"), c("cached"), f"{c('input')} == nil and {c('output')} != nil"),
        _set(c("output"), c("reasoning"), f"{c('output')} == nil and {c('input')} != nil"),
    )
    return (
        ("1. Is this span one model call? (as otel_usecase.calls.is_model_call)", detect),
        ("2. The model: response model, else request model, else llm.model_name; lower-cased.", names),
        (
            "3. Token counts as doubles, first present key wins; cached and reasoning parts default to 0.",
            tokens,
        ),
        ("4. Normalise as otel_usecase.usage.read_usage, then default an unknown input or output.", fixes),
    )


def _rate_terms(price: Price) -> list[str]:
    """The arithmetic terms of a price, in USD per token; [] when it has no token rates."""
    c = _cache
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
        terms.append(f"{base} * {_per_token(p_in)}")
    if p_read is not None:
        terms.append(f"{c('cache_read')} * {_per_token(p_read)}")
    if p_write is not None:
        terms.append(f"{c('cache_write')} * {_per_token(p_write)}")
    if p_out is not None:
        out = f"({c('output')} - {c('reasoning')})" if p_reason is not None else c("output")
        terms.append(f"{out} * {_per_token(p_out)}")
    if p_reason is not None:
        terms.append(f"{c('reasoning')} * {_per_token(p_reason)}")
    if not terms:
        return []
    if per_request is not None:
        terms.append(_per_token(per_request * 1_000_000))
    return terms


def _model_statement(
    asked: list[str],
    price: Price,
    book: PriceBook,
    provider: str | None,
    probes: list[tuple[str, bool]],
) -> ModelStatement:
    notes: list[str] = []
    info = _model_info(price)
    own_names = list(dict.fromkeys(n.lower() for n in [*asked, price.model]))
    terms: list[_Term] = [(_Atom("^" + _re_literal(n) + "$"),) for n in own_names]
    if info is not None:
        rule_terms = _clause_terms(info.match)
        if rule_terms is None:
            notes.append("genai-prices' match rule for it is not expressible in RE2: exact names only.")
        else:
            terms.extend(rule_terms)
    condition = _ModelCondition(tuple(terms), _Literals())

    rates = _rates(price)
    exact_out: list[str] = []
    prefix_out: list[str] = []
    for probe, is_prefix in probes:
        if not condition.matches(probe) or probe in own_names:
            continue
        other = book.lookup(probe, provider)
        if other is not None and _rates(other) == rates:
            continue
        if is_prefix and any(n.startswith(probe) for n in own_names):
            continue  # excluding the prefix would exclude a name asked for
        (prefix_out if is_prefix else exact_out).append(probe)
    excluded = _Literals(tuple(sorted(exact_out)), tuple(sorted(prefix_out)))
    # a rule's own literal that is excluded whole is dropped rather than excluded
    dropped = {"^" + _re_literal(e) + "$" for e in excluded.exact} | {
        "^" + _re_literal(p) for p in excluded.prefix
    }
    kept = [t for t in terms if not (len(t) == 1 and not t[0].negate and t[0].pattern in dropped)]
    still = _ModelCondition(tuple(kept), _Literals())
    leftover = _Literals(
        tuple(e for e in excluded.exact if still.matches(e)),
        tuple(p for p in excluded.prefix if still.matches(p)),
    )
    condition = _ModelCondition(_simplify(kept), leftover)
    if exact_out or prefix_out:
        shown = sorted(exact_out) + [p + "*" for p in sorted(prefix_out)]
        notes.append("Not for names genai-prices prices differently: " + ", ".join(shown) + ".")

    if price.tiered:
        start = _first_tier_start(info)
        above = f" above {start:,} input tokens" if start is not None else ""
        notes.append(f"Tiered price: base tier only; calls{above} are priced at the base rate (too low).")
    if info is not None and not _static_price(info):
        notes.append("Its price changes by date or time of day: this is the price in force when generated.")

    where = f"{_cache('cost')} == nil and {_cache('input')} != nil and {condition.ottl()}"
    statement = _set(_cache("cost"), " + ".join(_rate_terms(price)), where)
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


def _probes() -> Iterator[tuple[str, bool]]:
    """Model names (and name prefixes, flagged True) that genai-prices knows, lower-cased."""
    seen: set[tuple[str, bool]] = set()

    def walk(clause: object) -> Iterator[tuple[str, bool]]:
        if isinstance(clause, ClauseEquals):
            yield clause.equals.lower(), False
        elif isinstance(clause, ClauseStartsWith):
            yield clause.starts_with.lower(), True
        elif isinstance(clause, ClauseEndsWith):
            yield clause.ends_with.lower(), False
        elif isinstance(clause, ClauseContains):
            yield clause.contains.lower(), False
        elif isinstance(clause, ClauseOr):
            for child in clause.or_:
                yield from walk(child)
        elif isinstance(clause, ClauseAnd):
            for child in clause.and_:
                yield from walk(child)

    for provider in data_snapshot.get_snapshot().providers:
        for info in provider.models:
            for probe in ((info.id.lower(), False), *walk(info.match)):
                if probe[0] and probe not in seen:
                    seen.add(probe)
                    yield probe


# -- collector config files ---------------------------------------------------


def update_config_text(text: str, block: str) -> str:
    """``text`` with the lines between :data:`BEGIN_MARKER` and :data:`END_MARKER` replaced.

    ``block`` is rendered without the ``processors:`` key, at the marker's indent.
    Raises ValueError when the markers are missing or out of order.
    """
    lines = text.splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARKER]
    end = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise ValueError(f"expected one {BEGIN_MARKER!r} line and, after it, one {END_MARKER!r} line")
    return "".join(lines[: begin[0] + 1]) + block + "".join(lines[end[0] :])


def _marker_indent(text: str) -> int:
    for line in text.splitlines():
        if line.strip() == BEGIN_MARKER:
            return len(line) - len(line.lstrip(" "))
    raise ValueError(f"no {BEGIN_MARKER!r} line")


# -- command line -------------------------------------------------------------


def add_transform_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``collector-config transform`` to an argparse (sub)parser."""
    parser.add_argument(
        "--models",
        action="append",
        metavar="M1,M2",
        help=f"models to price, comma-separated, repeatable (default: {','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--provider", metavar="P", help="whose prices to use (openai, anthropic, azure, ...)")
    parser.add_argument("--prices", metavar="FILE", help="prices TOML file (default: $OTEL_USECASE_PRICES)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--update", metavar="CONFIG", help="rewrite the generated block of this collector config in place"
    )
    where.add_argument(
        "--check", metavar="CONFIG", help="exit 1 if the generated block of this collector config is stale"
    )


def main_transform(
    models: Sequence[str] | None = None, provider: str | None = None, prices: str | None = None
) -> str:
    """The YAML ``processors:`` block that prices ``models`` (default :data:`DEFAULT_MODELS`).

    ``prices`` is an overrides TOML file (default ``$OTEL_USECASE_PRICES``).
    """
    names = _clean_names(models) if models else None
    return render_transform_processor(names, provider, PriceBook(prices))


def run_transform(args: argparse.Namespace) -> int:
    """Run ``collector-config transform`` from parsed arguments; returns the exit status."""
    try:
        book = PriceBook(args.prices)
    except PricesFileError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    names = _clean_names(args.models) if args.models else None
    plan = plan_transform(names, args.provider, book)
    for name, why in plan.skipped:
        print(f"otel-usecase: skipped model {name!r}: {why}", file=sys.stderr)
    if plan.skipped and not plan.models:
        print("otel-usecase: no model could be priced", file=sys.stderr)
        return 1
    path = args.update or args.check
    if path is None:
        sys.stdout.write(_render(plan, indent=0, processors_key=True))
        return 0
    try:
        text = Path(path).read_text(encoding="utf-8")
        block = _render(plan, indent=_marker_indent(text), processors_key=False)
        new = update_config_text(text, block)
    except (OSError, ValueError) as exc:
        print(f"otel-usecase: {path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(
                f"otel-usecase: {path}: the generated transform block is stale; run with --update",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        try:
            Path(path).write_text(new, encoding="utf-8")
        except OSError as exc:
            print(f"otel-usecase: {path}: {exc}", file=sys.stderr)
            return 2
    print(f"otel-usecase: {path}: {'updated' if new != text else 'already up to date'}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``otel-usecase collector-config transform [--models gpt-4o,gpt-4o-mini ...] [--provider openai]``.

    Prints the YAML ``processors:`` block of a ``transform/usecase_cost``
    processor whose OTTL statements write ``gen_ai.usage.cost`` (USD) on LLM
    spans, priced by the PriceBook (genai-prices plus ``--prices FILE`` or
    ``$OTEL_USECASE_PRICES``). ``--update CONFIG`` rewrites the block between the
    ``# BEGIN GENERATED`` / ``# END GENERATED`` marker lines of a collector config
    instead; ``--check CONFIG`` exits 1 when that block differs from what would be
    generated now. Models without a price are skipped with a message on stderr.

    Wiring into the ``otel-usecase`` CLI: add a ``collector-config`` parser with a
    ``transform`` subparser, call :func:`add_transform_arguments` on it, and
    dispatch to :func:`run_transform` with the parsed arguments. Run alone,
    ``python -m otel_usecase.collector_config [options]`` does the same.
    """
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Print OTTL (transform processor) that writes gen_ai.usage.cost on LLM spans.",
    )
    add_transform_arguments(parser)
    return run_transform(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
