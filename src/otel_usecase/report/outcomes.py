"""Cost per outcome: what the runs of each group cost, divided by what they achieved.

``report --per-outcome NAME`` and the dashboard read :func:`outcome_costs`. The
runs are those the report's filters select (by their calls, as every report);
each run's outcomes named ``NAME`` are summed whenever they were recorded. Runs
that did not achieve the outcome stay in: their cost is part of what the
outcomes cost (``cost_without_outcome_usd`` says how much), and they are counted
(``runs_without_outcome``). Nothing is left out silently: outcomes of runs with no
call in the selection (a run whose calls were all before ``--since``, an id
mistyped in ``record_outcome(run_id=...)``) are counted in
:attr:`OutcomeReport.outside_outcomes`, and shown under the table.

Groups are per run: one of :data:`OUTCOME_GROUPINGS`. A run whose calls carry two
values of the grouping (a version changed mid-run) counts as a run, with its
outcomes, in the group of most of its calls (ties: the first value in order); its
cost is in the group of each call.

Unpriced is unknown, not free, as in every report: a group's cost leaving out
unpriced, usage-less or partly read calls is a lower bound (``cost_complete``
false), and so is its cost per outcome. There is no SQL here: the stores answer
:meth:`~otel_usecase.store.Store.run_totals` and
:meth:`~otel_usecase.store.Store.outcome_totals`; where the per-run table answers the
filters, the groups come from the dashboard's kept totals and the runs that achieved
the outcome from their copies, kept together per outcome name
(:mod:`~otel_usecase.store.outcome_runs_sql`), summed per group by the store.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from ..scope.validation import NAME_RULE, is_name
from ..store import ReportFilter, Store, outcome_sql, runs_sql
from ..store.base import RUN_TOTALS
from . import views
from .queries import GROUPINGS, ReportError
from .text import NONE_LABEL, aligned, cost_decimals, csv_cell, money, safe_text, sum_known

__all__ = [
    "OUTCOME_FIELDS",
    "OUTCOME_GROUPINGS",
    "OutcomeReport",
    "OutcomeRow",
    "format_outcomes",
    "outcome_costs",
    "outcome_report",
    "render_outcomes",
]

OUTCOME_GROUPINGS: Final[tuple[str, ...]] = ("use-case", "version", "experience", "user")
"""The ``--by`` values of ``--per-outcome``: properties of a run (a model or a step is a property of a
call, and an outcome belongs to the whole run)."""

OUTCOME_FIELDS: Final[tuple[str, ...]] = (
    "outcome",
    "runs",
    "runs_with_outcome",
    "runs_without_outcome",
    "outcomes",
    "outcome_value",
    "calls",
    "cost_usd",
    "cost_complete",
    "cost_per_outcome_usd",
    "cost_without_outcome_usd",
)
"""The fields of each JSON/CSV record, after the grouping's key columns."""

_AT: Final = {name: i for i, name in enumerate(RUN_TOTALS)}
_INCOMPLETE: Final = tuple(_AT[name] for name in ("unpriced_calls", "no_usage_calls", "partial_calls"))


class OutcomeRow(NamedTuple):
    """One group's runs, what they achieved of one outcome and what that cost.

    ``outcomes``: times the outcome was recorded; ``outcome_value``: the sum of their
    values (1 each by default). ``cost_per_outcome_usd`` is ``cost_usd /
    outcome_value`` (None when the value is not positive or no call has a cost), a
    lower bound when ``cost_complete`` is False. ``cost_without_outcome_usd``: the
    part of ``cost_usd`` spent on runs that did not achieve it.
    """

    key: dict[str, Any]
    outcome: str
    runs: int
    runs_with_outcome: int
    outcomes: int
    outcome_value: float
    calls: int
    cost_usd: float | None
    cost_complete: bool
    cost_per_outcome_usd: float | None
    cost_without_outcome_usd: float | None

    @property
    def runs_without_outcome(self) -> int:
        return self.runs - self.runs_with_outcome


class OutcomeReport(NamedTuple):
    """The rows, and the outcomes of runs outside the selection (no call matches the filters)."""

    rows: list[OutcomeRow]
    outside_outcomes: int
    outside_value: float


@dataclass(slots=True)
class _Group:
    runs: int = 0
    with_outcome: int = 0
    outcomes: int = 0
    value: float = 0.0
    calls: int = 0
    cost: float | None = None
    """The sum of the known costs of the group's calls (None: no call has one)."""
    without: float | None = None
    """The same, of the runs without the outcome."""
    complete: bool = True


