"""What the dashboard shows, as functions of a store and a filter: the numbers the CLI prints too.

Each function answers one panel (a summary, a cost series, a top list, a page of
runs, the per-run cost histogram) with named records; the SQL is
:mod:`otel_usecase.store.rollup_sql`'s, the formatting the caller's. ``top`` is
:func:`~otel_usecase.report.queries.build_report` itself, so a dashboard table and
``otel-usecase report`` can never disagree.

Unpriced is unknown, not free, as in every report: a cost no call has is None,
and ``cost_complete`` False marks a lower bound (some call unpriced, without
usage, or only partly read).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

from ..cost import token_classes
from ..store import ReportFilter, Store, groups_sql, rollup_sql, tag_runs_sql
from ..store import runs_sql as per_run
from ..store.base import GROUP_TOTALS, RUN_TOTALS, TOKEN_COLUMNS, tags_of
from ..store.totals import group_runs, percentile
from .queries import ReportError, ReportRow, group_row, grouping, order_key, report_rows, sort_rows

__all__ = [
    "BUCKETS",
    "Histogram",
    "RunRow",
    "SeriesPoint",
    "Summary",
    "WindowPart",
    "cost_series",
    "crossing_parts",
    "crossing_runs",
    "list_runs",
    "run_histogram",
    "summary",
    "top",
]

BUCKETS: Final[dict[str, int]] = {"hour": 3_600_000_000_000, "day": 86_400_000_000_000}
"""Series bucket widths in ns (UTC: a day bucket starts at 00:00 UTC)."""

_CLASSES: Final = tuple(c.name for c in token_classes.TOKEN_CLASSES)


class Summary(NamedTuple):
    """The totals of every call the filter selects."""

    cost_usd: float | None
    """None when no call has a cost; a lower bound unless ``cost_complete``."""
    cost_complete: bool
    calls: int
    runs: int
    unpriced_calls: int
    no_usage_calls: int
    partial_calls: int
    error_calls: int
    tokens: dict[str, int]
    """Every token class's total, by class name."""


class SeriesPoint(NamedTuple):
    """The cost of one series (``key``: a use case, a model ...) in one time bucket."""

    start_ns: int
    key: str | None
    cost_usd: float | None
    calls: int


class RunRow(NamedTuple):
    """One run: its calls' totals, its first call's start and last call's end."""

    use_case: str
    run_id: str
    start_ns: int
    end_ns: int
    user_id: str | None
    experience_name: str | None
    experience_id: str | None
    use_case_version: str | None
    tags: Mapping[str, str]
    calls: int
    tokens: dict[str, int]
    cost_usd: float | None
    cost_complete: bool


class Histogram(NamedTuple):
    """The distribution of run costs over the runs whose cost is known and complete.

    ``edges`` has one more entry than ``counts`` (``bins`` equal widths from the
    cheapest to the dearest run; the last bin includes its upper edge). Empty when
    no run has a complete cost."""

    edges: list[float]
    counts: list[int]
    p50: float | None
    p95: float | None
    runs_left_out: int


def _number(value: Any) -> float | None:
    """A cost as a float; None when unknown or not finite (a sum past 1e308: no real cost is)."""
    if value is None:
        return None
    number = float(value)
    return number if -1e308 <= number <= 1e308 else None


def _tokens(values: Sequence[Any]) -> dict[str, int]:
    return {name: int(value or 0) for name, value in zip(_CLASSES, values)}


def _per_run(store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter) -> bool:
    """Whether the per-run table (:mod:`~otel_usecase.store.runs_sql`) answers ``filters`` exactly: the store
    has it, nothing is pending, no time window, and no run's calls disagree on a dimension."""
    return (
        view.rollups
        and not view.pending
        and per_run.answers(filters)
        and not store.query(per_run.mixed_sql())
    )


def runs_kept(store: Store, filters: ReportFilter) -> bool:
    """Whether the per-run table answers ``filters`` (:func:`_per_run`): each run of the selection is one of
    its rows, in one group of each run grouping."""
    return _per_run(store, store.view_sql(), filters)


def _without_window(filters: ReportFilter) -> ReportFilter:
    return filters._replace(since_ns=None, until_ns=None)


def _unfiltered(filters: ReportFilter) -> bool:
    return filters == ReportFilter()


def _totals(view: rollup_sql.ViewSQL) -> bool:
    """Whether the group totals (:mod:`~otel_usecase.store.groups_sql`) hold every committed call."""
    return view.rollups and view.groups and not view.pending


def summary(store: Store, filters: ReportFilter) -> Summary:
    """Total cost, calls, runs, unknown-cost and error counts, tokens per class (of everything: the use
    cases' totals, a few rows; under one kept tag alone: that tag value's totals, one row)."""
    view = store.view_sql()
    tag = filters.tags[0] if len(filters.tags) == 1 and filters.tags[0][0] in view.tag_keys else None
    if _totals(view) and (_unfiltered(filters) or (tag and filters == ReportFilter(tags=(tag,)))):
        row = store.query(*groups_sql.summary_sql(view.token_sum, tag))[0]
    else:
        runs_table = _per_run(store, view, filters)
        window_runs = not runs_table and _per_run(store, view, _without_window(filters))
        query = rollup_sql.summary_sql(view, filters, per_run_table=runs_table, window_runs=window_runs)
        row = store.query(*query)[0]
    n = len(_CLASSES)
    calls = int(row[0] or 0)
    tokens = _tokens(row[1 : 1 + n])
    cost = _number(row[1 + n])
    unpriced, no_usage, partial, errors, runs = (int(v or 0) for v in row[2 + n : 7 + n])
    return Summary(
        cost_usd=cost,
        cost_complete=unpriced + no_usage + partial == 0,
        calls=calls,
        runs=runs,
        unpriced_calls=unpriced,
        no_usage_calls=no_usage,
        partial_calls=partial,
        error_calls=errors,
        tokens=tokens,
    )


