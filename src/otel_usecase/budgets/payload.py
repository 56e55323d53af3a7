"""The JSON body of a budget alert: one crossing, rendered once, sent (and signed) as the same bytes.

The body is a function of the crossing alone, so every process that could
claim a crossing renders the same bytes, a retry sends what the first attempt
sent, and its ``id`` is the same everywhere (a receiver keeps the ids it has
seen to drop a repeat: see README "Alerts").
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import fields
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .model import Budget, Crossing

__all__ = ["SELECTOR_FIELDS", "alert_id", "payload"]

SELECTOR_FIELDS: Final[tuple[str, ...]] = tuple(
    name
    for name in ("use_case", "user_id", "experience_name", "version", "tag", "tags")
    if name in {f.name for f in fields(Budget)}
)
"""The fields of :class:`Budget` that select calls, in the body's ``selector`` (each one, ``null`` when unset;
``tags`` an object of the tags a call must have, ``{}`` when none)."""


def alert_id(budget: str, window_key: str, threshold: int) -> str:
    """The crossing's id: the same in every process, different for every (budget, window, threshold)."""
    key = json.dumps([budget, window_key, threshold], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def payload(crossing: Crossing) -> bytes:
    """The alert body (UTF-8 JSON) of ``crossing``.

    ``time`` is when the spend crossed the threshold, ISO 8601 in UTC; the
    window's ``start`` and ``end`` are in the budget's time zone (``null`` for a
    ``run`` or ``total`` window); ``limit_usd`` is the budget's amount for the
    window and ``threshold`` the percentage of it reached. A non-finite figure
    (never expected) is ``null`` rather than invalid JSON.
    """
    budget = crossing.budget
    zone = _zone(budget.timezone)
    body: dict[str, Any] = {
        "id": alert_id(budget.name, crossing.window_key, crossing.threshold),
        "budget": budget.name,
        "selector": {
            name: dict(budget.tags) if name == "tags" else _plain(getattr(budget, name))
            for name in SELECTOR_FIELDS
        },
        "mode": budget.mode,
        "window": {
            "kind": budget.window,
            "key": crossing.window_key,
            "start": _iso(crossing.window_start_ns, zone),
            "end": _iso(crossing.window_end_ns, zone),
            "timezone": budget.timezone,
        },
        "spent_usd": _finite(crossing.spent_usd),
        "limit_usd": _finite(crossing.limit_usd),
        "threshold": crossing.threshold,
        "time": _iso(crossing.at_ns, UTC),
        "text": _text(crossing),
    }
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _text(crossing: Crossing) -> str:
    """One line for a chat channel (Slack-compatible webhooks show ``text``)."""
    budget = crossing.budget
    spent = _finite(crossing.spent_usd)
    limit = _finite(crossing.limit_usd)
    money = (
        f"${spent:,.2f} of ${limit:,.2f}" if spent is not None and limit is not None else "an unknown amount"
    )
    window = "this run" if budget.window == "run" else f"the {budget.window} window {crossing.window_key}"
    then = " New scopes are refused." if budget.mode == "block" and crossing.threshold >= 100 else ""
    return (
        f"Budget {budget.name!r} (use case {budget.use_case!r}) reached {crossing.threshold}%: "
        f"{money} spent in {window}.{then}"
    )


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return UTC


def _iso(ns: int | None, zone: tzinfo) -> str | None:
    if ns is None:
        return None
    try:
        moment = datetime.fromtimestamp(ns / 1e9, tz=zone)
    except (OverflowError, OSError, ValueError, TypeError):
        return None
    text = moment.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if zone is UTC and text.endswith("+00:00") else text


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _plain(value: object) -> object:
    """A selector value as JSON can hold it (tuples become lists; anything odd its ``str``)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (tuple, list, frozenset, set)):
        return [_plain(v) for v in value]
    return str(value)
