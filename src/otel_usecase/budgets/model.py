"""Budgets as data: what a budget selects, how much it allows, over which window, and what happens.

The records shared by the budget store, the in-memory spend tracker, the scope
check and the alerts. Validation of a budget (names are code: a bad budget
raises ``ValueError`` where it is defined) lives with the record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from .._log import warn_rate_limited

if TYPE_CHECKING:
    from ..store.budget_sql import SpendQuery

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MODES",
    "WINDOWS",
    "Budget",
    "BudgetExceeded",
    "Crossing",
    "Mode",
    "Window",
    "stored_budgets",
]

Window = Literal["run", "hour", "day", "week", "month", "total"]
WINDOWS: Final[tuple[Window, ...]] = ("run", "hour", "day", "week", "month", "total")
Mode = Literal["warn", "block"]
MODES: Final[tuple[Mode, ...]] = ("warn", "block")
_NO_TAGS: Final[Mapping[str, str]] = MappingProxyType({})
DEFAULT_THRESHOLDS: Final[tuple[int, ...]] = (50, 80, 100)
"""Alert thresholds, in percent of the amount, when a budget names none."""


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget: a selector, an amount in USD per window, a mode and alert thresholds.

    The selector is ``use_case`` plus the optional fields; a call counts towards
    the budget when every field that is set equals the call's. ``timezone`` (an
    IANA name) says where an hour, day, week (Monday first) or month starts.
    ``webhook``: where this budget's alerts go (``None``: ``OTEL_USECASE_ALERT_WEBHOOK``).

    Validated on construction (names are code: a bad budget raises ``ValueError``
    naming the value and the rule where it is defined). ``user_id`` and ``version``
    are ids, normalised as a scope normalises them; ``user_id`` is stored the way
    scopes store it (``hmac-sha256:<hex>`` when ``OTEL_USECASE_USER_ID_HMAC_KEY``
    is set), so a budget on a user selects that user's calls. ``tags``: (key, value)
    pairs a call's tags must all have (keys are names, values ids normalised as a
    scope's), kept sorted by key.
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
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        from ..scope.validation import check_name, scope_id

        check_name("name", self.name)
        check_name("use_case", self.use_case)
        amount = self.amount_usd
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
            raise ValueError(f"amount_usd={amount!r} is not a finite number of US dollars")
        if amount <= 0:
            raise ValueError(f"amount_usd={amount!r} must be more than 0 (US dollars per window)")
        _set(self, "amount_usd", float(amount))
        if self.window not in WINDOWS:
            raise ValueError(f"window={self.window!r} is not one of {', '.join(WINDOWS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        _check_timezone(self.timezone)
        _set(self, "thresholds", _checked_thresholds(self.thresholds))
        if self.user_id is not None:
            _set(self, "user_id", _stored_user_id(scope_id("user_id", self.user_id)))
        if self.experience_name is not None:
            check_name("experience_name", self.experience_name)
        if self.version is not None:
            _set(self, "version", scope_id("use_case_version", self.version))
        if self.webhook is not None and (
            not isinstance(self.webhook, str) or not self.webhook.startswith(("http://", "https://"))
        ):
            raise ValueError(f"webhook={self.webhook!r} is not an http:// or https:// URL")
        _set(self, "tags", _checked_tags(self.tags))

    def selects(
        self,
        use_case: str | None,
        user_id: str | None,
        experience_name: str | None,
        version: str | None,
        tags: Mapping[str, str] = _NO_TAGS,
    ) -> bool:
        """Whether a call or scope with these values counts towards this budget (every set field equal,
        every tag of the selector among ``tags``)."""
        return (
            use_case == self.use_case
            and (self.user_id is None or user_id == self.user_id)
            and (self.experience_name is None or experience_name == self.experience_name)
            and (self.version is None or version == self.version)
            and (not self.tags or has_tags(tags, self.tags))
        )

    def spend_query(self) -> SpendQuery:
        """The store query of this budget's calls (window bounds set by the caller)."""
        from ..store.budget_sql import SpendQuery

        return SpendQuery(self.use_case, self.user_id, self.experience_name, self.version, tags=self.tags)

    def selector(self) -> dict[str, str]:
        """The selector's set fields, by name (for messages, ``status`` and alert payloads)."""
        values = {
            "use_case": self.use_case,
            "user_id": self.user_id,
            "experience_name": self.experience_name,
            "version": self.version,
            **{f"tag:{key}": value for key, value in self.tags},
        }
        return {key: value for key, value in values.items() if value is not None}

    def to_json(self) -> str:
        """The budget as stored (the ``spec`` column): a JSON object of every field."""
        values: dict[str, Any] = asdict(self)
        values["thresholds"] = list(self.thresholds)
        values["user_id"] = None if self.user_id is None else str(self.user_id)
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, spec: str) -> Budget:
        """A budget read back from the store. Raises ``ValueError`` when ``spec`` is not a valid budget.

        A stored user id that is already hashed is trusted (the store is the
        operator's, and hashing it again would select nobody); fields this
        version does not know (a newer writer) are ignored.
        """
        from ..scope.privacy import is_hashed_user_id, trust_hashed_user_id

        try:
            values = json.loads(spec)
        except ValueError as exc:
            raise ValueError(f"budget spec is not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"budget spec is not a JSON object: {spec[:200]!r}")  # noqa: TRY004 (data, one error type)
        known = {key: value for key, value in values.items() if key in cls.__dataclass_fields__}
        user = known.get("user_id")
        if isinstance(user, str) and is_hashed_user_id(user):
            known["user_id"] = trust_hashed_user_id(user)
        if isinstance(known.get("thresholds"), list):
            known["thresholds"] = tuple(known["thresholds"])
        if isinstance(known.get("tags"), list):
            known["tags"] = tuple(tuple(pair) if isinstance(pair, list) else pair for pair in known["tags"])
        try:
            return cls(**known)
        except TypeError as exc:
            raise ValueError(f"budget spec {spec[:200]!r} is not a budget: {exc}") from None


def has_tags(tags: Mapping[str, str], wanted: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``tags`` has every (key, value) of ``wanted``."""
    return all(tags.get(key) == value for key, value in wanted)


def _checked_tags(given: object) -> tuple[tuple[str, str], ...]:
    """A budget's tag selector as sorted (key, value) pairs: from pairs or a mapping; keys are names
    (``ValueError`` naming a bad one), values ids (normalised as a scope's)."""
    from ..scope.validation import check_name, scope_id

    pairs = given.items() if isinstance(given, Mapping) else given
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise ValueError(f"tags={given!r} is not a mapping or (key, value) pairs")
    checked: dict[str, str] = {}
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"tag {pair!r} in tags={given!r} is not a (key, value) pair")
        key = check_name("tag key", pair[0])
        value = scope_id(f"tags[{key!r}]", pair[1])
        if value is None:
            raise ValueError(f"tag {key!r} in tags={given!r} has an empty value")
        checked[key] = value
    return tuple(sorted(checked.items()))


def _set(budget: Budget, field: str, value: object) -> None:
    object.__setattr__(budget, field, value)  # frozen: normalised once, in __post_init__


def _check_timezone(name: object) -> None:
    try:
        if not isinstance(name, str):
            raise TypeError
        ZoneInfo(name)
    except Exception:
        raise ValueError(
            f"timezone={name!r} is not an IANA time zone name (such as UTC, Europe/Paris or America/New_York)"
        ) from None


def _checked_thresholds(given: object) -> tuple[int, ...]:
    """Sorted, without repeats; each a whole percent from 1 to 1000."""
    if isinstance(given, (str, bytes)) or not hasattr(given, "__iter__"):
        raise ValueError(f"thresholds={given!r} is not a list of whole percents (such as 50, 80, 100)")
    values = list(given)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ValueError(
                f"threshold {value!r} in thresholds={given!r} is not a whole percent from 1 to 1000"
            )
    if not values:
        raise ValueError("thresholds=() is empty: give at least one percent (such as 100)")
    return tuple(sorted(set(values)))


def _stored_user_id(user_id: str | None) -> str | None:
    """The user id as scopes store it (hashed when hashing is on), so the budget selects that user's calls."""
    if user_id is None:
        return None
    from ..scope.tracking import stored_user_id

    stored = stored_user_id(user_id)
    if stored is None:
        raise ValueError(
            "user_id cannot be selected: user ids are dropped from all telemetry because "
            "OTEL_USECASE_USER_ID_HMAC_KEY is too short (see its error in the log)"
        )
    return stored


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


def stored_budgets(rows: list[tuple[str, str, int]]) -> dict[str, Budget]:
    """The stored budgets that are valid here; a bad one is logged (rate-limited) and left out, never raised."""
    budgets = {}
    for name, spec, _ in rows:
        try:
            budgets[name] = Budget.from_json(spec)
        except ValueError as exc:
            warn_rate_limited(
                f"budgets:bad:{name}", "otel_usecase: stored budget %r is ignored: %s", name, exc
            )
    return budgets