def cost_series(
    store: Store, filters: ReportFilter, bucket: Literal["hour", "day"], by: str = "use-case"
) -> list[SeriesPoint]:
    """Cost and calls per ``bucket`` (UTC) and value of ``by``, in time then key order.

    ``by`` is one of :data:`~otel_usecase.store.rollup_sql.SERIES_KEYS` (``model`` stacks by model name,
    ``step`` by step name across use cases)."""
    if bucket not in BUCKETS:
        raise ReportError(f"bucket {bucket!r} is not one of {', '.join(BUCKETS)}")
    key = rollup_sql.SERIES_KEYS.get(by)
    if key is None:
        raise ReportError(f"by {by!r} is not one of {', '.join(rollup_sql.SERIES_KEYS)}")
    view = store.view_sql()
    tagged = key in rollup_sql.TAG_SERIES_KEYS and per_run.kept_tag_filter(filters, view.tag_value)
    if tagged and _per_run(store, view, filters):
        rows = store.query(*rollup_sql.tag_series_sql(view, filters, BUCKETS[bucket], key))
    else:
        rows = store.query(*rollup_sql.series_sql(view, filters, BUCKETS[bucket], key))
    return [
        SeriesPoint(int(start), None if series is None else str(series), _number(cost), int(calls))
        for start, series, cost, calls in rows
    ]


def top(
    store: Store, filters: ReportFilter, by: str, limit: int | None = 10, *, spread: bool = True
) -> list[ReportRow]:
    """The ``limit`` most expensive groups of ``by`` (a ``report --by`` value; None: every group), unpriced
    last: the same rows as :func:`~otel_usecase.report.queries.report_rows`, read where they are kept.
    ``spread`` False leaves out the p50 and p95 of the groups' run costs where they are read apart (None
    then; over a time window the average too, and ``runs_left_out`` is 0): for a caller that needs only
    the groups' totals (the cost per outcome).

    Without a filter, from the group totals (:mod:`~otel_usecase.store.groups_sql`): a few rows, then the
    p50 and p95 of the groups shown by rank; a call-level grouping (model, step) within use cases, under a user, experience, version or tag filter, or over a time window, from
    its per-(run, group) rows; by use case, user, experience or version under other filters, from the
    per-run table's indexes; anything else from the rollups or the ledger."""
    keys = grouping(by)
    view = store.view_sql()
    kept_dims = view.run_only_dims or not set(keys) & set(per_run.RUN_ONLY_DIMS)  # (a store before schema 12)
    if kept_dims and (limit is None or limit >= 1):
        kept = _top_kept(store, view, filters, by, keys, limit, spread)
        if kept is not None:
            return kept
        if per_run.group_keys(keys) and _per_run(store, view, filters):
            tag = filters.tags[0] if len(filters.tags) == 1 else None
            if (
                tag is not None
                and tag[0] in view.tag_keys
                and filters == ReportFilter(tags=(tag,))
                and _totals(view)
            ):
                return _top_of_tag(store, view, filters, by, keys, limit, tag, spread)
            within = any(g.by == by for g in groups_sql.WITHIN_USE_CASE)
            one_use_case = filters.use_case is not None and filters == ReportFilter(use_case=filters.use_case)
            if within and one_use_case and _totals(view):
                return _top_within_use_case(store, view, filters, by, keys, limit, spread)
            return _top_per_run(store, view, filters, keys, limit, spread)
    return report_rows(store, by, filters, limit=limit)


_TIE_ROOM: Final = 32
"""How many groups past a ``top``'s limit are read, so that groups of equal cost are ordered by key."""


def _top_per_run(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    keys: tuple[str, ...],
    limit: int | None,
    spread: bool = True,
) -> list[ReportRow]:
    """:func:`top` from the per-run table: every group's cost and counts from its index alone, the groups
    ordered as the report orders them, then the other sums and the p50 and p95 of the ``limit`` shown."""
    n = len(keys)
    found: dict[tuple[Any, ...], tuple[int, float | None, int, float | None]] = {}

    def read(dearest: groups_sql.Dearest) -> dict[tuple[Any, ...], float | None]:
        found.clear()
        for record in store.query(*per_run.order_sql(keys, filters, view.tag_value, dearest)):
            runs, cost, complete, complete_sum = record[n:]
            found[tuple(record[:n])] = (int(runs), _number(cost), int(complete or 0), _number(complete_sum))
        return {key: values[1] for key, values in found.items()}

    # The dearest groups in SQL (50,000 experiences need not cross into Python), with room for ties.
    shown = _dearest(read, limit)
    if not shown:
        return []
    query = rollup_sql.group_sums_sql(view, filters, keys, per_run.named(shown)) or per_run.sums_sql(
        keys, filters, view.tag_value, view.token_sum, per_run.named(shown)
    )
    sums = {tuple(r[:n]): r[n:] for r in store.query(*query)}
    costs = (
        _run_costs(store, view, filters, keys, shown)
        if spread and per_run.kept_tag_filter(filters, view.tag_value)
        else None
    )
    result = []
    for key in shown:
        runs, cost, complete, complete_sum = found[key]
        group = per_run.group_conditions(keys, key)

        def ranked(how: per_run.Walk, group: tuple[list[str], list[Any]] = group) -> list[Any]:
            return store.query(*per_run.ranked_sql(filters, view.tag_value, how, group))

        avg = complete_sum / complete if complete and complete_sum is not None else None
        if costs is not None:
            p50, p95 = percentile(costs[key], 0.5), percentile(costs[key], 0.95)
        elif spread:
            p50, p95 = _ranked_percentile(ranked, complete, 0.5), _ranked_percentile(ranked, complete, 0.95)
        else:
            p50 = p95 = None
        values = (*key, runs, *sums[key], cost, avg, p50, p95, runs - complete)
        assert len(values) == n + len(GROUP_TOTALS)
        result.append(group_row(values, keys))
    return result


def _run_costs(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    keys: tuple[str, ...],
    groups: list[tuple[Any, ...]],
) -> dict[tuple[Any, ...], list[float]]:
    """The complete run costs of each of ``groups`` (values of ``keys``) among the per-run rows ``filters``
    select, in one read, each group's in order: where ranked reads would each sort the rows anew."""
    n = len(keys)
    costs: dict[tuple[Any, ...], list[float]] = {group: [] for group in groups}
    for record in store.query(*per_run.costs_sql(keys, filters, view.tag_value, per_run.named(groups))):
        found = costs.get(tuple(record[:n]))
        if found is not None:
            found.append(float(record[n]))
    return {group: sorted(values) for group, values in costs.items()}


