"""Which window instance of a budget a moment (or a run) falls in: its key, start and end.

Calendar windows are read in the budget's time zone, so "day" is the user's day,
not UTC's, and a day with a daylight-saving change is 23 or 25 hours long:

* ``hour``: the 60 minutes from a local full hour (in the repeated hour of an
  autumn change, each occurrence is its own hour);
* ``day``: local midnight to the next local midnight (where midnight does not
  exist, a spring change at 00:00, the day starts at the change);
* ``week``: from Monday's start to the next Monday's (ISO weeks);
* ``month``: from the first day's start to the next month's first day's;
* ``total``: unbounded (every call ever); ``run``: one run id, unbounded in time.

Bounds are nanoseconds since the epoch, start included, end excluded, matching
the ledger's ``start_ns`` (a call belongs to the window its start falls in).
The key names the instance across processes: ``"total"``, ``"run:<run id>"``,
or the window's start as ISO 8601 in the budget's zone
(``"2026-12-02T00:00:00+01:00"``), which is what an alert reports and what the
alerts table keys its claims by.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from .model import Window

__all__ = ["WindowInstance", "window_at", "zone"]

_NS: Final = 1_000_000_000


class WindowInstance(NamedTuple):
    """One instance of a budget's window: ``key``, and ``[start_ns, end_ns)`` (None: unbounded)."""

    key: str
    start_ns: int | None
    end_ns: int | None

    def contains(self, at_ns: int) -> bool:
        """Whether a call started at ``at_ns`` falls in this instance (always, for ``total`` and ``run``)."""
        return (self.start_ns is None or at_ns >= self.start_ns) and (
            self.end_ns is None or at_ns < self.end_ns
        )


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (cached: ``ZoneInfo`` itself caches, this skips its key normalisation)."""
    return ZoneInfo(name)


def _midnight(day: date, tz: ZoneInfo) -> int:
    """Where local date ``day`` starts in ``tz``, as epoch seconds: windows tile time, each from its
    midnight to the next one's.

    A local midnight can have two readings (``fold`` 0 and 1). The day starts at the earlier one when the
    clock reads ``day`` all the way from it to the later one, and at the later one otherwise:

    * clocks went back within ``day`` (Havana, 2015-11-01: 01:00 back to 00:00): the repeated hour reads
      ``day`` both times, so the day starts at the first midnight;
    * clocks went back across midnight (St. John's, 2001: at 00:01 back to 23:01 of the day before): the
      day starts at the second midnight, and the minute between the two belongs to the day before;
    * a midnight that does not exist (clocks jump from 00:00): the instant of the jump.
    """
    first = datetime(day.year, day.month, day.day, tzinfo=tz)
    early, late = sorted((int(first.timestamp()), int(first.replace(fold=1).timestamp())))
    if early != late and datetime.fromtimestamp(late - 1, tz).date() >= day:
        return early
    return late


def window_at(window: Window, timezone: str, at_ns: int, run_id: str | None = None) -> WindowInstance:
    """The instance of ``window`` (in zone ``timezone``) that a call started at ``at_ns`` belongs to.

    ``run_id`` is the run for a ``run`` window (``"run:"`` alone when there is none).
    """
    if window == "total":
        return WindowInstance("total", None, None)
    if window == "run":
        return WindowInstance(f"run:{run_id or ''}", None, None)
    tz = zone(timezone)
    seconds = at_ns // _NS
    local = datetime.fromtimestamp(seconds, tz)
    if window == "hour":
        start = seconds - (local.minute * 60 + local.second)
        end = start + 3600
    elif window == "day":
        today = local.date()
        start, end = _midnight(today, tz), _midnight(today + timedelta(days=1), tz)
    elif window == "week":
        monday = local.date() - timedelta(days=local.weekday())
        start, end = _midnight(monday, tz), _midnight(monday + timedelta(days=7), tz)
    elif window == "month":
        first = local.date().replace(day=1)
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        start, end = _midnight(first, tz), _midnight(following, tz)
    else:
        raise ValueError(f"window={window!r} is not a window")
    if seconds < start:  # before a repeated midnight's second occurrence: still the period before it
        return window_at(window, timezone, (start - 1) * _NS, run_id)
    key = datetime.fromtimestamp(start, tz).isoformat()
    return WindowInstance(key, start * _NS, end * _NS)
