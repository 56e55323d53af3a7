"""The report primitives' SQL that both stores share, and group totals computed in Python.

Each store implements :meth:`~otel_usecase.store.base.Store.run_totals`,
``group_totals`` and ``runs_json`` with its own SQL; what they have in common
(standard SQL: the filters, the per-run select list, the status counts) is built
here once, given the one thing that differs, how a token count is summed
without overflowing (:func:`run_total_columns`). A store whose SQL has no
percentile (SQLite) aggregates its run totals with :func:`group_runs`.

Reports read only the columns the ledger has (``present``): a reader of a ledger
of an older schema, which it never upgrades, reads a newer column as its default
(0 tokens, no cost source), so old rows read as they always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from operator import add
from typing import Any, Final, TypeVar

from ..scope.validation import check_name
from .base import (
    COLUMNS,
    GROUP_TOTALS,
    LEDGER,
    MARKED_CLASSES,
    META_TABLE,
    RUN_TOTALS,
    TABLE,
    TOKEN_COLUMNS,
    ReportFilter,
    TagValue,
    filter_clauses,
    seen_key,
)

__all__ = [
    "COST",
    "STATUS_COUNTS",
    "TAG_KEY",
    "column",
    "group_runs",
    "incomplete",
    "key_columns",
    "key_names",
    "percentile",
    "run_calls_sql",
    "run_total_columns",
    "run_totals_sql",
    "summed_columns",
    "where",
    "with_summed",
    "with_zeros",
    "zero_columns",
]

STATUS_COUNTS: Final = (
    ("unpriced_calls", "unpriced"),
    ("no_usage_calls", "no_usage"),
    ("partial_calls", "partial"),
)
"""Calls whose cost is unknown (``unpriced``, ``no_usage``) or a lower bound (``partial``), by status."""

COST: Final = "SUM(cost_usd)"
"""A run's cost: NULL when no call of it has a cost (unknown, not $0)."""

_DEFAULTS: Final = {name: "0" if "DEFAULT 0" in constraint else "NULL" for name, _, constraint in LEDGER}


_MARKS: Final = tuple((c.column, seen_key(c.name)) for c in MARKED_CLASSES)

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
_T = TypeVar("_T")


def summed_columns(query: Query, present: Collection[str]) -> frozenset[str]:
    """The columns a report sums: ``present``, without the token classes of
    :data:`~otel_usecase.store.base.MARKED_CLASSES` the ledger has never had a non-zero count of (their
    totals are 0, written as constants).

    Decided by the marks the store writes with the first such rows (one lookup
    in the meta table, no scan of the ledger), so a report over a ledger
    without 1-hour cache, audio, image or video tokens reads the covering index
    alone, as fast as before those classes existed. A ledger that has one is
    read from the table too, for every report: correct, and slower.
    """
    marked = [(column, key) for column, key in _MARKS if column in present]
    if not marked:  # a reader of an older ledger, without these columns (and without marks)
        return frozenset(present)
    keys = [key for _, key in marked]
    found = {
        row[0]
        for row in query(f"SELECT key FROM {META_TABLE} WHERE key IN ({', '.join('?' * len(keys))})", keys)
    }
    return frozenset(present).difference(column for column, key in marked if key not in found)


def with_summed(query: Query, present: Collection[str], report: Callable[[frozenset[str]], _T]) -> _T:
    """``report(summed)`` with :func:`summed_columns`, read again afterwards; run again if it changed.

    A mark is committed with the first rows of its class, but the report runs in
    a snapshot of its own, after the marks were read: rows committed in between
    would have their tokens read as 0. Marks are only ever added, so if they are
    the same after the report, every row it read had its mark before; if not,
    the report is run again with the new ones (at most once per class in the
    lifetime of a ledger). One more lookup in the meta table per report.
    """
    summed = summed_columns(query, present)
    while True:
        result = report(summed)
        again = summed_columns(query, present)
        if again == summed:
            return result
        summed = again


def column(name: str, present: Collection[str]) -> str:
    """``name``, or its default (``0``, ``NULL``) when the ledger read has no such column."""
    return name if name in present else _DEFAULTS[name]