def _dearest(
    read: Callable[[groups_sql.Dearest], dict[tuple[Any, ...], float | None]],
    limit: int | None,
    values: Callable[[tuple[Any, ...]], tuple[Any, ...]] = lambda key: key,
) -> list[tuple[Any, ...]]:
    """The keys of the ``limit`` dearest groups (None: all) as the report orders them, from ``read``: the
    cost of the groups it asks for, ordered and cut in SQL, with room for ties; when the last one read
    costs what the last one shown does, ties may reach past it: every group that costs as much is read.
    Ties are ordered by ``values(key)``: the group's key values (a key read is not always them)."""
    if limit is None:
        every = read(groups_sql.Dearest())
        return sorted(every, key=lambda key: order_key(every[key], values(key)))
    found = read(groups_sql.Dearest(rows=limit + _TIE_ROOM))
    if len(found) == limit + _TIE_ROOM:
        costs = sorted(found.values(), key=lambda c: (c is None, -(c or 0.0)))
        if costs[limit - 1] == costs[-1]:
            found = read(groups_sql.Dearest(floor=costs[limit - 1]))
    return heapq.nsmallest(limit, found, key=lambda key: order_key(found[key], values(key)))


def _top_kept(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    by: str,
    keys: tuple[str, ...],
    limit: int | None,
    spread: bool = True,
) -> list[ReportRow] | None:
    """:func:`top` from the group totals kept by the database (:mod:`~otel_usecase.store.groups_sql`), a few
    rows read, then the p50 and p95 of the groups shown by rank. They answer no filter, or a use case (or
    the allowed set of them) when it is the grouping's first key (steps, versions) or the grouping is a
    call-level one (its per-(run, group) rows). None when they cannot answer."""
    kept = groups_sql.kept(by, view.tag_keys)
    if kept is None or kept.keys != keys or not _totals(view):
        return None
    call_level = groups_sql.call_level(kept)
    within = (filters.use_case, filters.use_cases)
    if filters._replace(use_case=None, use_cases=None) != ReportFilter():
        if call_level and per_run.answers(filters) and not store.query(per_run.mixed_sql()):
            return _top_of_runs(store, view, filters, by, keys, limit)
        windowed = filters._replace(use_case=None, use_cases=None, since_ns=None, until_ns=None)
        if windowed == ReportFilter() and (call_level or not store.query(per_run.mixed_sql())):
            return _top_of_window(store, view, filters, by, keys, limit, spread)
        tag = filters.tags[0] if len(filters.tags) == 1 else None
        if (
            kept in (*groups_sql.CALL_GROUPINGS, *groups_sql.RUN_GROUPINGS)
            and tag is not None
            and tag[0] in view.tag_keys
            and windowed == ReportFilter(tags=(tag,))
            and not per_run.answers(filters)  # (a window)
            and not store.query(per_run.mixed_sql())  # (a run's tag value is its calls')
        ):
            return _top_of_window(store, view, filters, by, keys, limit, spread, tag)
        return None
    from_totals = within == (None, None) or keys[0] == "use_case"
    if not from_totals and not call_level:
        return None
    if not call_level and store.query(per_run.mixed_sql()):
        return None  # a run whose calls disagree on a key counts in two groups: the per-run rule
    n = len(keys)
    records: dict[tuple[Any, ...], Sequence[Any]] = {}
    at = groups_sql.TOTALS_FIELDS.index("cost_usd")

    def read(dearest: groups_sql.Dearest) -> dict[tuple[Any, ...], float | None]:
        query = (
            groups_sql.totals_sql(by, dearest, *within)
            if from_totals
            else groups_sql.groups_sql(by, dearest, *within, view.token_sum)
        )
        records.clear()
        for record in store.query(*query):
            records[tuple(record[:n])] = record[2:]
        return {key: _number(values[at]) for key, values in records.items()}

    shown = _dearest(read, limit)
    fields = {name: i for i, name in enumerate(groups_sql.TOTALS_FIELDS)}
    run_filter = ReportFilter(use_case=filters.use_case, use_cases=filters.use_cases)
    # Many run groups shown (every one of 50,000 experiences): their runs' costs in one pass, not two
    # ranked reads per group.
    costs = (
        _run_costs(store, view, run_filter, keys, shown)
        if spread and not call_level and len(shown) > per_run.NAMED_GROUPS
        else None
    )
    result = []
    for key in shown:
        values = records[key]
        runs, complete = int(values[fields["runs"]]), int(values[fields["complete_runs"]] or 0)
        complete_sum = _number(values[fields["complete_sum"]])

        def ranked(how: per_run.Walk, key: tuple[Any, ...] = key) -> list[Any]:
            if call_level:
                return store.query(*groups_sql.ranked_sql(by, key, how, *within))
            group = per_run.group_conditions(keys, key)
            return store.query(*per_run.ranked_sql(run_filter, view.tag_value, how, group))

        avg = complete_sum / complete if complete and complete_sum is not None else None
        if costs is not None:
            p50, p95 = percentile(costs[key], 0.5), percentile(costs[key], 0.95)
        elif spread:
            p50, p95 = _ranked_percentile(ranked, complete, 0.5), _ranked_percentile(ranked, complete, 0.95)
        else:
            p50 = p95 = None
        sums = [
            values[fields[f]]
            for f in ("calls", *TOKEN_COLUMNS, "unpriced_calls", "no_usage_calls", "partial_calls")
        ]
        row = (*key, runs, *sums, _number(values[fields["cost_usd"]]), avg, p50, p95, runs - complete)
        assert len(row) == n + len(GROUP_TOTALS)
        result.append(group_row(row, keys))
    return result