def _cost(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if -1e308 <= number <= 1e308 else None


def outcome_report(
    store: Store, filters: ReportFilter, name: str, by: str = "use-case", limit: int | None = None
) -> OutcomeReport:
    """Per group of ``by``: the runs ``filters`` select, their outcomes named ``name`` and the cost per outcome.

    Most expensive group first (unpriced last), ties in key order; the first ``limit`` groups only when
    given (a page), the outcomes outside the selection still counted over all of them. The runs' totals
    come from the kept totals and each outcome's runs where they answer, else from
    :meth:`Store.run_totals` (the report's own query) with a few dictionary operations per run.
    """
    if not isinstance(name, str) or not is_name(name):
        raise ReportError(f"--per-outcome {name!r} is not an outcome name: use {NAME_RULE}")
    if by not in OUTCOME_GROUPINGS:
        raise ReportError(
            f"--by {by!r} cannot be used with --per-outcome (an outcome belongs to a run): "
            f"use one of {', '.join(OUTCOME_GROUPINGS)}"
        )
    keys = GROUPINGS[by]
    extra = tuple(k for k in keys if k != "use_case")
    n = 2 + len(extra)  # use_case, run_id, then the grouping's other columns
    at = [0 if k == "use_case" else 2 + extra.index(k) for k in keys]
    calls_at, cost_at = n + _AT["calls"], n + _AT["cost_usd"]
    incomplete = [n + i for i in _INCOMPLETE]

    def key_of(row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple([row[i] for i in at])

    if limit is not None and limit < 1:
        raise ReportError(f"limit {limit!r} is not a number of groups >= 1")
    if store.view_sql().outcome_runs and views.runs_kept(
        store, filters._replace(since_ns=None, until_ns=None)
    ):
        return _kept_report(store, filters, name, by, keys, limit)
    achieved: dict[tuple[Any, Any], tuple[int, float, int]] = {
        (row[0], row[1]): (int(row[2]), float(row[3] or 0.0), int(row[4] or 0))
        for row in store.outcome_totals(name, filters.use_case)
        if filters.use_cases is None or row[0] in filters.use_cases  # others' outcomes: not even counted
    }
    # Per run, its row, or its rows when its calls carry several values of the grouping.
    runs: dict[tuple[Any, Any], Any] = {}
    split: set[tuple[Any, Any]] = set()
    for row in store.run_totals(("use_case", "run_id", *extra), filters):
        run = (row[0], row[1])
        seen = runs.get(run)
        if seen is None:
            runs[run] = row
        elif run in split:
            seen.append(row)
        else:
            runs[run] = [seen, row]
            split.add(run)
    groups: dict[tuple[Any, ...], _Group] = {}
    for run, found in runs.items():
        got = achieved.pop(run, None)
        rows = found if run in split else (found,)
        for row in rows:
            key = key_of(row)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group()
            group.calls += int(row[calls_at])
            cost = _cost(row[cost_at])
            if cost is not None:
                group.cost = cost if group.cost is None else group.cost + cost
                if got is None:
                    group.without = cost if group.without is None else group.without + cost
            if group.complete and any(row[i] for i in incomplete):
                group.complete = False
        home = min(rows, key=lambda r: (-r[calls_at], _order(key_of(r)))) if run in split else found
        group = groups[key_of(home)]
        group.runs += 1
        if got is not None:
            group.with_outcome += 1
            group.outcomes += got[0]
            group.value += got[1]
    since, until = filters.since_ns, filters.until_ns
    outside = [
        got
        for got in achieved.values()
        if (since is None or got[2] >= since) and (until is None or got[2] < until)
    ]
    result = [_row(dict(zip(keys, key)), name, g) for key, g in groups.items()]
    result.sort(key=lambda r: (r.cost_usd is None, -(r.cost_usd or 0.0), _order(tuple(r.key.values()))))
    return OutcomeReport(result[:limit], sum(o[0] for o in outside), sum(o[1] for o in outside))


def _kept_report(
    store: Store, filters: ReportFilter, name: str, by: str, keys: tuple[str, ...], limit: int | None
) -> OutcomeReport:
    """:func:`outcome_report` where the per-run table answers ``filters`` but for a time window (no run whose
    calls disagree on a key: each run is in one group) and the store keeps each outcome's runs together: the
    groups' runs, calls and cost as the dashboard's tables read them (:func:`~otel_usecase.report.views.top`,
    kept totals), and the runs that achieved the outcome summed per group from their copies
    (:func:`~otel_usecase.store.runs_sql.achieved_sql`, :mod:`~otel_usecase.store.outcome_runs_sql`), where
    every run's totals were read into Python (500,000 at 10M calls). Over a time window the copies answer for
    the runs wholly inside it, and the ledger for the calls in it of the few crossing an end that recorded the
    outcome (:func:`~otel_usecase.report.views.crossing_parts`). The cost of the runs without it is the
    group's cost less theirs (exactly 0 when every run achieved it; a difference within 1e-12 of the group's
    cost is 0); the outcomes outside the selection are those of the use cases (over a window: of their runs
    whose first outcome is in it) less those of its runs."""
    groups: dict[tuple[Any, ...], _Group] = {}
    for report_row in views.top(store, filters, by, limit, spread=False):
        key = tuple(report_row.key[k] for k in keys)
        groups[key] = _Group(
            runs=report_row.runs,
            calls=report_row.calls,
            cost=report_row.cost_usd,
            complete=report_row.cost_complete,
        )
    n = len(keys)
    # a full page's groups named (the others' outcomes summed apart: a second, plainer pass), every group
    # when they all fit (20 use cases: one pass, 77 ms where naming them took 119)
    full = limit is not None and limit <= len(groups) <= runs_sql.NAMED_GROUPS
    named = list(groups) if full else None
    query = runs_sql.achieved_sql(keys, filters, store.view_sql().tag_value, name, named)
    with_cost: dict[tuple[Any, ...], float] = {}
    matched, matched_value = 0, 0.0  # (every group's: the page's and the others')

    def achieved(key: tuple[Any, ...], runs: int, outcomes: int, value: float, cost: float | None) -> None:
        group = groups.get(key)
        if group is None:
            return  # a group not shown (past the limit), or written after the groups were read
        group.with_outcome += runs
        group.outcomes += outcomes
        group.value += value
        if cost is not None:
            with_cost[key] = cost + with_cost.get(key, 0.0)

    for row in store.read_outcomes(*query.groups):
        if query.total is None:
            matched, matched_value = matched + int(row[n + 4] or 0), matched_value + float(row[n + 5] or 0.0)
        achieved(tuple(row[:n]), int(row[n]), int(row[n + 1]), float(row[n + 2] or 0.0), _cost(row[n + 3]))
    if query.total is not None:
        for outcomes, value in store.read_outcomes(*query.total):
            matched, matched_value = int(outcomes or 0), float(value or 0.0)
    since, until = filters.since_ns, filters.until_ns
    if since is not None or until is not None:
        crossing = views.crossing_runs(store, filters)
        got: dict[tuple[str, str], tuple[int, float, int]] = {}
        for start in range(0, len(crossing), _CROSSING_CHUNK):
            chunk = crossing[start : start + _CROSSING_CHUNK]
            for use_case, run_id, count, value, first in store.read_outcomes(
                *outcome_sql.runs_totals_sql(name, chunk)
            ):
                got[(str(use_case), str(run_id))] = (int(count), float(value or 0.0), int(first))
        parts: dict[tuple[str, str], list[views.WindowPart]] = {}
        for part in views.crossing_parts(store, filters, by, list(got)):
            parts.setdefault(part.run, []).append(part)
        for run, found in parts.items():  # (one part each: no run's calls disagree on a key)
            count, value, first = got[run]
            known = [part.cost for part in found if part.cost is not None]
            achieved((found[0].k1, found[0].k2)[:n], 1, count, value, sum(known) if known else None)
            if (since is None or first >= since) and (until is None or first < until):
                matched, matched_value = matched + count, matched_value + value
    for key, group in groups.items():
        if group.cost is None or group.with_outcome == 0:
            group.without = group.cost
        elif group.with_outcome >= group.runs:
            group.without = 0.0
        else:
            left = group.cost - with_cost.get(key, 0.0)
            group.without = left if left > abs(group.cost) * 1e-12 else 0.0
    result = [_row(dict(zip(keys, key)), name, g) for key, g in groups.items()]
    result.sort(key=lambda r: (r.cost_usd is None, -(r.cost_usd or 0.0), _order(tuple(r.key.values()))))
    # the outcomes outside the selection: the use cases' less those of the selection's runs (every group's)
    scope = store.read_outcomes(
        *outcome_sql.scope_sums_sql(name, filters.use_case, filters.use_cases, since, until)
    )
    total, total_value = (int(scope[0][0] or 0), float(scope[0][1] or 0.0)) if scope else (0, 0.0)
    outside = total - matched
    return OutcomeReport(result, outside, total_value - matched_value if outside else 0.0)


_CROSSING_CHUNK: Final = 200
"""Runs per query of the outcomes of the runs crossing an end of a window (two parameters each)."""


def outcome_costs(store: Store, filters: ReportFilter, name: str, by: str = "use-case") -> list[OutcomeRow]:
    """The rows of :func:`outcome_report` (the dashboard's and the CLI's one source of these figures)."""
    return outcome_report(store, filters, name, by).rows


def render_outcomes(store: Store, name: str, by: str = "use-case", fmt: str = "table", **filters: Any) -> str:
    """``otel-usecase report --per-outcome NAME``: ``filters`` are the report's (``use_case``, ``since``,
    ``user``, ``experience``, ``version``, ``tags``), turned into the store's filter as every report does."""
    from .queries import report_filter  # the one translation of the report options (a --user is hashed)

    return format_outcomes(outcome_report(store, report_filter(**filters), name, by), name, by, fmt)


def _order(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in key)


def _row(key: dict[str, Any], name: str, group: _Group) -> OutcomeRow:
    cost = group.cost
    without = group.without if group.without is not None or cost is None else 0.0
    return OutcomeRow(
        key=key,
        outcome=name,
        runs=group.runs,
        runs_with_outcome=group.with_outcome,
        outcomes=group.outcomes,
        outcome_value=group.value,
        calls=group.calls,
        cost_usd=cost,
        cost_complete=group.complete,
        cost_per_outcome_usd=cost / group.value if cost is not None and group.value > 0 else None,
        cost_without_outcome_usd=without,
    )


# --- formats (the report's: JSON and CSV for tools, a table for people) -----------------------


def _record(row: OutcomeRow) -> dict[str, Any]:
    record: dict[str, Any] = dict(row.key)
    for name in OUTCOME_FIELDS:
        record[name] = getattr(row, name)
    return record


def format_outcomes(report: OutcomeReport, name: str, by: str = "use-case", fmt: str = "table") -> str:
    """``report --per-outcome NAME`` as ``table``, ``json`` (a list of records) or ``csv``."""
    keys = GROUPINGS[by]
    if fmt == "json":
        return json.dumps([_record(r) for r in report.rows], separators=(",", ":"), default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*keys, *OUTCOME_FIELDS])
        writer.writeheader()
        for row in report.rows:
            writer.writerow({k: csv_cell(v) for k, v in _record(row).items()})
        return out.getvalue()
    return _table(report, name, keys)


def _value(number: float) -> str:
    return f"{number:,.0f}" if number == int(number) else f"{number:,.4g}"


def _table(report: OutcomeReport, name: str, keys: Sequence[str]) -> str:
    rows = report.rows
    lines = [
        f"outcome {safe_text(name)}: cost per outcome = what the runs cost / the sum of the outcome's values"
    ]
    if not rows:
        lines.append("no calls recorded")
    else:
        header = [
            *keys,
            "runs",
            "with outcome",
            "without",
            "outcomes",
            "value",
            "cost",
            "cost/outcome",
            "cost w/o outcome",
        ]
        decimals = cost_decimals(
            v for r in rows for v in (r.cost_usd, r.cost_per_outcome_usd, r.cost_without_outcome_usd)
        )
        body = [
            [
                *(safe_text(r.key[k]) for k in keys),
                f"{r.runs:,}",
                f"{r.runs_with_outcome:,}",
                f"{r.runs_without_outcome:,}",
                f"{r.outcomes:,}",
                _value(r.outcome_value),
                money(r.cost_usd, decimals, lower_bound=not r.cost_complete),
                NONE_LABEL
                if r.cost_per_outcome_usd is None
                else money(r.cost_per_outcome_usd, decimals, lower_bound=not r.cost_complete),
                money(r.cost_without_outcome_usd, decimals, lower_bound=not r.cost_complete),
            ]
            for r in rows
        ]
        lines += ["", *aligned(header, body, numeric_from=len(keys)), ""]
        cost = sum_known(r.cost_usd for r in rows)
        value = sum(r.outcome_value for r in rows)
        complete = all(r.cost_complete for r in rows)
        per = (
            money(cost / value, decimals, lower_bound=not complete)
            if cost is not None and value > 0
            else NONE_LABEL
        )
        runs = sum(r.runs for r in rows)
        without = sum(r.runs_without_outcome for r in rows)
        lines.append(
            f"total {money(cost, decimals, lower_bound=not complete)} over {runs:,} runs "
            f"({without:,} without the outcome): {per} per outcome (value {_value(value)})"
        )
        if not complete:
            lines.append("some calls are unpriced, without usage or partly read: costs are lower bounds")
    if report.outside_outcomes:
        lines.append(
            f"{report.outside_outcomes:,} outcomes (value {_value(report.outside_value)}) belong to runs "
            "with no call in this selection and are not counted above"
        )
    return "\n".join(lines)
