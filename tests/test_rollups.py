"""The rollups stay equal to the ledger: after inserts, a better copy replacing a call, ``reprice``,
two processes writing at once, and the migration that creates them, on SQLite and real PostgreSQL.

Each check recomputes every rollup row in Python from the ledger's rows (not with the store's SQL), and
the totals from published prices (gpt-4o-mini: $0.15/M input, $0.60/M output).
"""

from __future__ import annotations

import json

import sqlite3
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_usecase.cost.call import STATUS_PARTIAL
from otel_usecase.cost.prices import PriceBook
from otel_usecase.cost.reprice import reprice
from otel_usecase.report import views
from otel_usecase.report.queries import build_report
from otel_usecase.store import ReportFilter, Store, StoreUnavailable, open_store
from otel_usecase.store import groups_sql, runs_sql
from otel_usecase.store.base import COLUMNS, TABLE, TOKEN_COLUMNS, row_of, tags_of

from .builders import a_call
from .expect import mini_cost

HOUR = 3_600_000_000_000
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC
ROOT = Path(__file__).resolve().parent.parent

HOUR_KEYS = ("use_case", "use_case_version", "experience_name", "provider", "model", "step", "cost_source")
RUN_KEYS = ("user_id", "experience_name", "experience_id", "use_case_version")
MEASURES = ("calls", *TOKEN_COLUMNS, "cost_calls", "unpriced_calls", "no_usage_calls", "partial_calls",
            "error_calls")  # fmt: skip


def _run_keys() -> tuple[str, ...]:
    return RUN_KEYS + (("tags",) if "tags" in COLUMNS else ())


def _runs_dims() -> tuple[str, ...]:
    """The per-run table's dimensions: the run rollup's, and the experience version (schema 12)."""
    return (*_run_keys(), "experience_version")


def expected_rollups(
    store: Store,
) -> tuple[dict[tuple[Any, ...], list[Any]], dict[tuple[Any, ...], list[Any]]]:
    """Both rollups computed here from the ledger's rows: {key: [*counts, cost]} and {key: [..., first, last, end]}."""
    at = {c: i for i, c in enumerate(COLUMNS)}
    hours: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * len(MEASURES) + [0.0])
    runs: dict[tuple[Any, ...], list[Any]] = defaultdict(
        lambda: [0] * len(MEASURES) + [0.0, None, None, None]
    )
    for row in store.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"):
        hour = row[at["start_ns"]] // HOUR * HOUR
        cost = row[at["cost_usd"]]
        status = row[at["status"]]
        counts = [
            1,
            *(row[at[c]] or 0 for c in TOKEN_COLUMNS),
            int(cost is not None),
            int(status == "unpriced"),
            int(status == "no_usage"),
            int(status == "partial"),
            row[at["error"]],
        ]
        cells = [
            hours[(hour, *(row[at[k]] for k in HOUR_KEYS))],
            runs[(row[at["use_case"]], row[at["run_id"]], hour, *(row[at[k]] for k in _run_keys()))],
        ]
        for cell in cells:
            for i, n in enumerate(counts):
                cell[i] += n
            cell[len(MEASURES)] += cost or 0.0
        run = cells[1]
        start, end = row[at["start_ns"]], row[at["end_ns"]]
        first = len(MEASURES) + 1
        run[first] = start if run[first] is None else min(run[first], start)
        run[first + 1] = start if run[first + 1] is None else max(run[first + 1], start)
        run[first + 2] = end if run[first + 2] is None else max(run[first + 2], end)
    return dict(hours), dict(runs)


def stored_rollups(store: Store) -> tuple[dict[tuple[Any, ...], list[Any]], dict[tuple[Any, ...], list[Any]]]:
    measures = ", ".join(MEASURES)
    hour_keys = ("hour_ns", *HOUR_KEYS)
    run_keys = ("use_case", "run_id", "hour_ns", *_run_keys())
    hours = {
        tuple(r[: len(hour_keys)]): list(r[len(hour_keys) :])
        for r in store.query(
            f"SELECT {', '.join(hour_keys)}, {measures}, cost_usd FROM usecase_hour_rollup WHERE calls <> 0"
        )
    }
    runs = {
        tuple(r[: len(run_keys)]): list(r[len(run_keys) :])
        for r in store.query(
            f"SELECT {', '.join(run_keys)}, {measures}, cost_usd, first_ns, last_ns, end_ns "
            "FROM usecase_run_rollup"
        )
    }
    return hours, runs