def _top_of_runs(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    by: str,
    keys: tuple[str, ...],
    limit: int | None,
) -> list[ReportRow]:
    """:func:`top` of a call-level grouping under a filter on the runs' user, experience, version or tags:
    the runs from the per-run table's indexes, their per-(run, group) rows, grouped here as the report
    groups runs (:func:`~otel_usecase.store.totals.group_runs`); under one kept tag alone (within use
    cases or not), the groups' rows of that tag value (:func:`_top_of_tag`)."""
    tag = filters.tags[0] if len(filters.tags) == 1 else None
    others = filters._replace(use_case=None, use_cases=None, tags=())
    copied = any(g.by == by for g in groups_sql.CALL_GROUPINGS)  # (not the tag groupings themselves)
    if copied and tag is not None and tag[0] in view.tag_keys and others == ReportFilter():
        return _top_of_tag(store, view, filters, by, keys, limit, tag)
    runs_source, params = per_run.source(filters, view.tag_value)
    rows = store.query(*groups_sql.run_parts_sql(by, runs_source, params))
    n = len(keys)
    grouped = [group[:n] + group[2:] for group in group_runs(rows, 2)]
    return sort_rows(group_row(group, keys) for group in grouped)[:limit]


def _top_of_tag(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    by: str,
    keys: tuple[str, ...],
    limit: int | None,
    tag: tuple[str, str],
    spread: bool = True,
) -> list[ReportRow]:
    """:func:`top` under one kept tag (the caller checked that no run is mixed): every group's sums from the
    tag grouping's totals (a few rows; a call-level grouping within use cases from one range of
    :data:`~otel_usecase.store.tag_runs_sql.TAG_GROUPS`, whose groups are a few: models, steps), then the
    p50 and p95 of the groups shown (:func:`_top_of_totals`)."""
    key, value = tag
    within = (filters.use_case, filters.use_cases)

    def read(dearest: groups_sql.Dearest) -> tuple[str, list[Any]]:
        if within != (None, None):
            return tag_runs_sql.group_sums_sql(by, key, value, view.token_sum, *within)
        return tag_runs_sql.totals_sql(view.dialect, by, key, value, dearest)

    def ranked(part: str, how: per_run.Walk) -> tuple[str, list[Any]]:
        return tag_runs_sql.ranked_sql(by, key, value, part, how, *within)

    call_level = not per_run.group_keys(keys)
    return _top_of_totals(store, view, filters, keys, limit, read, ranked if call_level else None, spread)


def _top_of_totals(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    keys: tuple[str, ...],
    limit: int | None,
    read_sql: Callable[[groups_sql.Dearest], tuple[str, list[Any]]],
    ranked_sql: Callable[[str, per_run.Walk], tuple[str, list[Any]]] | None,
    spread: bool = True,
) -> list[ReportRow]:
    """:func:`top` from rows of group totals whose ``k2`` holds a group's key values in one text
    (:func:`~otel_usecase.store.tag_runs_sql.part_of`), read by ``read_sql`` (the dearest first, ties
    ordered here by the values); then the p50 and p95 of the groups shown: by rank with ``ranked_sql``, else
    (a run grouping) from one read of their runs' complete costs in the per-run rows ``filters`` select."""
    groups: dict[str, tuple[tuple[Any, ...], int, list[int], float | None, int, float | None]] = {}

    def read(dearest: groups_sql.Dearest) -> dict[tuple[Any, ...], float | None]:
        groups.clear()
        for record in store.query(*read_sql(dearest)):
            part, runs, *sums, cost, complete, complete_sum = record
            groups[str(part)] = (tag_runs_sql.parsed_part(str(part)), int(runs), [int(v or 0) for v in sums],
                                 _number(cost), int(complete or 0), _number(complete_sum))  # fmt: skip
        return {(part,): values[3] for part, values in groups.items()}

    n = len(keys)
    shown_parts = [part for (part,) in _dearest(read, limit, lambda key: groups[key[0]][0][:n])]
    costs = None  # a run grouping: its runs' costs, once
    if spread and ranked_sql is None and shown_parts:
        costs = _run_costs(store, view, filters, keys, [groups[part][0][:n] for part in shown_parts])
    rows = []
    for part in shown_parts:
        group, runs, sums, cost, complete, complete_sum = groups[part]
        avg = complete_sum / complete if complete and complete_sum is not None else None
        if costs is not None:
            p50, p95 = percentile(costs[group[:n]], 0.5), percentile(costs[group[:n]], 0.95)
        elif not spread:
            p50 = p95 = None
        else:
            assert ranked_sql is not None

            def ranked(
                how: per_run.Walk,
                part: str = part,
                walk_sql: Callable[[str, per_run.Walk], tuple[str, list[Any]]] = ranked_sql,
            ) -> list[Any]:
                return store.query(*walk_sql(part, how))

            p50, p95 = _ranked_percentile(ranked, complete, 0.5), _ranked_percentile(ranked, complete, 0.95)
        values = (*group[:n], runs, *sums, cost, avg, p50, p95, runs - complete)
        assert len(values) == len(keys) + len(GROUP_TOTALS)
        rows.append(group_row(values, keys))
    return rows


def _top_within_use_case(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    by: str,
    keys: tuple[str, ...],
    limit: int | None,
    spread: bool = True,
) -> list[ReportRow]:
    """:func:`top` of users or experiences within one use case (the caller checked that no run is mixed):
    the use case's rows of their totals (:data:`~otel_usecase.store.groups_sql.WITHIN_USE_CASE`), then the
    shown groups' run costs once."""
    assert filters.use_case is not None
    report_by, use_case = groups_sql.within_use_case(by), filters.use_case

    def read(dearest: groups_sql.Dearest) -> tuple[str, list[Any]]:
        return groups_sql.totals_rows_sql(view.dialect, report_by, use_case, dearest)

    return _top_of_totals(store, view, filters, keys, limit, read, None, spread)


_STRADDLING_CHUNK: Final = 200
"""Runs per ledger query of :func:`_top_of_window` (two parameters each)."""


