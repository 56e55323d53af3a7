"""Budgets as data: what a budget selects, how much it allows, over which window, and what happens.

The records shared by the budget store, the in-memory spend tracker, the scope
check and the alerts. Validation of a budget (names are code: a bad budget
raises ``ValueError`` where it is defined) lives with the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MODES",
    "WINDOWS",
    "Budget",
    "BudgetExceeded",
    "Crossing",
    "Mode",
    "Window",
]

Window = Literal["run", "hour", "day", "week", "month", "total"]
WINDOWS: Final[tuple[Window, ...]] = ("run", "hour", "day", "week", "month", "total")
Mode = Literal["warn", "block"]
MODES: Final[tuple[Mode, ...]] = ("warn", "block")
DEFAULT_THRESHOLDS: Final[tuple[int, ...]] = (50, 80, 100)
"""Alert thresholds, in percent of the amount, when a budget names none."""


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget: a selector, an amount in USD per window, a mode and alert thresholds.

    The selector is ``use_case`` plus the optional fields; a call counts towards
    the budget when every field that is set equals the call's. ``timezone`` (an
    IANA name) says where an hour, day, week (Monday first) or month starts.
    ``webhook``: where this budget's alerts go (``None``: ``OTEL_USECASE_ALERT_WEBHOOK``).
    """

    name: str
    use_case: str
    amount_usd: float
    window: Window = "day"
    mode: Mode = "warn"
    timezone: str = "UTC"
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    user_id: str | None = None
    experience_name: str | None = None
    version: str | None = None
    webhook: str | None = None


class Crossing(NamedTuple):
    """A budget's spend reached one of its thresholds in one window (told to the alerts once per process).

    ``window_key`` names the window instance: ``"run:<run id>"``, ``"total"``, or the
    window's start as ISO 8601 in the budget's time zone (``"2026-12-02T00:00:00+01:00"``).
    ``(budget.name, window_key, threshold)`` identifies the crossing across processes.
    """

    budget: Budget
    window_key: str
    window_start_ns: int | None
    window_end_ns: int | None
    threshold: int
    spent_usd: float
    limit_usd: float
    at_ns: int


class BudgetExceeded(Exception):
    """Raised when a scope is entered (or :func:`otel_usecase.check_budget` is called) under an exhausted
    ``block`` budget: the one deliberate raise of this library, so the app can answer 429 or 402.
    """

    def __init__(
        self,
        budget: Budget,
        window_key: str,
        spent_usd: float,
        limit_usd: float,
        window_end_ns: int | None = None,
    ) -> None:
        self.budget = budget
        self.window_key = window_key
        self.spent_usd = spent_usd
        self.limit_usd = limit_usd
        self.window_end_ns = window_end_ns
        super().__init__(
            f"budget {budget.name!r} (use case {budget.use_case!r}, {budget.window} window {window_key}) "
            f"is exhausted: spent ${spent_usd:.6f} of ${limit_usd:.6f}"
        )