def expected_runs(store: Store) -> dict[tuple[Any, ...], tuple[list[Any], set[tuple[Any, ...]]]]:
    """The per-run table computed here from the ledger: {(use case, run id): ([*counts, cost, first, last,
    end], the set of the run's (user, experience, version, tags) values)}."""
    at = {c: i for i, c in enumerate(COLUMNS)}
    runs: dict[tuple[Any, ...], tuple[list[Any], set[tuple[Any, ...]]]] = {}
    for row in store.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"):
        key = (row[at["use_case"]], row[at["run_id"]])
        cell, dims = runs.setdefault(key, ([0] * len(MEASURES) + [0.0, None, None, None], set()))
        cost, status = row[at["cost_usd"]], row[at["status"]]
        counts = [1, *(row[at[c]] or 0 for c in TOKEN_COLUMNS), int(cost is not None), int(status == "unpriced"),
                  int(status == "no_usage"), int(status == "partial"), row[at["error"]]]  # fmt: skip
        for i, n in enumerate(counts):
            cell[i] += n
        cell[len(MEASURES)] += cost or 0.0
        start, end, first = row[at["start_ns"]], row[at["end_ns"]], len(MEASURES) + 1
        cell[first] = start if cell[first] is None else min(cell[first], start)
        cell[first + 1] = start if cell[first + 1] is None else max(cell[first + 1], start)
        cell[first + 2] = end if cell[first + 2] is None else max(cell[first + 2], end)
        dims.add(tuple(row[at[k]] for k in _runs_dims()))
    return runs


def assert_runs_match_ledger(store: Store) -> None:
    """The per-run table holds each run once with the ledger's totals and times; a run whose calls disagree
    on a dimension is marked mixed, and an unmixed run's dimensions are its calls'."""
    want = expected_runs(store)
    got = {
        (r[0], r[1]): r[2:]
        for r in store.query(
            f"SELECT use_case, run_id, {', '.join(_runs_dims())}, mixed, {', '.join(MEASURES)}, cost_usd, "
            "first_ns, last_ns, end_ns FROM usecase_runs"
        )
    }
    assert set(got) == set(want)
    n_dims, cost_at = len(_runs_dims()), len(MEASURES)
    for key, (cell, dims) in want.items():
        row = got[key]
        stored_dims, mixed, values = tuple(row[:n_dims]), row[n_dims], list(row[n_dims + 1 :])
        assert values[:cost_at] == cell[:cost_at], key  # counts and tokens: exactly
        assert values[cost_at] == pytest.approx(cell[cost_at], rel=1e-9, abs=1e-12), key
        assert values[cost_at + 1 :] == cell[cost_at + 1 :], key  # first, last, end
        if len(dims) > 1:
            assert mixed == 1, key
        elif not mixed:
            assert {stored_dims} == dims, key


def assert_tag_runs_match_runs(store: Store) -> None:
    """Each run with a value of a kept tag key has one copy of its per-run row per such key, under that
    key and value (store/tag_runs_sql.py), and nothing else is there."""
    if not store.view_sql().groups:
        return
    keys = {str(k) for (k,) in store.query("SELECT tag_key FROM usecase_tag_keys")}
    columns = runs_sql.columns()
    at = columns.split(", ").index("tags")
    want = {}
    for row in store.query(f"SELECT {columns} FROM usecase_runs"):
        tags = json.loads(row[at]) if row[at] else {}
        for key in keys & set(tags):
            want[(key, str(tags[key]), row[0], row[1])] = tuple(row)
    got = {
        tuple(r[:4]): tuple(r[2:])
        for r in store.query(f"SELECT tag_key, tag_value, {columns} FROM usecase_tag_runs")
    }
    assert set(got) == set(want)
    for key, row in want.items():
        assert got[key] == row, key
    # and the call-level group rows of those runs, once per tag value, each group under one part text
    values: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for key, value, use_case, run_id in want:
        values[(use_case, run_id)].append((key, value))
    group_columns = groups_sql.columns()

    want_groups = {}
    for row in store.query(f"SELECT {group_columns} FROM usecase_run_groups WHERE report_by IN ('model', 'step')"):
        for key, value in values.get((row[3], row[4]), []):
            want_groups[(key, value, row[0], _part(row[1]) + _part(row[2]), row[3], row[4])] = tuple(row)
    got_groups = {
        tuple(r[:2]) + (r[3], r[2], r[6], r[7]): tuple(r[3:])
        for r in store.query(f"SELECT tag_key, tag_value, part, {group_columns} FROM usecase_tag_groups")
    }
    assert set(got_groups) == set(want_groups)
    for key, row in want_groups.items():
        assert got_groups[key] == row, key