def _top_of_window(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    by: str,
    keys: tuple[str, ...],
    limit: int | None,
    spread: bool = True,
    tag: tuple[str, str] | None = None,
) -> list[ReportRow]:
    """:func:`top` over a time window: the per-(run, group) rows (a call-level grouping) or the per-run rows
    (use case, user, experience, version) of the runs whose every call is in the window, found through the
    per-run table's times; and, from the ledger, the calls in the window of the few runs that cross one of
    its ends. A call-level grouping of a store with the per-(run, group) rows' times reads them group by
    group instead (:func:`_window_parts`); under one kept ``tag`` (the filters' only other one) it reads the
    tag value's copies of them (:func:`_window_tag_parts`). The same figures as the report's grouping of
    every run's calls in the window."""
    width = len(RUN_TOTALS) - 1
    n = len(keys)
    # The sums of calls, tokens and unknown-cost counts from the hour rollup where it answers (the window's
    # calls, exactly); the runs then come from an index alone.
    rollup_sums = rollup_sql.hour_rollup_answers(view, filters) and set(keys) <= rollup_sql.HOUR_COLUMNS
    kept = groups_sql.kept(by, view.tag_keys)
    assert kept is not None
    costs_of: Callable[[Sequence[tuple[Any, ...]]], None] | None = None
    parts_sums: Callable[[Sequence[tuple[Any, ...]]], None] | None = None
    if tag is not None:
        groups, sums_of, rollup_sums = _window_tag_parts(store, view, filters, by, width, tag), None, False
    elif view.group_times and groups_sql.call_level(kept):
        groups, costs_of, parts_sums = _window_parts(store, view, filters, by, width)
        sums_of = None
    elif not groups_sql.call_level(kept):
        groups, costs_of, sums_of = _window_whole_runs(store, view, filters, by, limit, rollup_sums)
    else:
        groups, sums_of = _window_runs(store, view, filters, by, width, rollup_sums)

    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return order_key(groups[key].cost, key[:n])

    shown = sorted(groups, key=order) if limit is None else heapq.nsmallest(limit, groups, key=order)
    if costs_of is not None and spread:
        costs_of(shown)
    if parts_sums is not None and not rollup_sums:
        parts_sums(shown)
    # The sums of the groups shown: from the hour rollup where it answers (the window's calls, the crossing
    # runs' too, so they replace those), else from the rows of the runs wholly inside, plus the crossing ones.
    sums_query = (
        rollup_sql.group_sums_sql(view, filters, keys, per_run.named([key[:n] for key in shown]))
        if rollup_sums
        else sums_of(per_run.named(list(shown)))
        if sums_of is not None and shown
        else None
    )
    if sums_query is not None and shown:
        for record in store.query(*sums_query):
            key = (*record[:n], *((None,) if n == 1 else ())) if rollup_sums else tuple(record[:2])
            if key in groups:
                found_sums = [int(v or 0) for v in record[(n if rollup_sums else 2) :]]
                if rollup_sums:
                    groups[key].sums = found_sums
                else:
                    groups[key].add_sums(found_sums)
    rows = []
    for key in shown:  # (50,000 experiences: only the groups shown become rows)
        group = groups[key]
        if group.ranked is not None:
            count, total, p50, p95 = group.ranked
            figures: tuple[float | None, ...] = (total / count if count else None, p50, p95)
        elif spread:
            costs = sorted(group.costs)
            count = len(costs)
            figures = (sum(costs) / count if costs else None, percentile(costs, 0.5), percentile(costs, 0.95))
        else:
            count, figures = group.runs, (None, None, None)
        values = (*key[:n], group.runs, *group.totals(), group.cost, *figures, group.runs - count)
        rows.append(group_row(values, keys))
    return rows


_SumsOf = Callable[[Sequence[tuple[Any, ...]] | None], tuple[str, list[Any]]]


def _window_sql(
    view: rollup_sql.ViewSQL, filters: ReportFilter, by: str, rollup_sums: bool
) -> groups_sql.WindowSQL:
    return groups_sql.window_sql(
        view.dialect,
        by,
        filters.since_ns,
        filters.until_ns,
        filters.use_case,
        filters.use_cases,
        view.token_sum,
        with_sums=not rollup_sums,
    )


def _window_runs(
    store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, by: str, width: int, rollup_sums: bool
) -> tuple[dict[tuple[Any, ...], _WindowGroup], _SumsOf | None]:
    """The groups of a window from the rows of its runs wholly inside (every one read) and the ledger's
    calls in it of the runs crossing an end; the query of the sums of given groups over the former."""
    window = _window_sql(view, filters, by, rollup_sums)
    groups: dict[tuple[Any, ...], _WindowGroup] = {}
    for row in store.query(*window.runs):  # (a hundred thousand rows for a week of 10M calls: kept plain)
        group = groups.get(row[:2])
        if group is None:
            group = groups[row[:2]] = _WindowGroup(width)
        group.runs += 1
        cost, complete = row[2], row[3]
        if cost is not None:
            group.cost = cost if group.cost is None else group.cost + cost
        if complete is not None:
            group.costs.append(complete)
    crossing = crossing_runs(store, filters)
    for _, k1, k2, counts, known in _crossing_parts(store, view, filters, by, crossing):
        group = groups.setdefault((k1, k2), _WindowGroup(width))
        group.add(1, counts, known)
        if known is not None and not (counts[-1] or counts[-2] or counts[-3]):
            group.costs.append(known)
    return groups, window.sums


