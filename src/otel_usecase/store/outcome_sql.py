"""The outcomes table: what runs achieved (``record_outcome``), the record and the SQL both stores run.

One row per recorded outcome, keyed like a call by (trace id, span id): the ids
of the outcome's span (:mod:`otel_usecase.outcomes`), so the exporter's retry, a
resent OTLP request or the same span reaching ``serve`` twice write it once
(``ON CONFLICT DO NOTHING``: an outcome has no better copy). Two
``record_outcome`` calls are two rows, summed by the report.

Reports join outcomes to the ledger's runs by (use case, run id) in Python
(:mod:`otel_usecase.report.outcomes`): the covering index below answers the
per-run sums of one outcome name without reading the table.

The table is created with a new store (``migrate`` runs :data:`OUTCOMES_DDL`)
and, for a store created before outcomes existed, by the first outcome write
(each store's ``write_outcomes``): a store without outcomes pays nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from .base import INT64_MAX, INT64_MIN, Unstorable, one_line

__all__ = [
    "INSERT_SQL",
    "OUTCOMES_DDL",
    "OUTCOMES_TABLE",
    "OUTCOME_COLUMNS",
    "Outcome",
    "RejectedOutcome",
    "outcome_problem",
    "outcome_totals_sql",
    "run_outcomes_sql",
    "runs_totals_sql",
    "scope_sums_sql",
    "write_outcomes_isolating",
]

OUTCOMES_TABLE: Final = "otel_usecase_outcomes"

OUTCOME_COLUMNS: Final[tuple[str, ...]] = (
    "trace_id",
    "span_id",
    "recorded_ns",
    "service",
    "use_case",
    "run_id",
    "name",
    "value",
)
"""The table's columns, in the order of :class:`Outcome`'s fields."""

OUTCOMES_DDL: Final[tuple[str, ...]] = (
    (
        f"CREATE TABLE IF NOT EXISTS {OUTCOMES_TABLE} ("
        "trace_id TEXT NOT NULL, span_id TEXT NOT NULL, recorded_ns BIGINT NOT NULL, service TEXT, "
        "use_case TEXT NOT NULL, run_id TEXT NOT NULL, name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (trace_id, span_id))"
    ),
    # Covering for the per-run sums of one outcome (the report) and finds a run's outcomes.
    (
        f"CREATE INDEX IF NOT EXISTS {OUTCOMES_TABLE}_runs ON {OUTCOMES_TABLE} "
        "(name, use_case, run_id, recorded_ns, value)"
    ),
    f"CREATE INDEX IF NOT EXISTS {OUTCOMES_TABLE}_run ON {OUTCOMES_TABLE} (run_id)",
)
"""Both stores speak this SQL (SQLite reads ``BIGINT`` as INTEGER and ``DOUBLE PRECISION`` as REAL)."""

INSERT_SQL: Final = (
    f"INSERT INTO {OUTCOMES_TABLE} ({', '.join(OUTCOME_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))}) ON CONFLICT (trace_id, span_id) DO NOTHING"
)
"""Idempotent: the same outcome span written again (a retry, a resent request) changes nothing."""


class Outcome(NamedTuple):
    """One recorded outcome: ``value`` of ``name`` achieved by run ``run_id`` of ``use_case``.

    ``trace_id`` and ``span_id`` (hex) are those of the outcome's span: its key.
    """

    trace_id: str
    span_id: str
    recorded_ns: int
    service: str | None
    use_case: str
    run_id: str
    name: str
    value: float


class RejectedOutcome(NamedTuple):
    """An outcome the store could not take because of its own data, and why (field, rule, value)."""

    outcome: Outcome
    reason: str


_TEXT: Final = ("trace_id", "span_id", "service", "use_case", "run_id", "name")


def outcome_problem(outcome: Outcome) -> str | None:
    """Why the table cannot hold ``outcome`` (the field, the rule and the value's repr), or ``None``."""
    for field in _TEXT:
        value = getattr(outcome, field)
        if value is None:
            if field != "service":
                return f"{field} is required (NOT NULL), got None"
            continue
        if not isinstance(value, str):
            return f"{field} must be text, got {value!r}"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{field} must be valid Unicode text (no lone surrogates), got {value!r}"
    ns = outcome.recorded_ns
    if isinstance(ns, bool) or not isinstance(ns, int) or not INT64_MIN <= ns <= INT64_MAX:
        return f"recorded_ns must fit in a 64-bit integer, got {ns!r}"
    value = outcome.value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"value must be a finite number, got {value!r}"
    return None


def write_outcomes_isolating(
    outcomes: Sequence[Outcome], write_batch: Callable[[Sequence[Outcome]], None]
) -> list[RejectedOutcome]:
    """Write ``outcomes`` with a store's atomic ``write_batch``, setting apart those the table cannot hold.

    Outcomes breaking :func:`outcome_problem` never reach the database; when the
    database still refuses the batch (:class:`~.base.Unstorable`: a rule only it
    knows) each outcome is written alone and the refused ones are returned.
    Outcomes are few (one per run or so), so no bisection. An outage
    (``StoreUnavailable``) passes through: the caller keeps the outcomes and retries.
    """
    rejected: list[RejectedOutcome] = []
    keep: list[Outcome] = []
    for outcome in outcomes:
        problem = outcome_problem(outcome)
        if problem is None:
            keep.append(outcome)
        else:
            rejected.append(RejectedOutcome(outcome, problem))
    if not keep:
        return rejected
    try:
        write_batch(keep)
        return rejected
    except Unstorable:
        pass
    for outcome in keep:
        try:
            write_batch([outcome])
        except Unstorable as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            rejected.append(RejectedOutcome(outcome, f"the store refused it: {one_line(cause)[:300]}"))
    return rejected


def outcome_totals_sql(name: str, use_case: str | None = None) -> tuple[str, list[Any]]:
    """Per run, the outcomes named ``name``: ``(use_case, run_id, count, sum of values, first recorded_ns)``."""
    params: list[Any] = [name]
    clause = "name = ?"
    if use_case is not None:
        clause += " AND use_case = ?"
        params.append(use_case)
    sql = (
        f"SELECT use_case, run_id, COUNT(*), SUM(value), MIN(recorded_ns) FROM {OUTCOMES_TABLE} "
        f"WHERE {clause} GROUP BY name, use_case, run_id"
    )
    return sql, params


def _scope(name: str, use_case: str | None, use_cases: Sequence[str] | None) -> tuple[str, list[Any]]:
    from .runs_sql import use_case_clauses

    clauses, params = use_case_clauses(use_case, use_cases)
    return " AND ".join(["name = ?", *clauses]), [name, *params]


def scope_sums_sql(
    name: str,
    use_case: str | None = None,
    use_cases: Sequence[str] | None = None,
    since: int | None = None,
    until: int | None = None,
) -> tuple[str, list[Any]]:
    """The outcomes named ``name`` of ``use_case`` (or of the allowed set ``use_cases``): how many, the
    sum of their values. Given ``[since, until)``, those of the runs whose first outcome of the name is in
    it (each run's outcomes summed in the database through the covering index)."""
    where, params = _scope(name, use_case, use_cases)
    if since is None and until is None:
        return f"SELECT COUNT(*), SUM(value) FROM {OUTCOMES_TABLE} WHERE {where}", params
    low = INT64_MIN if since is None else int(since)
    high = INT64_MAX if until is None else int(until)
    sql = (
        f"SELECT SUM(n), SUM(v) FROM (SELECT COUNT(*) AS n, SUM(value) AS v, MIN(recorded_ns) AS first_ns "
        f"FROM {OUTCOMES_TABLE} WHERE {where} GROUP BY use_case, run_id) AS runs "
        "WHERE first_ns >= ? AND first_ns < ?"
    )
    return sql, [*params, low, high]


def runs_totals_sql(name: str, runs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """Of each of ``runs`` ((use case, run id) each, a few hundred at most) with outcomes named ``name``:
    ``(use_case, run_id, count, sum of values, first recorded_ns)``, as :func:`outcome_totals_sql`."""
    pairs = " OR ".join("(run_id = ? AND use_case = ?)" for _ in runs)
    sql = (
        f"SELECT use_case, run_id, COUNT(*), SUM(value), MIN(recorded_ns) FROM {OUTCOMES_TABLE} "
        f"WHERE name = ? AND ({pairs}) GROUP BY use_case, run_id"
    )
    return sql, [name, *(v for use_case, run_id in runs for v in (run_id, use_case))]


def run_outcomes_sql(run_id: str) -> tuple[str, list[Any]]:
    """The outcomes of one run (any use case), in the order recorded."""
    return (
        (
            f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM {OUTCOMES_TABLE} WHERE run_id = ? "
            "ORDER BY recorded_ns, span_id"
        ),
        [run_id],
    )


def outcome_of(row: Sequence[Any]) -> Outcome:
    """The :class:`Outcome` of a row in :data:`OUTCOME_COLUMNS` order."""
    trace_id, span_id, recorded_ns, service, use_case, run_id, name, value = row
    return Outcome(trace_id, span_id, int(recorded_ns), service, use_case, run_id, name, float(value))