CALL_GROUPINGS = {  # report --by value: the ledger columns of its key (report.queries.GROUPINGS)
    "model": ("provider", "model"),
    "step": ("use_case", "step"),
}
RUN_GROUPINGS = {
    "use-case": ("use_case",),
    "user": ("user_id",),
    "experience": ("experience_name", "experience_id"),
    "version": ("use_case", "use_case_version"),
    "experience-version": ("experience_name", "experience_version"),
}
GROUP_MEASURES = (*MEASURES, "cost_usd")


def _padded(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return values + (None,) * (2 - len(values))


def expected_groups(store: Store) -> dict[tuple[Any, ...], list[Any]]:
    """The per-(run, group) rows computed here from the ledger: {(by, k1, k2, use case, run id): [*counts, cost]};
    for each tag key the store keeps, one group per value and one for the calls without the key."""
    at = {c: i for i, c in enumerate(COLUMNS)}
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * len(MEASURES) + [0.0])
    for key, row in _ledger_groups(store):
        cost, status = row[at["cost_usd"]], row[at["status"]]
        counts = [1, *(row[at[c]] or 0 for c in TOKEN_COLUMNS), int(cost is not None), int(status == "unpriced"),
                  int(status == "no_usage"), int(status == "partial"), row[at["error"]]]  # fmt: skip
        cell = groups[key]
        for i, n in enumerate(counts):
            cell[i] += n
        cell[len(MEASURES)] += cost or 0.0
    return groups


def _ledger_groups(store: Store) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """Each ledger row once per (run, group) it belongs to: ((by, k1, k2, use case, run id), row)."""
    at = {c: i for i, c in enumerate(COLUMNS)}
    kept_tags = sorted(str(r[0]) for r in store.query("SELECT tag_key FROM usecase_tag_keys"))
    for row in store.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"):
        tags = tags_of(row[at["tags"]])
        cells = [(by, *_padded(tuple(row[at[k]] for k in keys))) for by, keys in CALL_GROUPINGS.items()]
        cells += [(f"tag:{key}", tags.get(key), None) for key in kept_tags]  # "no value" too
        for group in cells:
            yield (*group, row[at["use_case"]], row[at["run_id"]]), row


def assert_group_times_hold(store: Store) -> None:
    """Each (run, group)'s calls start within its times: what a time window's read of the groups by their
    times relies on (store/groups_sql.py ``TIMES``)."""
    if not store.view_sql().group_times:
        return
    start = COLUMNS.index("start_ns")
    starts: dict[tuple[Any, ...], list[int]] = {}
    for key, row in _ledger_groups(store):
        low_high = starts.setdefault(key, [row[start], row[start]])
        low_high[0], low_high[1] = min(low_high[0], row[start]), max(low_high[1], row[start])
    rows = store.query("SELECT report_by, k1, k2, use_case, run_id, first_ns, last_ns FROM usecase_run_groups")
    for *key, first, last in rows:
        calls = starts.get(tuple(key))
        assert first is not None and last is not None and first <= last, key
        if calls is not None:  # (none left after a prune)
            assert first <= calls[0] and calls[1] <= last, (key, first, last, calls)


def _complete(cell: list[Any]) -> float | None:
    """A run's (or a run's part's) cost when known and complete: what p50/p95 are over."""
    at = {m: i for i, m in enumerate(MEASURES)}
    incomplete = cell[at["unpriced_calls"]] + cell[at["no_usage_calls"]] + cell[at["partial_calls"]]
    return cell[len(MEASURES)] if cell[at["cost_calls"]] > 0 and incomplete == 0 else None


def _part(value: str | None) -> str:
    """The text a group key value stands as in a tag grouping's key (store/tag_runs_sql.py ``part``)."""
    return "-" if value is None else f"{len(value)}:{value}"