def _window_whole_runs(
    store: Store,
    view: rollup_sql.ViewSQL,
    filters: ReportFilter,
    by: str,
    limit: int | None,
    rollup_sums: bool,
) -> tuple[dict[tuple[Any, ...], _WindowGroup], Callable[[Sequence[tuple[Any, ...]]], None], _SumsOf | None]:
    """The candidate groups of a window of a run grouping (use case, user, experience, version): its runs
    wholly inside summed per group in the database (:func:`~otel_usecase.store.groups_sql.window_run_groups_sql`),
    the ``limit`` dearest with room for ties and for the groups of the few runs crossing an end (their calls in
    the window from the ledger: they can only reorder those groups), and those groups; the function filling
    the complete costs of the groups shown; the query of their sums."""
    window = _window_sql(view, filters, by, rollup_sums)
    crossing = _crossing_parts(store, view, filters, by, crossing_runs(store, filters))
    touched = sorted({(k1, k2) for _, k1, k2, _, _ in crossing}, key=lambda key: order_key(None, key))
    inside: dict[tuple[Any, ...], tuple[int, Any]] = {}
    bounds = (filters.since_ns, filters.until_ns, filters.use_case, filters.use_cases)

    def read(dearest: groups_sql.Dearest, chunk: Sequence[tuple[Any, ...]] | None = None) -> None:
        query = groups_sql.window_run_groups_sql(view.dialect, by, dearest, *bounds, groups=chunk)
        for k1, k2, runs, cost in store.query(*query):
            inside[(k1, k2)] = (int(runs), cost)

    width = len(RUN_TOTALS) - 1
    # Ordered as the report orders them, the first limit + (groups of crossing runs) are the candidates:
    # the crossing runs only change their own groups, so no other group can pass them.
    read(groups_sql.Dearest(rows=None if limit is None else limit + len(touched)))
    missing = [key for key in touched if key not in inside]
    for start in range(0, len(missing), _STRADDLING_CHUNK):
        read(groups_sql.Dearest(), missing[start : start + _STRADDLING_CHUNK])
    groups: dict[tuple[Any, ...], _WindowGroup] = {}
    for key, (runs, cost) in inside.items():
        group = groups[key] = _WindowGroup(width)
        group.runs, group.cost = runs, _number(cost)
    extra: dict[tuple[Any, ...], list[float]] = {}
    for _, k1, k2, counts, known in crossing:
        group = groups.setdefault((k1, k2), _WindowGroup(width))
        group.add(1, counts, known)
        if known is not None and not (counts[-1] or counts[-2] or counts[-3]):
            extra.setdefault((k1, k2), []).append(known)

    def costs(shown: Sequence[tuple[Any, ...]]) -> None:
        for key in shown:
            groups[key].costs = list(extra.get(key, ()))
        # a query naming the groups shown; more of them (a page of 10,000) read every run of the window in
        # one pass instead of a pass per 200
        wanted = set(shown)
        chosen = per_run.named(list(shown))
        for k1, k2, cost in store.query(*groups_sql.window_run_costs_sql(view.dialect, by, *bounds, chosen)):
            if (k1, k2) in wanted:
                groups[(k1, k2)].costs.append(float(cost))

    return groups, costs, window.sums


class WindowPart(NamedTuple):
    """The calls in a time window of one run that crosses an end of it, in one group (:func:`crossing_parts`)."""

    run: tuple[str, str]
    """(use case, run id)"""
    k1: Any
    k2: Any
    """The group's keys (``k2`` None for a grouping of one key)."""
    counts: list[int]
    """The counts of :data:`~otel_usecase.store.base.RUN_TOTALS` (the cost left out)."""
    cost: float | None
    """The sum of the known costs (None: no call has one)."""


def crossing_runs(store: Store, filters: ReportFilter) -> list[tuple[str, str]]:
    """The (use case, run id) of the runs of ``filters``' use cases with calls on both sides of an end of its
    time window, from the per-run table (its other filters are the ledger's: :func:`crossing_parts`)."""
    query = groups_sql.crossing_sql(
        store.view_sql().dialect, filters.since_ns, filters.until_ns, filters.use_case, filters.use_cases
    )
    return [(str(use_case), str(run_id)) for use_case, run_id in store.query(*query)]


def crossing_parts(
    store: Store, filters: ReportFilter, by: str, runs: Sequence[tuple[str, str]]
) -> list[WindowPart]:
    """The calls of ``runs`` that ``filters`` keep (its time window and the rest), from the ledger, per (run,
    group) of ``by``: what the runs crossing an end of the window (:func:`crossing_runs`) add to it."""
    return _crossing_parts(store, store.view_sql(), filters, by, runs)


def _window_tag_parts(
    store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, by: str, width: int, tag: tuple[str, str]
) -> dict[tuple[Any, ...], _WindowGroup]:
    """Every group over a window under one kept tag, with its sums and complete costs: the tag value's
    copies of the per-run rows (a run grouping) or per-(run, group) rows of its runs wholly inside the window
    (:func:`~otel_usecase.store.tag_runs_sql.window_parts_sql`; a few thousand rows for a week), and the
    ledger's calls in the window of its runs crossing an end. Read from the ledger, the calls of a week
    under a tag took 0.8-1.5 s at 10M calls."""
    window = tag_runs_sql.window_parts_sql(
        view.dialect,
        by,
        *tag,
        filters.since_ns,
        filters.until_ns,
        view.token_sum,
        filters.use_case,
        filters.use_cases,
    )

    def key_of(k1: Any, k2: Any) -> tuple[Any, Any]:
        return tag_runs_sql.parsed_part(str(k1)) if window.parts else (k1, k2)

    groups: dict[tuple[Any, ...], _WindowGroup] = {}
    for k1, k2, runs, *sums, cost in store.query(*window.sums):
        group = groups[key_of(k1, k2)] = _WindowGroup(width)
        group.add(int(runs), [int(v or 0) for v in sums], _number(cost))
    for k1, k2, complete in store.query(*window.costs):
        found = groups.get(key_of(k1, k2))
        if found is not None:  # (None: a run written between the two reads)
            found.costs.append(float(complete))
    crossing = [(str(use_case), str(run_id)) for use_case, run_id in store.query(*window.crossing)]
    for _, k1, k2, counts, known in _crossing_parts(store, view, filters, by, crossing):
        group = groups.setdefault((k1, k2), _WindowGroup(width))
        group.add(1, counts, known)
        if known is not None and not (counts[-1] or counts[-2] or counts[-3]):
            group.costs.append(known)
    return groups


