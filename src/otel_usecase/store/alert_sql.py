"""The alert claims table: one row per budget threshold crossing, the records and the SQL both stores run.

A crossing is identified across processes by (budget, window key, threshold).
The process whose ``INSERT ... ON CONFLICT DO NOTHING`` creates the row owns it
(``claimed_by``) and is the only one that may POST it; every later step is an
``UPDATE ... WHERE claimed_by = <me>``, so a process that lost its claim finds
out before it sends anything. ``claimed_ns`` is the owner's lease: it renews it
before every attempt and while it waits between retries; a row whose lease is
older than the taker's lease (the owner died or stopped retrying) is taken over
by one ``UPDATE`` that re-checks the age, so two takers never both win.

Times are the database's clock (``now`` below), so processes on hosts whose
clocks disagree still agree on a lease's age. ``next_ns`` is the time of the next
attempt; ``NULL`` with ``delivered_ns`` unset means the alert was given up
(refused by the receiver, or retried for too long) and is never tried again.
``webhook`` is the budget's own webhook, or ``NULL`` for the process default
(``OTEL_USECASE_ALERT_WEBHOOK``), which is not copied into the database.

Used by the ``# --- alerts ---`` blocks of :class:`~.sqlite.SQLiteStore` and
:class:`~.postgres.PostgresStore`; only :mod:`otel_usecase.budgets.alerts` calls them.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "ALERTS_DDL",
    "ALERTS_TABLE",
    "AlertKey",
    "AlertSQL",
    "ClaimedAlert",
    "alert_sql",
]

ALERTS_TABLE: Final = "otel_usecase_alerts"

ALERTS_DDL: Final[tuple[str, ...]] = (
    (
        f"CREATE TABLE IF NOT EXISTS {ALERTS_TABLE} ("
        "budget TEXT NOT NULL, window_key TEXT NOT NULL, threshold INTEGER NOT NULL, payload TEXT NOT NULL, "
        "webhook TEXT, claimed_by TEXT NOT NULL, claimed_ns BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "next_ns BIGINT, delivered_ns BIGINT, last_error TEXT, PRIMARY KEY (budget, window_key, threshold))"
    ),
    # The sweep for claims to take over reads only the alerts still pending, however many were delivered.
    (
        f"CREATE INDEX IF NOT EXISTS {ALERTS_TABLE}_pending ON {ALERTS_TABLE} (claimed_ns) "
        "WHERE delivered_ns IS NULL AND next_ns IS NOT NULL"
    ),
)
"""The table and its index (both stores speak this SQL); run by ``migrate`` on a new store and by
``Store.alerts_prepare`` on one created before alerts existed."""


class AlertKey(NamedTuple):
    """Which crossing: at most one delivery per key across every process sharing the store."""

    budget: str
    window_key: str
    threshold: int


class ClaimedAlert(NamedTuple):
    """A row a dispatcher claims or took over: what to send, and where."""

    key: AlertKey
    payload: str
    """The JSON body, exactly as signed and sent (every attempt sends the same bytes)."""
    webhook: str | None
    """The budget's own webhook; ``None``: the dispatcher's default."""
    attempts: int


class AlertSQL(NamedTuple):
    """The statements of one store, ``?`` placeholders, its clock in place of ``{now}``."""

    claim: str
    renew: str
    delivered: str
    retry_later: str
    give_up: str
    take_over: str
    release: str


_KEY: Final = "budget = ? AND window_key = ? AND threshold = ?"
_PENDING: Final = "delivered_ns IS NULL AND next_ns IS NOT NULL"


def alert_sql(now: str) -> AlertSQL:
    """The alert statements with ``now`` (an SQL expression of the current time in ns) as the clock.

    Every write returns the keys it touched (``RETURNING``), so each store counts
    rows the same way. Parameters, in order:

    - ``claim``: budget, window key, threshold, payload, webhook, owner.
    - ``renew``: key, owner (only while still pending: a given-up or delivered row is not renewed).
    - ``delivered``: key, owner.
    - ``retry_later``: error, delay in ns, key, owner.
    - ``give_up``: error, key, owner.
    - ``take_over``: new owner, lease ns, has default webhook (1/0), limit, lease ns, has default (1/0).
    - ``release``: owner (the owner stops: its pending claims may be taken over at once).
    """
    mine = f"{_KEY} AND claimed_by = ?"
    stale = f"{_PENDING} AND claimed_ns < {now} - ? AND (webhook IS NOT NULL OR ? = 1)"
    return AlertSQL(
        claim=(
            f"INSERT INTO {ALERTS_TABLE} (budget, window_key, threshold, payload, webhook, claimed_by, "
            f"claimed_ns, attempts, next_ns) VALUES (?, ?, ?, ?, ?, ?, {now}, 0, {now}) "
            "ON CONFLICT (budget, window_key, threshold) DO NOTHING RETURNING budget"
        ),
        renew=f"UPDATE {ALERTS_TABLE} SET claimed_ns = {now} WHERE {mine} AND {_PENDING} RETURNING budget",
        delivered=(
            f"UPDATE {ALERTS_TABLE} SET attempts = attempts + 1, delivered_ns = {now}, next_ns = NULL, "
            f"last_error = NULL, claimed_ns = {now} WHERE {mine} AND delivered_ns IS NULL RETURNING budget"
        ),
        retry_later=(
            f"UPDATE {ALERTS_TABLE} SET attempts = attempts + 1, last_error = ?, next_ns = {now} + ?, "
            f"claimed_ns = {now} WHERE {mine} AND delivered_ns IS NULL RETURNING budget"
        ),
        give_up=(
            f"UPDATE {ALERTS_TABLE} SET attempts = attempts + 1, last_error = ?, next_ns = NULL "
            f"WHERE {mine} AND delivered_ns IS NULL RETURNING budget"
        ),
        take_over=(
            f"UPDATE {ALERTS_TABLE} SET claimed_by = ?, claimed_ns = {now} "
            f"WHERE (budget, window_key, threshold) IN (SELECT budget, window_key, threshold "
            f"FROM {ALERTS_TABLE} WHERE {stale} ORDER BY claimed_ns LIMIT ?) "
            # Checked again on the row itself: of two takers, the second sees the first's fresh lease.
            f"AND {stale} RETURNING budget, window_key, threshold, payload, webhook, attempts"
        ),
        release=(
            f"UPDATE {ALERTS_TABLE} SET claimed_ns = 0 WHERE claimed_by = ? AND {_PENDING} RETURNING budget"
        ),
    )