def assert_groups_match_ledger(store: Store) -> None:
    """The per-(run, group) rows equal the ledger's, and every group's totals equal the sums of its rows
    (of the per-run table for the run groupings); no group without runs is left."""
    assert_group_times_hold(store)
    want = expected_groups(store)
    stored = {
        tuple(r[:5]): list(r[5:])
        for r in store.query(
            f"SELECT report_by, k1, k2, use_case, run_id, {', '.join(GROUP_MEASURES)}, complete_cost "
            "FROM usecase_run_groups"
        )
    }
    assert set(stored) == set(want)
    cost_at = len(MEASURES)
    totals: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * (len(MEASURES) + 1) + [0.0, 0, 0.0])
    for key, cell in want.items():
        got = stored[key]
        assert got[:cost_at] == cell[:cost_at], key
        assert got[cost_at] == pytest.approx(cell[cost_at], rel=1e-9, abs=1e-12), key
        complete = _complete(cell)
        assert (got[cost_at + 1] is None) == (complete is None), key
        total = totals[key[:3]]
        total[0] += 1
        for i, n in enumerate(cell):
            total[1 + i] += n
        total[-2] += complete is not None
        total[-1] += complete or 0.0
    # the tag groupings' totals: the groups of the runs with a value of a kept key (store/tag_runs_sql.py)
    tagged: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    grouped = store.view_sql().groups
    if grouped:
        for key, value, use_case, run_id in store.query(
            "SELECT tag_key, tag_value, use_case, run_id FROM usecase_tag_runs"
        ):
            tagged[(use_case, run_id)].append((key, value))
    columns = ("use_case", "run_id", *RUN_KEYS, "experience_version")
    runs = store.query(f"SELECT {', '.join(columns)}, {', '.join(GROUP_MEASURES)} FROM usecase_runs")
    for row in runs:
        values = dict(zip(columns, row))
        cell = list(row[len(columns) :])
        complete = _complete(cell)
        for by, keys in RUN_GROUPINGS.items():
            group = _padded(tuple(values[k] for k in keys))
            groups = [(by, *group)] + [
                (f"{by}@tag:{key}", value, _part(group[0]) + _part(group[1]))
                for key, value in tagged.get((values["use_case"], values["run_id"]), [])
            ]
            if by in ("user", "experience", "experience-version") and grouped:  # and per use case
                groups.append((f"{by}@use-case", values["use_case"], _part(group[0]) + _part(group[1])))
            for group_key in groups:
                total = totals[group_key]
                total[0] += 1
                for i, n in enumerate(cell):
                    total[1 + i] += n
                total[-2] += complete is not None
                total[-1] += complete or 0.0
    if tagged:
        for (report_by, k1, k2, use_case, run_id), cell in want.items():
            if report_by not in CALL_GROUPINGS:
                continue
            complete = _complete(cell)
            for key, value in tagged.get((use_case, run_id), []):
                total = totals[(f"{report_by}@tag:{key}", value, _part(k1) + _part(k2))]
                total[0] += 1
                for i, n in enumerate(cell):
                    total[1 + i] += n
                total[-2] += complete is not None
                total[-1] += complete or 0.0
    got_totals = {
        tuple(r[:3]): list(r[3:])
        for r in store.query(
            f"SELECT report_by, k1, k2, runs, {', '.join(GROUP_MEASURES)}, complete_runs, complete_sum "
            "FROM usecase_group_totals"
        )
    }
    assert set(got_totals) == set(totals)
    for key, total in totals.items():
        got = got_totals[key]
        assert got[: 1 + cost_at] == total[: 1 + cost_at], key  # runs, counts, tokens: exactly
        assert got[1 + cost_at] == pytest.approx(total[1 + cost_at], rel=1e-9, abs=1e-12), key
        assert got[-2] == total[-2], key
        assert got[-1] == pytest.approx(total[-1], rel=1e-9, abs=1e-12), key