def _crossing_parts(
    store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, by: str, runs: Sequence[tuple[str, str]]
) -> list[WindowPart]:
    if not runs:
        return []
    ledger = rollup_sql.ledger_sums(view, filters)
    measures = [ledger.measures[m] for m in RUN_TOTALS]
    found = []
    for start in range(0, len(runs), _STRADDLING_CHUNK):
        chunk = runs[start : start + _STRADDLING_CHUNK]
        query = groups_sql.window_ledger_sql(view.dialect, by, measures, ledger.clause, ledger.params, chunk)
        for use_case, run_id, k1, k2, *run in store.query(*query):
            *counts, cost = run
            found.append(
                WindowPart((str(use_case), str(run_id)), k1, k2, [int(v or 0) for v in counts], _number(cost))
            )
    return found


def _window_parts(
    store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, by: str, width: int
) -> tuple[
    dict[tuple[Any, ...], _WindowGroup],
    Callable[[Sequence[tuple[Any, ...]]], None],
    Callable[[Sequence[tuple[Any, ...]]], None],
]:
    """The groups of a window of a call-level grouping (a kept tag's too) from its per-(run, group) rows,
    group by group (:func:`~otel_usecase.store.groups_sql.window_parts_sql`): a row per group for the parts
    inside, the few parts crossing an end read from the ledger (their sums with them); and the functions
    filling the complete costs of the groups shown and the sums of their parts inside (only those groups
    need them; the caller takes the sums from the hour rollup where it answers)."""
    every = [
        (k1, k2)
        for k1, k2 in store.query(*groups_sql.window_groups_sql(by, filters.use_case, filters.use_cases))
    ]
    size = groups_sql.parts_per_query(filters.use_cases)
    chunks = [every[s : s + size] for s in range(0, len(every), size)]
    queries = [
        groups_sql.window_parts_sql(
            view.dialect,
            by,
            chunk,
            filters.since_ns,
            filters.until_ns,
            filters.use_case,
            filters.use_cases,
            view.token_sum,
        )
        for chunk in chunks
    ]
    groups: dict[tuple[Any, ...], _WindowGroup] = {}
    crossing: dict[tuple[str, str], set[tuple[Any, Any]]] = {}
    for chunk, parts in zip(chunks, queries):
        for i, use_case, run_id, count, cost in store.query(*parts.totals):
            if use_case is not None:  # a part whose times cross an end: read from the ledger below
                crossing.setdefault((str(use_case), str(run_id)), set()).add(chunk[i])
            elif count:
                group = groups[chunk[i]] = _WindowGroup(width)
                group.runs = int(count)
                group.cost = _number(cost)
    extra: dict[tuple[Any, ...], list[float]] = {}
    for run, k1, k2, counts, known in _crossing_parts(store, view, filters, by, list(crossing)):
        if (k1, k2) not in crossing[run]:
            continue  # a part of the run wholly inside: counted above
        group = groups.setdefault((k1, k2), _WindowGroup(width))
        group.add(1, counts, known)
        if known is not None and not (counts[-1] or counts[-2] or counts[-3]):
            extra.setdefault((k1, k2), []).append(known)
    where = {key: (c, i) for c, chunk in enumerate(chunks) for i, key in enumerate(chunk)}

    def positions(shown: Sequence[tuple[Any, ...]]) -> dict[int, list[int]]:
        by_chunk: dict[int, list[int]] = {}
        for key in shown:
            if key in where:
                c, i = where[key]
                by_chunk.setdefault(c, []).append(i)
        return by_chunk

    def costs(shown: Sequence[tuple[Any, ...]]) -> None:
        for key in shown:
            groups[key].costs = list(extra.get(key, ()))
        for c, at in positions(shown).items():
            ranked = queries[c].ranked
            if ranked is None:
                continue
            for i, count, total, p50, p95 in store.query(
                *ranked({i: extra.get(chunks[c][i], ()) for i in at})
            ):
                group = groups[chunks[c][i]]
                group.ranked = (
                    (int(count), float(total), float(p50), float(p95)) if count else (0, 0.0, None, None)
                )
        read = [key for key in shown if groups[key].ranked is None]
        for c, at in positions(read).items():
            for i, cost in store.query(*queries[c].costs(at)):
                groups[chunks[c][i]].costs.append(float(cost))

    def sums(shown: Sequence[tuple[Any, ...]]) -> None:
        for c, at in positions(shown).items():
            for i, *found in store.query(*queries[c].sums(at)):
                if any(found):
                    groups[chunks[c][i]].add_sums([int(v or 0) for v in found])

    return groups, costs, sums


class _WindowGroup:
    """One group's figures over a window, added up from runs or sums of runs."""

    __slots__ = ("cost", "costs", "ranked", "runs", "sums", "width")

    def __init__(self, width: int) -> None:
        self.runs = 0
        self.width = width
        self.sums: list[int] | None = None  # (made when first needed: 50,000 groups of a window)
        self.cost: float | None = None
        self.costs: list[float] = []
        self.ranked: tuple[int, float, float | None, float | None] | None = None
        """The complete costs' number, sum, p50 and p95 when the database computed them (then not read)."""

    def add_sums(self, sums: Sequence[int]) -> None:
        self.sums = list(sums) if self.sums is None else [a + b for a, b in zip(self.sums, sums)]

    def totals(self) -> list[int]:
        return self.sums if self.sums is not None else [0] * self.width

    def add(self, runs: int, sums: Sequence[int], cost: float | None) -> None:
        self.runs += runs
        self.add_sums(sums)
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost


def _ranked_percentile(ranked: Callable[[per_run.Walk], list[Any]], n: int, q: float) -> float | None:
    """:func:`~otel_usecase.store.totals.percentile` of ``n`` sorted values read by rank (``ranked(walk)``:
    the rows of an index walk, :func:`~otel_usecase.store.runs_sql.walk`, from the nearer end), the same
    arithmetic."""
    if n <= 0:
        return None
    pos = (n - 1) * q
    lower = math.floor(pos)
    upper = math.ceil(pos)
    how = per_run.walk(lower, n)
    values = [float(row[0]) for row in ranked(how)]
    if how.descending:
        values.reverse()
    if lower == upper:
        return values[0]
    return values[0] + (values[1] - values[0]) * (pos - lower)