def where(filters: ReportFilter, tag_value: TagValue | None = None) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (with a leading space, or empty) and its parameters, ``?`` placeholders.

    ``tag_value`` is the store's SQL for a tag's value (:data:`~otel_usecase.store.base.TagValue`), needed
    when ``filters.tags`` is set."""
    clauses, params = filter_clauses(
        filters.use_case,
        filters.since_ns,
        user_id=filters.user_id,
        experience_name=filters.experience_name,
        use_case_version=filters.use_case_version,
        tags=filters.tags,
        tag_value=tag_value,
        until_ns=filters.until_ns,
        use_cases=filters.use_cases,
    )
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


TAG_KEY: Final = "tag:"
"""A report key ``tag:<key>`` groups by the value of that tag (NULL for calls without it)."""
_TAG_ALIAS: Final = "tag_value"


def key_columns(
    keys: Sequence[str], present: Collection[str], tag_value: TagValue | None
) -> tuple[list[str], list[Any], list[str]]:
    """The select list of report ``keys`` (``expression AS name``), its parameters, and the names to group by.

    A key is a ledger column (its default when the ledger read has no such column,
    which is then not grouped by), or ``tag:<key>``: the value of that tag through
    the store's ``tag_value``, named ``tag_value`` (one tag per report).
    """
    selected: list[str] = []
    params: list[Any] = []
    names: list[str] = []
    for key in keys:
        if key.startswith(TAG_KEY):
            if tag_value is None or _TAG_ALIAS in names:
                raise ValueError(
                    f"cannot group by {key!r} here: one tag per report, with the store's tag SQL"
                )
            expression, param = tag_value(check_name("tag key", key[len(TAG_KEY) :]))
            selected.append(f"{expression} AS {_TAG_ALIAS}")
            params.append(param)
            names.append(_TAG_ALIAS)
        else:
            selected.append(f"{column(key, present)} AS {key}")
            if key in present:
                names.append(key)
    return selected, params, names


def key_names(keys: Sequence[str]) -> list[str]:
    """The names :func:`key_columns` gives ``keys`` in its select list."""
    return [_TAG_ALIAS if key.startswith(TAG_KEY) else key for key in keys]


def run_total_columns(token_sum: str, present: Collection[str]) -> tuple[tuple[str, str], ...]:
    """One run's :data:`~otel_usecase.store.base.RUN_TOTALS` as (name, SQL expression), in that order.

    ``token_sum`` is the store's overflow-proof sum of a token column (a format
    string with one ``{}``): no stored row may make a report fail. ``cost_usd`` is
    NULL when no call of the run has a cost. A run's cost is complete when it has
    no unpriced, usage-less or partly read call (:func:`incomplete`): derived from
    these counts rather than counted again, since each aggregate more costs the
    biggest report (``--by run``) 5-8%.
    """
    zeros = zero_columns(present)
    expressions = {
        "calls": "COUNT(*)",
        "cost_usd": COST,
        **{name: f"SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)" for name, status in STATUS_COUNTS},
    }
    return tuple(
        (name, expressions.get(name) or ("0" if name in zeros else token_sum.format(name)))
        for name in RUN_TOTALS
    )


def incomplete(counts: Callable[[str], str]) -> str:
    """SQL that is 0 for a run (or group) whose cost is complete: ``counts(name)`` is how a count is read."""
    return " + ".join(counts(name) for name, _ in STATUS_COUNTS)


def zero_columns(summed: Collection[str]) -> tuple[str, ...]:
    """The token columns a report does not sum (their totals are 0): those not in ``summed``, in order."""
    return tuple(c for c in TOKEN_COLUMNS if c not in summed)


def run_totals_sql(
    keys: Sequence[str],
    filters: ReportFilter,
    token_sum: str,
    present: Collection[str],
    *,
    zeros: bool = True,
    tag_value: TagValue | None = None,
    rollups: str | None = None,
) -> tuple[str, list[Any]]:
    """The query of :meth:`~otel_usecase.store.base.Store.run_totals`: the ``keys``, then the run's totals.

    ``rollups``: the store's dialect when it has them (``sqlite+pending`` while rows are pending); they are
    read instead of the ledger when they hold the answer exactly (:func:`.rollup_sql.run_totals_sql`: keys
    a run has, whole-hour windows).

    Grouped by ``run_id`` first: the ledger's covering index is ordered by
    (run_id, use_case), so the database streams over it without sorting. With
    ``zeros=False`` the token columns not summed (:func:`zero_columns`) are left
    out instead of selected as 0 (for a store that aggregates the runs further:
    9 columns fewer per run; :func:`with_zeros` puts them back in its groups).
    """
    if rollups:
        from . import rollup_sql  # imports this module

        found = rollup_sql.run_totals_sql(
            keys,
            filters,
            token_sum,
            present,
            zeros=zeros,
            tag_value=tag_value,
            dialect=rollups.removesuffix("+pending"),
            pending=rollups.endswith("+pending"),
        )
        if found is not None:
            return found
    clause, where_params = where(filters, tag_value)
    key_select, params, grouped = key_columns(keys, present, tag_value)
    params.extend(where_params)
    group = ", ".join(dict.fromkeys(("run_id", *grouped)))
    left_out = () if zeros else zero_columns(present)
    selected = ", ".join(
        key_select
        + [
            f"{expression} AS {name}"
            for name, expression in run_total_columns(token_sum, present)
            if name not in left_out
        ]
    )
    return f"SELECT {selected} FROM {TABLE}{clause} GROUP BY {group}", params


def with_zeros(rows: Iterable[Sequence[Any]], n_keys: int, summed: Collection[str]) -> list[tuple[Any, ...]]:
    """Group rows (``n_keys`` key values, then :data:`~otel_usecase.store.base.GROUP_TOTALS` without the
    token columns of :func:`zero_columns`) with those columns put back as 0, in their places."""
    zeros = frozenset(zero_columns(summed))
    if not zeros:
        return [tuple(row) for row in rows]
    kept = [i for i, name in enumerate(GROUP_TOTALS) if name not in zeros]
    result = []
    for row in rows:
        full: list[Any] = [*row[:n_keys], *[0] * len(GROUP_TOTALS)]
        for at, value in zip(kept, row[n_keys:]):
            full[n_keys + at] = value
        result.append(tuple(full))
    return result


def run_calls_sql(run_id: str, present: Collection[str]) -> tuple[str, list[Any]]:
    """The query of :meth:`~otel_usecase.store.base.Store.run_calls`: the ledger rows of one run in
    :data:`~otel_usecase.store.base.COLUMNS` order (for :func:`~otel_usecase.store.base.call_of`)."""
    selected = ", ".join(column(c, present) for c in COLUMNS)
    return f"SELECT {selected} FROM {TABLE} WHERE run_id = ? ORDER BY start_ns, span_id", [run_id]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lower = math.floor(pos)
    upper = math.ceil(pos)
    if lower == upper:
        return sorted_values[lower]
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (pos - lower)


class _Group:
    __slots__ = ("cost", "costs", "left_out", "runs", "sums")

    def __init__(self, width: int) -> None:
        self.runs = 0
        self.sums: list[int] = [0] * width
        self.cost: float | None = None
        self.costs: list[float] = []
        self.left_out = 0


def group_runs(rows: Iterable[Sequence[Any]], n_keys: int) -> list[tuple[Any, ...]]:
    """Run totals (``n_keys`` key values, then RUN_TOTALS) -> one GROUP_TOTALS row per key.

    The counts (calls, tokens, status counts: every total but the cost, which
    comes last) are integers from the store's SQL and summed as they are. The
    per-run figures are over the runs whose cost is known and complete; a cost
    that is not finite (a sum past 1e308, from no row an exporter writes) counts
    as unknown.
    """
    groups: dict[tuple[Any, ...], _Group] = {}
    width = -1
    for row in rows:
        if width < 0:
            width = len(row) - n_keys - 1  # RUN_TOTALS, or fewer (run_totals_sql(zeros=False))
        key = tuple(row[:n_keys])
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(width)
        group.runs += 1
        counts = row[n_keys:-1]
        group.sums = list(map(add, group.sums, counts))
        cost = row[-1]
        if cost is not None and -1e308 <= cost <= 1e308:  # not NaN or infinite
            group.cost = cost if group.cost is None else group.cost + cost
        else:
            cost = None
        if cost is not None and not (counts[-1] or counts[-2] or counts[-3]):
            group.costs.append(cost)
        else:
            group.left_out += 1
    result = []
    for key, group in groups.items():
        costs = sorted(group.costs)
        result.append(
            (
                *key,
                group.runs,
                *group.sums,
                group.cost,
                sum(costs) / len(costs) if costs else None,
                percentile(costs, 0.5),
                percentile(costs, 0.95),
                group.left_out,
            )
        )
    return result
