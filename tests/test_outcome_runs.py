"""store/outcome_runs_sql.py: each outcome's runs kept together, on SQLite and real PostgreSQL.

The copies must be the per-run rows of the runs with outcomes, with the number and sum of their
outcomes (``assert_outcome_runs_match_runs`` recomputes them from the two tables), through every write
that changes either side: outcomes before and after a run's calls, more calls, a better copy of a call,
reprice, forget, writers of calls and of outcomes at the same time, and the schema 12 -> 13 migration.
The cost per outcome read from them is checked against published prices (gpt-4o-mini $0.15/M input,
$0.60/M output).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from otel_usecase.cost.call import STATUS_PARTIAL
from otel_usecase.cost.prices import PriceBook
from otel_usecase.cost.reprice import reprice
from otel_usecase.erasure import forget_user
from otel_usecase.report.outcomes import outcome_report
from otel_usecase.store import ReportFilter, Store, open_store
from otel_usecase.store.outcome_sql import Outcome

from .builders import a_call
from .expect import mini_cost
from .test_rollups import _execute, assert_outcome_runs_match_runs, assert_rollups_match_ledger

HOUR = 3_600_000_000_000
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC


def call(n: int, run: str, tokens: tuple[int, int] = (100, 50), **fields: Any) -> Any:
    prompt, completion = tokens
    fields.setdefault("cost_usd", mini_cost(prompt, completion))
    return a_call(trace_id=f"{n:032x}", span_id=f"{n:016x}", start_ns=T0 + n * HOUR // 10,
                  end_ns=T0 + n * HOUR // 10 + 9, use_case="support", run_id=run,
                  tokens={"input": prompt, "output": completion}, **fields)  # fmt: skip


def outcome(n: int, run: str, value: float = 1.0, name: str = "resolved") -> Outcome:
    return Outcome(f"{n:032x}", "f" * 16, T0 + n, None, "support", run, name, value)


def copies(store: Store) -> dict[tuple[str, str], tuple[int, float, float | None]]:
    """(name, run) -> (outcomes, their value, the run's cost) as the copies hold them (SQLite: the rows still
    pending folded first, as a reader adds them)."""
    if hasattr(store, "fold"):
        store.fold()
    rows = store.query("SELECT name, run_id, outcomes, outcome_value, dear_cost FROM usecase_outcome_runs")
    return {(str(r[0]), str(r[1])): (int(r[2]), float(r[3]), r[4]) for r in rows}


def test_each_outcomes_runs_follow_their_calls_and_outcomes_through_every_write(store: Store) -> None:
    assert store.view_sql().outcome_runs
    # an outcome before its run's calls: no copy until the run has a row
    assert store.write_outcomes([outcome(1, "r1", 2.0)]) == []
    assert copies(store) == {}
    assert store.write([call(1, "r1", user_id="ann"), call(2, "r2", user_id="bob")]) == []
    assert_rollups_match_ledger(store)
    assert copies(store) == {("resolved", "r1"): (1, 2.0, pytest.approx(mini_cost(100, 50)))}
    # outcomes after the calls, two names, two of one name
    assert store.write_outcomes([outcome(2, "r2"), outcome(3, "r2", 0.5), outcome(4, "r1", 1.0, "csat")]) == []
    assert_rollups_match_ledger(store)
    assert copies(store)[("resolved", "r2")] == (2, 1.5, pytest.approx(mini_cost(100, 50)))
    # more calls, a partial copy then the complete one of a call: the copies take the run's new cost
    assert store.write([call(3, "r1", (300, 30)), call(4, "r2", (7, 0), status=STATUS_PARTIAL,
                                                               cost_usd=mini_cost(7, 0))]) == []  # fmt: skip
    assert store.write([call(4, "r2", (7, 3))]) == []
    assert_rollups_match_ledger(store)
    assert copies(store)[("resolved", "r1")][2] == pytest.approx(mini_cost(100, 50) + mini_cost(300, 30))
    assert copies(store)[("resolved", "r2")][2] == pytest.approx(mini_cost(100, 50) + mini_cost(7, 3))
    # a stale price repriced
    assert store.write([call(5, "r3", cost_usd=0.5, user_id="ann")]) == []
    assert store.write_outcomes([outcome(5, "r3")]) == []
    assert copies(store)[("resolved", "r3")][2] == pytest.approx(0.5)
    assert reprice(store, PriceBook()).changed >= 1
    assert_rollups_match_ledger(store)
    assert copies(store)[("resolved", "r3")][2] == pytest.approx(mini_cost(100, 50))
    # the cost per outcome read from them, against published prices
    (row,) = outcome_report(store, ReportFilter(), "resolved", "use-case").rows
    cost = 2 * mini_cost(100, 50) + mini_cost(300, 30) + mini_cost(7, 3) + mini_cost(100, 50)
    assert (row.runs, row.runs_with_outcome, row.outcomes, row.outcome_value) == (3, 3, 4, 4.5)
    assert row.cost_usd == pytest.approx(cost) and row.cost_per_outcome_usd == pytest.approx(cost / 4.5)
    assert row.cost_without_outcome_usd == 0.0
    ann = {r.key["user_id"]: r for r in outcome_report(store, ReportFilter(user_id="ann"), "resolved", "user").rows}
    assert ann["ann"].outcome_value == 3.0
    # forget a user: the copies hold the tombstone, none of the id
    forget_user(store, "ann")
    assert_rollups_match_ledger(store)
    assert not store.query("SELECT 1 FROM usecase_outcome_runs WHERE user_id = 'ann'")


def test_a_runs_first_calls_and_its_outcome_written_at_the_same_time_are_copied_together(
    sqlite_or_postgres: str,
) -> None:
    """Two stores (PostgreSQL: two connections) write each new run's first calls and its outcome at once,
    60 times: whichever commits first, the copy has both (each side waits for the other's run lock)."""
    calls_store, outcomes_store = open_store(sqlite_or_postgres), open_store(sqlite_or_postgres)
    failures: list[BaseException] = []
    try:
        for n in range(60):
            barrier = threading.Barrier(2)

            def write_calls(n: int = n, barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait(10)
                    assert calls_store.write([call(100 + 2 * n, f"c{n}"), call(101 + 2 * n, f"c{n}")]) == []
                except BaseException as exc:
                    failures.append(exc)

            def write_outcome(n: int = n, barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait(10)
                    assert outcomes_store.write_outcomes([outcome(1000 + n, f"c{n}")]) == []
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=write_calls), threading.Thread(target=write_outcome)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert not failures, failures
        assert_outcome_runs_match_runs(calls_store)
        found = copies(calls_store)
        assert len(found) == 60
        assert all(v[:2] == (1, 1.0) and v[2] == pytest.approx(2 * mini_cost(100, 50)) for v in found.values())
    finally:
        calls_store.close()
        outcomes_store.close()


def test_the_migration_keeps_each_outcomes_runs_of_a_schema_12_ledger(sqlite_or_postgres: str) -> None:
    store = open_store(sqlite_or_postgres)
    try:
        assert store.write([call(n, f"m{n % 4}", (100 + n, 10)) for n in range(12)]) == []
        assert store.write_outcomes([outcome(n, f"m{n % 3}", 1.0 + n) for n in range(5)]) == []
    finally:
        store.close()
    _execute(  # what otel-usecase 0.x of schema 12 left: no copies
        sqlite_or_postgres,
        ["DROP TABLE usecase_outcome_runs", "UPDATE otel_usecase_meta SET value = '12' WHERE key = 'schema_version'"],
        [],
    )  # fmt: skip
    reader = open_store(sqlite_or_postgres, create=False)  # a reader of the old schema: every run's totals
    try:
        assert not reader.view_sql().outcome_runs
        before = outcome_report(reader, ReportFilter(), "resolved", "use-case")
    finally:
        reader.close()
    store = open_store(sqlite_or_postgres)
    try:
        assert store.view_sql().outcome_runs
        assert_rollups_match_ledger(store)
        assert set(copies(store)) == {("resolved", "m0"), ("resolved", "m1"), ("resolved", "m2")}
        after = outcome_report(store, ReportFilter(), "resolved", "use-case")
        (row,) = after.rows
        assert (row.runs, row.runs_with_outcome, row.outcomes, row.outcome_value) == (4, 3, 5, 15.0)
        assert row.cost_usd == pytest.approx(sum(mini_cost(100 + n, 10) for n in range(12)))
        assert row.cost_without_outcome_usd == pytest.approx(sum(mini_cost(100 + n, 10) for n in (3, 7, 11)))
        assert [r._replace(cost_usd=None, cost_per_outcome_usd=None, cost_without_outcome_usd=None)
                for r in before.rows] == [r._replace(cost_usd=None, cost_per_outcome_usd=None,
                                                     cost_without_outcome_usd=None) for r in after.rows]  # fmt: skip
    finally:
        store.close()


def test_prune_takes_the_outcomes_it_deletes_out_of_their_runs_copies(store: Store) -> None:
    """Prune deletes old outcomes: their runs' copies lose them (as the outcomes table does), the runs stay
    (as every kept total does), and no outcome is counted twice or below zero."""
    from otel_usecase.retention import prune

    assert store.write([call(n, f"p{n}") for n in range(4)]) == []
    old, new = T0 - 10 * HOUR, T0 + 20 * HOUR
    assert store.write_outcomes([
        Outcome("a" * 32, "1" * 16, old, None, "support", "p0", "resolved", 1.0),
        Outcome("b" * 32, "1" * 16, new, None, "support", "p0", "resolved", 2.0),
        Outcome("c" * 32, "1" * 16, old, None, "support", "p1", "resolved", 4.0),
        Outcome("d" * 32, "1" * 16, old, None, "support", "gone", "resolved", 8.0),  # no run
        Outcome("e" * 32, "1" * 16, new, None, "support", "p2", "resolved", 16.0),
    ]) == []  # fmt: skip
    assert set(copies(store)) == {("resolved", "p0"), ("resolved", "p1"), ("resolved", "p2")}
    pruned = prune(store, T0 - HOUR)
    assert pruned.outcomes == 3
    assert_outcome_runs_match_runs(store)
    assert copies(store) == {("resolved", "p0"): (1, 2.0, pytest.approx(mini_cost(100, 50))),
                             ("resolved", "p2"): (1, 16.0, pytest.approx(mini_cost(100, 50)))}  # fmt: skip
    report = outcome_report(store, ReportFilter(), "resolved", "use-case")
    (row,) = report.rows
    assert (row.runs, row.runs_with_outcome, row.outcomes, row.outcome_value) == (4, 2, 2, 18.0)
    assert (report.outside_outcomes, report.outside_value) == (0, 0.0)
