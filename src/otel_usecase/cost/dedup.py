"""Which of two copies of one call to keep: the one completeness ranking.

One request can reach us more than once under one ledger key (trace id, span
id): two instrumentations of it (one saw the usage, the other did not), or the
same span exported twice (a retried OTLP request). The copy kept is the more
complete one; an equal or less complete copy changes nothing, so a retry is a
no-op and a metric never counts a request twice.

A copy ranks by its status (:data:`RANKS`), then, between copies of equal
status, by how many token classes it read a count for (two instrumentations of
one OpenAI request both read input and output, only one of them the cached
part: that one prices the call right). The ranking is defined here once and
read two ways:
:func:`completeness` in Python, where the call sink (:mod:`otel_usecase.cost.sink`)
decides, and :func:`completeness_sql` in the stores' upsert
(``store.base.upsert_sql``), which applies the same rule again so that writers in
other processes (gunicorn workers, ``serve`` next to an exporter) agree on what
the ledger keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

from .call import COST_SOURCE_PROVIDER, STATUS_NO_USAGE, STATUS_PARTIAL, Call
from .token_classes import TOKEN_CLASSES

__all__ = ["RANKS", "UNRANKED", "Completeness", "Rank", "completeness", "completeness_sql", "detail"]


class Rank(NamedTuple):
    """A copy whose ``field`` equals ``value`` ranks ``rank`` (the first matching row applies)."""

    field: str
    value: str
    rank: int


RANKS: Final[tuple[Rank, ...]] = (
    Rank("status", STATUS_NO_USAGE, 0),
    Rank("status", STATUS_PARTIAL, 1),
    Rank("cost_source", COST_SOURCE_PROVIDER, 3),
)
"""From least to most complete. ``no_usage``: the usage was not on the span.
``partial``: part of it was unreadable, so the cost is a lower bound. Any other
copy (``priced``, ``unpriced``: the whole usage was read) ranks :data:`UNRANKED`,
and a copy with the provider's own bill (``cost_source`` ``provider``) ranks
above it: of two instrumentations of one request, the one that recorded what the
provider billed is kept."""

UNRANKED: Final = 2
"""The rank of a copy no row of :data:`RANKS` matches."""

_BY_STATUS: Final = {r.value: r.rank for r in RANKS if r.field == "status"}
_ABOVE_STATUS: Final = tuple((r.field, r.value, r.rank) for r in RANKS if r.field != "status")
assert all(r.field in Call._fields for r in RANKS)
assert all(r.field == "status" for r in RANKS[: len(_BY_STATUS)]), "status rows come first"


class Completeness(NamedTuple):
    """How complete a copy is; tuples compare field by field, so a higher ``rank`` always wins."""

    rank: int
    """By :data:`RANKS`."""
    detail: int
    """Token classes with a count above zero (:func:`detail`)."""


def detail(tokens: Mapping[str, int]) -> int:
    """How many token classes ``tokens`` has a count above zero for (a stored 0 and an absent part read the same)."""
    return sum(1 for count in tokens.values() if count)


def completeness(call: Call) -> Completeness:
    """The completeness of ``call``: its rank by :data:`RANKS`, then its :func:`detail`."""
    rank = _BY_STATUS.get(call.status)
    if rank is None:
        rank = UNRANKED
        for field, value, field_rank in _ABOVE_STATUS:
            if getattr(call, field) == value:
                rank = field_rank
                break
    return Completeness(rank, detail(call.tokens))


def completeness_sql(row: str) -> str:
    """SQL for :func:`completeness` of the copy in ``row`` (a table name or ``excluded``), as a row value.

    Two row values compare field by field in SQLite (3.15+) and PostgreSQL alike,
    so ``completeness_sql(a) < completeness_sql(b)`` is the Python comparison.
    """
    cases = " ".join(f"WHEN {row}.{r.field} = '{r.value}' THEN {r.rank}" for r in RANKS)
    counted = " + ".join(f"(CASE WHEN {row}.{c.column} > 0 THEN 1 ELSE 0 END)" for c in TOKEN_CLASSES)
    return f"(CASE {cases} ELSE {UNRANKED} END, {counted})"
