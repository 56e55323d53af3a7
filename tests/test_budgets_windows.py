"""Budget windows against a plain datetime reading of the same calendar (hypothesis)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_usecase.budgets.windows import window_at

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/Santiago",  # changes at midnight
    "America/Havana",  # spring change at 00:00: that midnight does not exist
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 with DST
    "Australia/Adelaide",  # +09:30 / +10:30
    "Pacific/Apia",  # skipped a whole day (2011-12-30)
]
NS = 1_000_000_000
instants = st.integers(min_value=946_684_800, max_value=2_208_988_800)  # 2000 to 2040, in seconds


def local(seconds: int, zone: str) -> datetime:
    return datetime.fromtimestamp(seconds, ZoneInfo(zone))


LABELS = {
    "day": lambda d: d.date(),
    "week": lambda d: d.date() - timedelta(days=d.weekday()),
    "month": lambda d: (d.year, d.month),
}


@settings(max_examples=300, deadline=None)
@given(at=instants, zone=st.sampled_from(ZONES), window=st.sampled_from(["day", "week", "month"]))
@example(at=1_004_236_260, zone="America/St_Johns", window="day")  # inside a repeated midnight
@example(at=1_004_236_230, zone="America/St_Johns", window="day")  # its first occurrence
@example(at=1_446_354_000, zone="America/Havana", window="day")  # clocks back within the day (01:00 to 00:00)
@example(at=1_446_350_400, zone="America/Havana", window="day")  # the first reading of that midnight
def test_a_calendar_window_is_every_instant_with_the_same_local_date_week_or_month(
    at: int, zone: str, window: str
) -> None:
    instance = window_at(window, zone, at * NS + 123)  # type: ignore[arg-type]
    assert instance.start_ns is not None and instance.end_ns is not None
    start, end = instance.start_ns // NS, instance.end_ns // NS
    label = LABELS[window]
    assert start <= at < end
    own = label(local(start, zone))
    if label(local(at, zone)) != own:
        # A midnight that occurs twice (St. John's, 2001-10-28: clocks went back at 00:01 to 23:01): the
        # minute between its two occurrences reads the next date but belongs to the day it returns to.
        assert label(local(end, zone)) == label(local(at, zone)) and end - at <= 3600
    assert label(local(start - 1, zone)) != own  # nothing earlier belongs to it
    assert label(local(end - 1, zone)) == own
    assert label(local(end, zone)) != own  # the next one starts at the end
    assert instance.key == local(start, zone).isoformat()
    if window == "week":
        assert local(start, zone).weekday() == 0 or local(start - 1, zone).weekday() == 6


@settings(max_examples=300, deadline=None)
@given(at=instants, zone=st.sampled_from(ZONES))
def test_an_hour_window_is_the_60_minutes_from_the_local_full_hour(at: int, zone: str) -> None:
    instance = window_at("hour", zone, at * NS)
    assert instance.start_ns is not None and instance.end_ns is not None
    start, end = instance.start_ns // NS, instance.end_ns // NS
    assert start <= at < end and end - start == 3600
    begins = local(start, zone)
    assert (begins.minute, begins.second) == (0, 0)
    assert local(at, zone).hour == begins.hour


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Paris", date(2026, 3, 29), 23),  # spring forward
        ("Europe/Paris", date(2026, 10, 25), 25),  # fall back
        ("America/New_York", date(2026, 11, 1), 25),
        ("Europe/Paris", date(2026, 12, 2), 24),
    ],
)
def test_a_day_with_a_clock_change_is_23_or_25_hours_long(zone: str, day: date, hours: int) -> None:
    noon = int(datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(zone)).timestamp())
    instance = window_at("day", zone, noon * NS)
    assert instance.start_ns is not None and instance.end_ns is not None
    assert (instance.end_ns - instance.start_ns) // NS == hours * 3600
    assert (
        instance.key
        == f"{day.isoformat()}T00:00:00{local(instance.start_ns // NS, zone).strftime('%z')[:3]}:00"
    )


def test_total_and_run_windows_are_unbounded() -> None:
    assert window_at("total", "UTC", 5) == ("total", None, None)
    assert window_at("run", "UTC", 5, "r-1") == ("run:r-1", None, None)
