"""Which of two copies of one call to keep: the one completeness ranking.

One request can reach us more than once under one ledger key (trace id, span
id): two instrumentations of it (one saw the usage, the other did not), or the
same span exported twice (a retried OTLP request). The copy kept is the more
complete one; an equal or less complete copy changes nothing, so a retry is a
no-op and a metric never counts a request twice.

The ranking is defined here once, as data (:data:`RANKS`), and read two ways:
:func:`completeness` in Python, where the call sink (:mod:`otel_usecase.cost.sink`)
decides, and :func:`completeness_sql` in the stores' upsert
(``store.base.upsert_sql``), which applies the same rule again so that writers in
other processes (gunicorn workers, ``serve`` next to an exporter) agree on what
the ledger keeps.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from .call import COST_SOURCE_PROVIDER, STATUS_NO_USAGE, STATUS_PARTIAL, Call

__all__ = ["RANKS", "UNRANKED", "Rank", "completeness", "completeness_sql"]


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


def completeness(call: Call) -> int:
    """The rank of ``call`` by :data:`RANKS` (higher is more complete)."""
    rank = _BY_STATUS.get(call.status)
    if rank is not None:
        return rank
    for field, value, field_rank in _ABOVE_STATUS:
        if getattr(call, field) == value:
            return field_rank
    return UNRANKED


def completeness_sql(row: str) -> str:
    """SQL ranking the copy in ``row`` (a table name or ``excluded``) by :data:`RANKS`, as :func:`completeness`."""
    cases = " ".join(f"WHEN {row}.{r.field} = '{r.value}' THEN {r.rank}" for r in RANKS)
    return f"CASE {cases} ELSE {UNRANKED} END"