def list_runs(
    store: Store,
    filters: ReportFilter,
    order: Literal["newest", "cost"] = "newest",
    limit: int = 50,
    offset: int = 0,
) -> list[RunRow]:
    """A page of runs: ``newest`` (most recently active first: by their latest call) or most expensive
    first (unknown cost last); ties by use case then run id."""
    if order not in ("newest", "cost"):
        raise ReportError(f"order {order!r} is not one of newest, cost")
    if limit < 1 or offset < 0:
        raise ReportError(f"limit {limit!r} must be at least 1 and offset {offset!r} at least 0")
    view = store.view_sql()
    if order == "newest":
        page = _latest_runs(store, view, filters, limit, offset)
        if page is not None:
            return page
    elif _per_run(store, view, filters):
        query = per_run.dearest_sql(view.dialect, filters, view.tag_value, limit, offset)
        return _runs_of(store, view, filters, [(u, r) for u, r in store.query(*query)])
    else:
        dearest = rollup_sql.dearest_runs_sql(view, filters, limit, offset)
        if dearest is not None:
            return _runs_of(store, view, filters, [(u, r) for u, r in store.query(*dearest)])
    rows = store.query(*rollup_sql.runs_sql(view, filters, order, limit, offset))
    return [_run_row(row) for row in rows]


def _latest_runs(
    store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, limit: int, offset: int
) -> list[RunRow] | None:
    """The newest page through the run rollup's ``last_ns`` index: the latest cells until enough distinct
    runs, then those runs' totals (a few hundred rows read, not every run). None: the rollup cannot answer."""
    wanted = limit + offset
    cells = wanted * 2
    while True:
        query = rollup_sql.latest_runs_sql(view, filters, cells)
        if query is None:
            return None
        found = store.query(*query)
        runs = list(dict.fromkeys((row[0], row[1]) for row in found))
        if len(runs) >= wanted or len(found) < cells:
            break
        cells *= 4
    return _runs_of(store, view, filters, runs[offset:wanted])


def _runs_of(
    store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, page: Sequence[tuple[str, str]]
) -> list[RunRow]:
    """The :class:`RunRow` of each (use case, run id) of ``page``, in that order, from the run rollup."""
    if not page:
        return []
    rows = store.query(*rollup_sql.runs_of_sql(view, filters, sorted({run_id for _, run_id in page})))
    by_run = {(row[0], row[1]): row for row in rows}
    return [_run_row(by_run[run]) for run in page if run in by_run]


def _run_row(row: Sequence[Any]) -> RunRow:
    n = len(_CLASSES)
    use_case, run_id, start, end, user, exp_name, exp_id, version, tags, calls = row[:10]
    return RunRow(
        use_case=use_case,
        run_id=run_id,
        start_ns=int(start),
        end_ns=int(end),
        user_id=user,
        experience_name=exp_name,
        experience_id=exp_id,
        use_case_version=version,
        tags=tags_of(tags),
        calls=int(calls),
        tokens=_tokens(row[10 : 10 + n]),
        cost_usd=_number(row[10 + n]),
        cost_complete=int(row[11 + n] or 0) == 0,
    )


def run_histogram(store: Store, filters: ReportFilter, bins: int = 20) -> Histogram:
    """The distribution of the cost per run, with p50 and p95 (as the report's per-run figures)."""
    if bins < 1:
        raise ReportError(f"bins {bins!r} must be at least 1")
    view = store.view_sql()
    if _per_run(store, view, filters):
        if per_run.kept_tag_filter(filters, view.tag_value):  # a kept tag's runs: their costs in one read
            runs = int(store.query(*per_run.count_sql(filters, view.tag_value))[0][0])
            read = store.query(*per_run.costs_sql((), filters, view.tag_value, []))
            ordered = sorted(float(r[0]) for r in read)
            return histogram(ordered, bins, runs - len(ordered))
        return _histogram_per_run(store, view, filters, bins)
    rows = store.query(*rollup_sql.run_costs_sql(view, filters))
    costs: list[float] = []
    left_out = 0
    for cost, incomplete in rows:
        known = _number(cost)
        if known is None or incomplete:
            left_out += 1
        else:
            costs.append(known)
    costs.sort()
    return histogram(costs, bins, left_out)


def _histogram_per_run(store: Store, view: rollup_sql.ViewSQL, filters: ReportFilter, bins: int) -> Histogram:
    """:func:`histogram` read through the per-run table's index on the complete cost: the count, lowest and
    highest, the ranks of p50 and p95, and one count per bin (the same arithmetic as :func:`histogram`)."""
    runs, n, low, high, _ = store.query(*per_run.spread_sql(filters, view.tag_value))[0]
    left_out = int(runs) - int(n)
    if not n:
        return Histogram([], [], None, None, left_out)
    low, high = float(low), float(high)
    if high <= low:
        return Histogram([low, high], [int(n)], low, high, left_out)

    def ranked(how: per_run.Walk) -> list[Any]:
        return store.query(*per_run.ranked_sql(filters, view.tag_value, how))

    width = (high - low) / bins
    edges = [low + width * i for i in range(bins)] + [high]
    counts = [0] * bins
    for index, count in store.query(*per_run.bins_sql(view.dialect, filters, view.tag_value, low, width)):
        counts[min(int(index), bins - 1)] += int(count)
    p50, p95 = _ranked_percentile(ranked, int(n), 0.5), _ranked_percentile(ranked, int(n), 0.95)
    return Histogram(edges, counts, p50, p95, left_out)


def histogram(costs: Sequence[float], bins: int, left_out: int) -> Histogram:
    """``bins`` equal-width bins over sorted ``costs`` (one bin when they are all equal)."""
    if not costs:
        return Histogram([], [], None, None, left_out)
    low, high = costs[0], costs[-1]
    if high <= low:
        return Histogram([low, high], [len(costs)], low, high, left_out)
    width = (high - low) / bins
    edges = [low + width * i for i in range(bins)] + [high]
    counts = [0] * bins
    for cost in costs:
        counts[min(int((cost - low) / width), bins - 1)] += 1
    return Histogram(edges, counts, percentile(costs, 0.5), percentile(costs, 0.95), left_out)
