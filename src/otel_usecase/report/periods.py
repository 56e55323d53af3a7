"""``report --by day|week|month [--tz ZONE]``: cost per calendar period in a time zone.

A run that spans two periods counts in both, with the calls of each, as a run with
calls of two users counts for each user. The periods are added up from cells of
time the store keeps per run: the run rollup's hours when every hour starts on a
whole local hour in the zone (UTC and every zone with whole-hour offsets, through
daylight saving changes), else the ledger's quarter hours (zones such as
Asia/Kolkata, +05:30, or Asia/Kathmandu, +05:45). So each call is in the period
of its local start time, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..store import ReportFilter, Store, rollup_sql
from ..store.totals import group_runs
from .queries import ReportError, ReportRow, group_row, sort_rows

__all__ = ["PERIODS", "period_rows", "zone"]

PERIODS: Final = ("day", "week", "month")
"""``--by`` values that group by calendar period (labels ``2026-01-05``, ``2026-W02``, ``2026-01``)."""

KEYS: Final = ("period",)


def zone(name: str | None) -> tzinfo:
    """The time zone ``name`` (IANA, such as ``Europe/Paris``); UTC when None."""
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"--tz {name!r} is not a time zone name such as UTC or Europe/Paris") from None


def _label(moment: datetime, by: str) -> str:
    if by == "day":
        return moment.date().isoformat()
    if by == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{moment.year}-{moment.month:02d}"


def period_rows(
    store: Store, by: str, filters: ReportFilter, tz: str | None = None, *, limit: int | None = None
) -> list[ReportRow]:
    """One :class:`ReportRow` per period (key ``period``), in time order; with ``limit``, the ``limit`` most
    expensive periods, most expensive first."""
    if by not in PERIODS:
        raise ReportError(f"--by {by!r} is not one of {', '.join(PERIODS)}")
    where = zone(tz)
    view = store.view_sql()
    cells: list[tuple[Any, ...]] | None = None
    if rollup_sql.run_rollup_answers(view, filters):
        cells = store.query(*rollup_sql.cell_run_totals_sql(view, filters, rollup=True))
        if not _whole_local_cells({c[0] for c in cells}, where):
            cells = None
    if cells is None:
        cells = store.query(*rollup_sql.cell_run_totals_sql(view, filters, rollup=False))
    labels: dict[int, str] = {}
    runs: dict[tuple[str, Any, Any], list[Any]] = {}
    for cell, use_case, run_id, *run_totals in cells:
        label = labels.get(cell)
        if label is None:
            label = labels[cell] = _label(datetime.fromtimestamp(cell / 1e9, tz=where), by)
        key = (label, use_case, run_id)
        held = runs.get(key)
        if held is None:
            runs[key] = list(run_totals)
            continue
        for i, value in enumerate(run_totals[:-1]):
            held[i] += value
        cost = run_totals[-1]
        if cost is not None:
            held[-1] = cost if held[-1] is None else held[-1] + cost
    grouped = group_runs(((label, *totals) for (label, _, _), totals in runs.items()), len(KEYS))
    rows = [group_row(record, KEYS) for record in grouped]
    if limit is not None:
        return sort_rows(rows)[:limit]
    return sorted(rows, key=lambda row: str(row.key["period"]))


def _whole_local_cells(starts: Sequence[int] | set[int], where: tzinfo) -> bool:
    """Whether each cell (an hour) starts on a whole local hour, so no period boundary falls inside one."""
    for start in starts:
        moment = datetime.fromtimestamp(start / 1e9, tz=where)
        if moment.minute or moment.second:
            return False
    return True