def assert_days_match_ledger(store: Store) -> None:
    """The day rollup holds the ledger's sums per UTC day and hour rollup key (computed here)."""
    day = 24 * HOUR
    at = {c: i for i, c in enumerate(COLUMNS)}
    want: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0.0])
    for row in store.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"):
        cell = want[(row[at["start_ns"]] // day * day, *(row[at[k]] for k in HOUR_KEYS))]
        cell[0] += 1
        cell[1] += row[at["input_tokens"]] or 0
        cell[2] += row[at["cost_usd"]] or 0.0
    got = {
        tuple(r[:-3]): list(r[-3:])
        for r in store.query(
            f"SELECT day_ns, {', '.join(HOUR_KEYS)}, calls, input_tokens, cost_usd FROM usecase_day_rollup "
            "WHERE calls <> 0"
        )
    }
    assert set(got) == set(want)
    for key, cell in want.items():
        assert got[key][:2] == cell[:2], key
        assert got[key][2] == pytest.approx(cell[2], rel=1e-9, abs=1e-12), key


def assert_outcome_runs_match_runs(store: Store) -> None:
    """Each run with outcomes has one copy of its per-run row per outcome name, with their number and the
    sum of their values (store/outcome_runs_sql.py), and nothing else is there."""
    if not store.view_sql().outcome_runs:
        return
    columns = runs_sql.columns()
    rows = {(r[0], r[1]): tuple(r) for r in store.query(f"SELECT {columns} FROM usecase_runs")}
    want = {}
    for name, use_case, run_id, n, value in store.read_outcomes(
        "SELECT name, use_case, run_id, COUNT(*), SUM(value) FROM otel_usecase_outcomes GROUP BY name, use_case, run_id"
    ):
        if (use_case, run_id) in rows:
            want[(name, use_case, run_id)] = (int(n), float(value), *rows[(use_case, run_id)])
    got = {
        tuple(r[:1] + r[3:5]): (int(r[1]), float(r[2]), *r[3:])
        for r in store.query(f"SELECT name, outcomes, outcome_value, {columns} FROM usecase_outcome_runs")
    }
    assert set(got) == set(want)
    for key, row in want.items():
        assert got[key][:2] == (row[0], pytest.approx(row[1])), key
        assert got[key][2:] == row[2:], key


def assert_rollups_match_ledger(store: Store) -> None:
    if hasattr(store, "fold"):  # SQLite: the rows still pending go into the tables (readers add them anyway)
        store.fold()
    assert_runs_match_ledger(store)
    assert_tag_runs_match_runs(store)
    assert_outcome_runs_match_runs(store)
    assert_groups_match_ledger(store)
    assert_days_match_ledger(store)
    want_hours, want_runs = expected_rollups(store)
    got_hours, got_runs = stored_rollups(store)
    assert set(got_hours) == set(want_hours)
    assert set(got_runs) == set(want_runs)
    cost_at = len(MEASURES)
    for got, want in [*((got_hours[k], want_hours[k]) for k in want_hours),
                      *((got_runs[k], want_runs[k]) for k in want_runs)]:  # fmt: skip
        assert got[:cost_at] == want[:cost_at]  # counts and tokens: exactly
        assert got[cost_at] == pytest.approx(want[cost_at], rel=1e-9, abs=1e-12)
        assert got[cost_at + 1 :] == want[cost_at + 1 :]  # first, last, end of a run cell


def call(n: int, **fields: Any) -> Any:
    prompt, completion = fields.pop("usage", (100, 50))
    fields.setdefault("cost_usd", mini_cost(prompt, completion))
    return a_call(trace_id=f"{n:032x}", span_id=f"{n:016x}", tokens={"input": prompt, "output": completion},
                  **{"start_ns": T0 + n, "end_ns": T0 + n + 10, "run_id": f"run-{n % 3}", **fields})  # fmt: skip


def test_rollups_equal_the_ledger_through_replacements_and_reprice(store: Store) -> None:
    store = _strict(store)
    store.write(
        [call(n, user_id=f"u{n % 2}", step=f"s{n % 4}", start_ns=T0 + n * HOUR // 3) for n in range(12)]
    )
    store.write([call(20, error=1, status="unpriced", cost_usd=None, model="mystery-1")])
    assert_rollups_match_ledger(store)

    # A partial copy first, then (next batch) the complete one: the second instrumentation of the same request.
    store.write([call(30, usage=(100, 0), status=STATUS_PARTIAL, cost_usd=mini_cost(100, 0), step="early")])
    assert_rollups_match_ledger(store)
    store.write([call(30, usage=(100, 40), step="late", start_ns=T0 + 5 * HOUR, end_ns=T0 + 5 * HOUR + 9)])
    # Two copies in one batch: the more complete one is kept, once.
    store.write(
        [call(31, usage=(7, 0), status=STATUS_PARTIAL, cost_usd=mini_cost(7, 0)), call(31, usage=(7, 3))]
    )
    assert_rollups_match_ledger(store)
    hours, _ = stored_rollups(store)
    assert sum(cell[0] for cell in hours.values()) == 15
    assert sum(cell[len(MEASURES)] for cell in hours.values()) == pytest.approx(
        12 * mini_cost(100, 50) + mini_cost(100, 40) + mini_cost(7, 3)
    )

    # Stored with a stale price: reprice puts gpt-4o-mini's published price back, the rollups follow.
    store.write([call(40 + n, cost_usd=0.5, run_id="stale") for n in range(5)])
    summary = reprice(store, PriceBook())
    assert summary.changed >= 5  # (the others gain genai-prices' price source and context)
    assert_rollups_match_ledger(store)
    _, runs = stored_rollups(store)
    stale = [cell for key, cell in runs.items() if key[1] == "stale"]
    assert sum(cell[len(MEASURES)] for cell in stale) == pytest.approx(5 * mini_cost(100, 50))
    assert sum(cell[len(MEASURES)] for cell in runs.values()) == pytest.approx(
        17 * mini_cost(100, 50) + mini_cost(100, 40) + mini_cost(7, 3)
    )


_WRITER = textwrap.dedent(
    """
    import sys
    from otel_usecase.store import open_store
    from otel_usecase.cost.call import STATUS_PARTIAL
    from tests.builders import a_call
    from tests.expect import mini_cost

    url, me = sys.argv[1], int(sys.argv[2])
    T0, HOUR = 1_767_225_600 * 10**9, 3_600_000_000_000
    store = open_store(url)
    try:
        for batch in range(40):
            calls = []
            for i in range(50):
                n = batch * 50 + i
                complete = (n + me) % 2 == 0  # each call written by both; one copy partial, the other complete
                calls.append(a_call(
                    trace_id=f"{n:032x}", span_id=f"{n:016x}", start_ns=T0 + n * HOUR // 500,
                    end_ns=T0 + n * HOUR // 500 + 5, run_id=f"run-{n % 7}", user_id=f"u{n % 3}",
                    step=f"s{n % 5}", tokens={"input": 100, "output": 50 if complete else 0},
                    cost_usd=mini_cost(100, 50 if complete else 0),
                    status="priced" if complete else STATUS_PARTIAL,
                ))
            written = False
            while not written:
                try:
                    store.write(calls)
                    written = True
                except Exception as exc:  # StoreUnavailable: busy; try again, as the exporter does
                    if "unavailable" not in type(exc).__name__.lower():
                        raise
    finally:
        store.close()
    """
)


def test_two_processes_writing_the_same_runs_at_once_keep_the_rollups_exact(store: Store) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, store.url, str(me)], cwd=ROOT) for me in (0, 1)
    ]
    for writer in writers:
        assert writer.wait(timeout=600) == 0
    assert_rollups_match_ledger(store)
    hours, runs = stored_rollups(store)
    assert sum(cell[0] for cell in hours.values()) == 2000  # each call once, whichever process wrote it
    assert sum(cell[len(MEASURES)] for cell in runs.values()) == pytest.approx(2000 * mini_cost(100, 50))
    assert (
        sum(cell[MEASURES.index("partial_calls")] for cell in hours.values()) == 0
    )  # the complete copies won


def test_the_migration_rolls_up_a_ledger_written_before_the_rollups(sqlite_or_postgres: str) -> None:
    on = " ON usecase_calls" if not sqlite_or_postgres.startswith("sqlite") else ""
    open_store(sqlite_or_postgres).close()
    _execute(  # what an otel-usecase of schema 4 left: no rollups, and calls written there
        sqlite_or_postgres,
        [
            f"DROP TRIGGER usecase_calls_rollup_insert{on}",
            f"DROP TRIGGER usecase_calls_rollup_update{on}",
            "DROP TABLE usecase_hour_rollup",
            "DROP TABLE usecase_run_rollup",
            "DROP TABLE usecase_runs",
            "UPDATE otel_usecase_meta SET value = '4' WHERE key = 'schema_version'",
        ],
        [call(n, start_ns=T0 + n * HOUR // 2) for n in range(9)],
    )
    reader = open_store(sqlite_or_postgres, create=False)  # a report reads an old ledger as it is
    try:
        assert not reader.view_sql().rollups
    finally:
        reader.close()
    store = open_store(sqlite_or_postgres)  # a writer upgrades it: rollups created and filled
    try:
        assert store.view_sql().rollups
        assert_rollups_match_ledger(store)
        store.write([call(n, start_ns=T0 + n * HOUR // 2) for n in range(5, 15)])
        assert_rollups_match_ledger(store)
        hours, _ = stored_rollups(store)
        assert sum(cell[0] for cell in hours.values()) == 15
    finally:
        store.close()


def test_rows_written_past_the_store_count_at_once_and_are_folded_by_its_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    store: Any = open_store(url)
    try:
        store.write([call(1, start_ns=T0)])
        store.fold()
        _execute(
            url, [], [call(2, start_ns=T0 + HOUR), call(3, start_ns=T0 + 2 * HOUR)]
        )  # plain SQL: set aside
        fold = store.fold

        def cannot_fold() -> None:
            raise StoreUnavailable("a read-only file, say")

        monkeypatch.setattr(store, "fold", cannot_fold)
        assert store.view_sql().pending  # so every query adds the pending rows to the rollups
        pending = [views.summary(store, ReportFilter()), views.list_runs(store, ReportFilter()),
                   views.cost_series(store, ReportFilter(), "hour"), views.run_histogram(store, ReportFilter()),
                   build_report(store, "user"), build_report(store, "run")]  # fmt: skip
        assert (pending[0].calls, pending[0].runs) == (3, 3)
        assert pending[0].cost_usd == pytest.approx(3 * mini_cost(100, 50))
        assert [r.run_id for r in pending[1]] == ["run-0", "run-2", "run-1"]  # newest first
        assert store.query("SELECT COUNT(*) FROM usecase_rollup_pending") == [(2,)]
        monkeypatch.setattr(store, "fold", fold)
        assert not store.view_sql().pending  # a store that can write folds them first
        assert store.query("SELECT COUNT(*) FROM usecase_rollup_pending") == [(0,)]
        folded = [views.summary(store, ReportFilter()), views.list_runs(store, ReportFilter()),
                  views.cost_series(store, ReportFilter(), "hour"), views.run_histogram(store, ReportFilter()),
                  build_report(store, "user"), build_report(store, "run")]  # fmt: skip
        assert folded == pending
        assert_rollups_match_ledger(store)
    finally:
        store.close()


class _Strict:
    """A store whose ``write`` fails the test when a call is rejected (a trigger error would reject it)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def write(self, calls: Any) -> None:
        assert self._store.write(calls) == []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _strict(store: Store) -> Any:
    return _Strict(store)


def _execute(url: str, statements: list[str], calls: list[Any]) -> None:
    """DDL and rows past the store (as an older version, or another program, would write them)."""
    insert = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['?'] * len(COLUMNS))})"
    rows = [row_of(c) for c in calls]
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.executemany(insert, rows)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.cursor().executemany(insert.replace("?", "%s"), rows)


def test_the_migration_fills_the_per_run_table_of_a_schema_5_ledger(sqlite_or_postgres: str) -> None:
    open_store(sqlite_or_postgres).close()
    calls = [
        call(n, start_ns=T0 + n * HOUR // 2, user_id=f"u{n % 2}", run_id=f"run-{n % 4}") for n in range(9)
    ]
    _execute(sqlite_or_postgres, [], calls)  # (SQLite: left pending, as a schema 5 writer may leave them)
    _execute(  # what an otel-usecase of schema 5 left: the rollups, no per-run table
        sqlite_or_postgres,
        ["DROP TABLE usecase_runs", "UPDATE otel_usecase_meta SET value = '5' WHERE key = 'schema_version'"],
        [],
    )
    store = open_store(sqlite_or_postgres)
    try:
        assert_runs_match_ledger(store)
        assert views.summary(store, ReportFilter()).runs == 4
        store.write([call(50, run_id="run-9")])  # and kept from then on
        assert_rollups_match_ledger(store)
    finally:
        store.close()
