"""Which model names a statement prices: genai-prices' match rules as RE2 conditions for ``IsMatch``.

Why: genai-prices decides which model a name is by a match rule per model
(equals, starts-with, contains, regex, and/or of those); the collector can only
test the name with RE2 regular expressions. A rule RE2 cannot express
(lookarounds, backreferences) is reported, and the statement falls back to the
model's exact names. :func:`probes` lists the names genai-prices knows, so a
statement can exclude those it prices differently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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
)

from .ottl import alternation, cache, lit, re_literal

__all__ = [
    "Atom",
    "Literals",
    "ModelCondition",
    "Term",
    "clause_terms",
    "join_patterns",
    "probes",
    "simplify",
]


@dataclass(frozen=True, slots=True)
class Atom:
    """One ``IsMatch(cache["model"], pattern)``, maybe negated; pattern is RE2 and Python."""

    pattern: str
    negate: bool = False

    def matches(self, name: str) -> bool:
        return (re.search(self.pattern, name) is not None) != self.negate


Term = tuple[Atom, ...]  # atoms joined by "and"

_RE2_UNSUPPORTED: Final = re.compile(r"\(\?[=!<>]|\(\?P=|\\[1-9]|[*+?}][+]")
_NEGATIVE_LOOKAHEAD: Final = re.compile(r"\^\(\?!(?P<body>.*)\)")


@dataclass(frozen=True, slots=True)
class Literals:
    """Literal names and prefixes, lower-cased: the common form of a match rule."""

    exact: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()

    def patterns(self) -> list[str]:
        found = []
        if self.exact:
            found.append("^" + alternation(re_literal(e) for e in self.exact) + "$")
        if self.prefix:
            found.append("^" + alternation(re_literal(p) for p in self.prefix))
        return found


def clause_terms(clause: object) -> list[Term] | None:
    """A genai-prices match rule as OR-of-AND atoms, or None if RE2 can't express it."""
    if isinstance(clause, ClauseEquals):
        return [(Atom("^" + re_literal(clause.equals.lower()) + "$"),)]
    if isinstance(clause, ClauseStartsWith):
        return [(Atom("^" + re_literal(clause.starts_with.lower())),)]
    if isinstance(clause, ClauseEndsWith):
        return [(Atom(re_literal(clause.ends_with.lower()) + "$"),)]
    if isinstance(clause, ClauseContains):
        return [(Atom(re_literal(clause.contains.lower())),)]
    if isinstance(clause, ClauseRegex):
        return _regex_terms(clause.regex)
    if isinstance(clause, ClauseOr):
        terms: list[Term] = []
        for child in clause.or_:
            child_terms = clause_terms(child)
            if child_terms is None:
                return None
            terms.extend(child_terms)
        return terms
    if isinstance(clause, ClauseAnd):
        product: list[Term] = [()]
        for child in clause.and_:
            child_terms = clause_terms(child)
            if child_terms is None:
                return None
            product = [left + right for left in product for right in child_terms]
            if len(product) > 16:
                return None
        return product
    return None


def _regex_terms(regex: str) -> list[Term] | None:
    lookahead = _NEGATIVE_LOOKAHEAD.fullmatch(regex)
    if lookahead is not None:  # "^(?!X)" holds exactly when "^(?:X)" does not match
        body = lookahead.group("body")
        if _re2_safe(body):
            return [(Atom("^(?:" + body + ")", negate=True),)]
        return None
    return [(Atom(regex),)] if _re2_safe(regex) else None


def _re2_safe(regex: str) -> bool:
    if _RE2_UNSUPPORTED.search(regex):
        return False
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ModelCondition:
    """Which lower-cased model names one statement prices."""

    terms: tuple[Term, ...]
    excluded: Literals

    def matches(self, name: str) -> bool:
        if any(re.search(p, name) for p in self.excluded.patterns()):
            return False
        return any(all(atom.matches(name) for atom in term) for term in self.terms)

    def ottl(self) -> str:
        model = cache("model")
        simple = [term[0].pattern for term in self.terms if len(term) == 1 and not term[0].negate]
        parts = []
        if simple:
            parts.append(f"IsMatch({model}, {lit(join_patterns(simple))})")
        for term in self.terms:
            if len(term) == 1 and not term[0].negate:
                continue
            atoms = [
                ("not " if atom.negate else "") + f"IsMatch({model}, {lit(atom.pattern)})" for atom in term
            ]
            parts.append("(" + " and ".join(atoms) + ")" if len(atoms) > 1 else atoms[0])
        text = parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"
        excluded = self.excluded.patterns()
        if excluded:
            text += f" and not IsMatch({model}, {lit(join_patterns(excluded))})"
        return text


def join_patterns(patterns: Sequence[str]) -> str:
    return patterns[0] if len(patterns) == 1 else "|".join(patterns)


def simplify(terms: Iterable[Term]) -> tuple[Term, ...]:
    """Merge the single exact/prefix atoms into one alternation each, keep the rest."""
    exact: list[str] = []
    prefix: list[str] = []
    rest: list[Term] = []
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
    merged: list[Term] = []
    if exact:
        merged.append((Atom("^" + alternation(exact) + "$"),))
    if prefix:
        merged.append((Atom("^" + alternation(prefix)),))
    return tuple(merged + list(dict.fromkeys(rest)))


def probes() -> Iterator[tuple[str, bool]]:
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
