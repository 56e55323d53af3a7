"""Benchmark 8: the dashboard's queries (``report/views.py``) over a 10,000,000-call ledger, SQLite and PostgreSQL.

The ledger is generated in SQL (a recursive CTE in SQLite, ``generate_series`` in
PostgreSQL): 10,000,000 calls in 500,000 runs of 20 calls, 20 use cases, 2,000
users, 3 versions one after the other, 4 steps (each use case's step calls one of 5 models), an
experience on every run, a ``tenant`` tag
on half of them, 1 % unpriced, start times spread over 90 days; every third run
records the outcome ``resolved``. It is written
as a schema 4 ledger (no rollups, no triggers, no covering index), then opened
with ``open_store``: the schema 5 migration builds the index, creates the rollups
and fills them from the ledger (timed: what upgrading an existing ledger costs).
PostgreSQL is a real throw-away server (``tests/pg.py``) and gets ``VACUUM
ANALYZE`` after the load, as autovacuum would.

Timed: each view function on one open store (as the dashboard's server holds it), for
the overview (no filter; the last 7 days in whole hours), one use case, one user and
one tag: median of 3 after one untimed call. Target: each under 500 ms.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import log, row

NAME = "dashboard"
TARGET_S = 0.5
CALLS_PER_RUN = 20
DAYS = 90
HOUR_NS = 3_600_000_000_000
END_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC: the ledger's last hour ends here
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini", "gpt-4.1-mini", "gpt-4.1-nano")


def _ledger_select(total: int, series: str, hexed: Callable[[str, int], str], start_ns: int) -> str:
    """The SELECT producing the generated ledger's rows from ``n`` (0 .. total-1) of ``series``."""
    runs = total // CALLS_PER_RUN
    spacing = DAYS * 24 * HOUR_NS // runs
    run = f"(n / {CALLS_PER_RUN})"
    # Each use case's step calls one model; versions follow each other in time (v0, then v1, then v2).
    model = (
        f"CASE ({run} % 20 + n % 4) % 5 "
        + " ".join(f"WHEN {i} THEN '{m}'" for i, m in enumerate(MODELS))
        + " END"
    )
    input_tokens = "(100 + n % 900)"
    output_tokens = "(20 + n % 300)"
    unpriced = "n % 100 = 7"
    return f"""
        SELECT {hexed("n", 32)}, {hexed("n", 16)},
               {start_ns} + {run} * {spacing} + (n % {CALLS_PER_RUN}) * 2000000000,
               {start_ns} + {run} * {spacing} + (n % {CALLS_PER_RUN}) * 2000000000 + 1500000000,
               'bench', 'uc' || ({run} % 20), 'run-' || {run}, 'v' || ({run} * 3 / {runs}), 'step-' || (n % 4),
               'exp-' || ({run} % 20 % 7), 'e-' || ({run} % 50000), 'user-' || ({run} * 7 % 2000),
               'openai', {model}, 'chat',
               {input_tokens}, {output_tokens}, n % 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
               CASE WHEN {unpriced} THEN NULL ELSE {input_tokens} * 0.00000015 + {output_tokens} * 0.0000006 END,
               CASE WHEN {unpriced} THEN 'unpriced' ELSE 'priced' END,
               CASE WHEN {unpriced} THEN NULL ELSE 'genai-prices 0.0.40' END,
               NULL, NULL, CASE WHEN {unpriced} THEN 'unknown model' END, NULL, CASE WHEN n % 250 = 3 THEN 1 ELSE 0 END,
               CASE WHEN {run} % 2 = 0 THEN '{{"tenant":"t' || ({run} % 10) || '"}}' END,
               'ev' || ({run} % 3)
        FROM {series}
    """


OUTCOME_EVERY = 3
"""Every third run records the outcome ``resolved`` (value 1), 40 s after its first call."""


def _outcomes_insert(total: int, series: str, hexed: Callable[[str, int], str], start_ns: int) -> str:
    """The INSERT of the generated ledger's outcomes from ``n`` (a run number) of ``series``."""
    from otel_usecase.store.outcome_sql import OUTCOME_COLUMNS, OUTCOMES_TABLE

    spacing = DAYS * 24 * HOUR_NS // (total // CALLS_PER_RUN)
    return (
        f"INSERT INTO {OUTCOMES_TABLE} ({', '.join(OUTCOME_COLUMNS)}) "
        f"SELECT {hexed('n', 32)}, 'ffffffffffffffff', {start_ns} + n * {spacing} + 40000000000, 'bench', "
        f"'uc' || (n % 20), 'run-' || n, 'resolved', 1.0 FROM {series}"
    )


def _fill_sqlite(path: Path, total: int) -> None:
    from otel_usecase.store import open_store
    from otel_usecase.store.base import COLUMNS

    open_store(f"sqlite:///{path}").close()  # the schema; then taken back to a schema 4 ledger
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _to_schema_4(sqlite=True):
        conn.execute(statement)
    start = END_NS - DAYS * 24 * HOUR_NS
    select = _ledger_select(total, "seq", lambda n, w: f"printf('%0{w}x', {n})", start)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    conn.execute(
        f"WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < {total - 1}) "
        f"INSERT INTO usecase_calls ({', '.join(COLUMNS)}) {select}"
    )
    runs = total // CALLS_PER_RUN
    conn.execute(
        f"WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + {OUTCOME_EVERY} FROM seq "
        f"WHERE n + {OUTCOME_EVERY} < {runs}) "
        + _outcomes_insert(total, "seq", lambda n, w: f"printf('%0{w}x', {n})", start)
    )
    conn.execute("COMMIT")
    conn.close()


def _fill_postgres(url: str, total: int) -> None:
    import psycopg

    from otel_usecase.store import open_store
    from otel_usecase.store.base import COLUMNS

    open_store(url).close()
    start = END_NS - DAYS * 24 * HOUR_NS
    select = _ledger_select(
        total,
        f"generate_series(0::bigint, {total - 1}::bigint) AS s(n)",
        lambda n, w: f"lpad(to_hex({n}), {w}, '0')",
        start,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _to_schema_4(sqlite=False):
            conn.execute(statement)
        conn.execute(f"INSERT INTO usecase_calls ({', '.join(COLUMNS)}) {select}")
        runs = total // CALLS_PER_RUN
        conn.execute(
            _outcomes_insert(
                total,
                f"generate_series(0::bigint, {runs - 1}::bigint, {OUTCOME_EVERY}) AS s(n)",
                lambda n, w: f"lpad(to_hex({n}), {w}, '0')",
                start,
            )
        )


def _to_schema_4(*, sqlite: bool) -> list[str]:
    on = "" if sqlite else " ON usecase_calls"
    return [
        f"DROP TRIGGER IF EXISTS usecase_calls_rollup_insert{on}",
        f"DROP TRIGGER IF EXISTS usecase_calls_rollup_update{on}",
        "DROP TABLE IF EXISTS usecase_hour_rollup",
        "DROP TABLE IF EXISTS usecase_run_rollup",
        "DROP TABLE IF EXISTS usecase_runs",
        "DROP TABLE IF EXISTS usecase_run_groups",
        "DROP TABLE IF EXISTS usecase_group_totals",
        "DROP TABLE IF EXISTS usecase_day_rollup",
        "DROP TABLE IF EXISTS usecase_outcome_runs",
        "DROP INDEX IF EXISTS usecase_calls_run_totals",
        "UPDATE otel_usecase_meta SET value = '4' WHERE key = 'schema_version'",
    ]


def _cases() -> list[tuple[str, Callable[[Any], Any]]]:
    from otel_usecase.report import views
    from otel_usecase.store import ReportFilter

    week = ReportFilter(since_ns=END_NS - 7 * 24 * HOUR_NS)
    uc = ReportFilter(use_case="uc3")
    user = ReportFilter(user_id="user-77")
    tag = ReportFilter(tags=(("tenant", "t4"),))
    mid = ReportFilter(since_ns=END_NS - 7 * 24 * HOUR_NS + 17 * 60 * 10**9)  # "since=7d", 17 min past the hour
    return [
        ("summary, last 7 days from mid-hour", lambda s: views.summary(s, mid)),
        ("top 10 use cases, 7 days from mid-hour", lambda s: views.top(s, mid, "use-case")),
        ("list_runs newest 50, 7 days from mid-hour", lambda s: views.list_runs(s, mid)),
        ("summary, all", lambda s: views.summary(s, ReportFilter())),
        ("summary, last 7 days", lambda s: views.summary(s, week)),
        ("cost_series day by use case, all", lambda s: views.cost_series(s, ReportFilter(), "day")),
        ("cost_series hour by use case, 7 days", lambda s: views.cost_series(s, week, "hour")),
        ("cost_series day by model, all", lambda s: views.cost_series(s, ReportFilter(), "day", "model")),
        ("top 10 use cases, all", lambda s: views.top(s, ReportFilter(), "use-case")),
        ("top 10 use cases, 7 days", lambda s: views.top(s, week, "use-case")),
        ("top 10 users, all", lambda s: views.top(s, ReportFilter(), "user")),
        ("top 10 experiences, all", lambda s: views.top(s, ReportFilter(), "experience")),
        ("top 10 models, 7 days", lambda s: views.top(s, week, "model")),
        ("list_runs newest 50, all", lambda s: views.list_runs(s, ReportFilter())),
        ("list_runs dearest 50, all", lambda s: views.list_runs(s, ReportFilter(), "cost")),
        ("run_histogram, all", lambda s: views.run_histogram(s, ReportFilter())),
        ("use case: summary", lambda s: views.summary(s, uc)),
        ("use case: cost_series day", lambda s: views.cost_series(s, uc, "day")),
        ("use case: list_runs newest, page 3", lambda s: views.list_runs(s, uc, "newest", 50, 100)),
        ("use case: list_runs dearest", lambda s: views.list_runs(s, uc, "cost")),
        ("use case: run_histogram", lambda s: views.run_histogram(s, uc)),
        ("use case: top versions", lambda s: views.top(s, uc, "version")),
        ("use case: top steps", lambda s: views.top(s, uc, "step")),
        ("user: summary", lambda s: views.summary(s, user)),
        ("user: list_runs newest", lambda s: views.list_runs(s, user)),
        ("tag: summary", lambda s: views.summary(s, tag)),
        ("tag: list_runs newest", lambda s: views.list_runs(s, tag)),
    ]


WEEK_DATE = "2025-12-25"  # the ledger's last 7 days (it ends on 2026-01-01 00:00 UTC)


def _page_cases(total: int = 10_000_000) -> list[tuple[str, str]]:
    """The dashboard's pages and ``/api/`` routes as a browser or script asks for them (path, query)."""
    week = f"since={WEEK_DATE}"
    run = 123_457 % (total // CALLS_PER_RUN)  # a run in the middle (run-123457 of 10M calls; --quick has fewer)
    first = run * CALLS_PER_RUN  # the run's first call: its trace and span ids are its number in hex
    return [
        ("page /", ""),
        ("page /", week),
        ("page /use-case", "use_case=uc3"),
        ("page /use-case", f"use_case=uc3&{week}&order=cost"),
        ("page /run", f"id=run-{run}"),
        ("page /call", f"run=run-{run}&span={first:016x}&trace={first:032x}"),
        ("page /users", ""),
        ("page /users", week),
        ("page /experiences", ""),
        ("page /experiences", week),
        ("page /experience-versions", ""),
        ("page /models", ""),
        ("page /models", week),
        ("page /tags", "key=tenant"),
        ("page /tags", f"key=tenant&{week}"),
        ("page /outcomes", ""),
        ("page /outcomes", "outcome=resolved"),
        ("page /outcomes", "outcome=resolved&by=experience"),
        ("page /outcomes", f"outcome=resolved&{week}"),
        ("page /", "user=user-77"),
        ("page /", "tag=tenant%3Dt4"),
        ("page /", f"tag=tenant%3Dt4&{week}"),
        ("page /budgets", ""),
        ("/api/summary", "format=json"),
        ("/api/series", "format=csv&bucket=day"),
        ("/api/report", "format=json&by=use-case&limit=10"),
        ("/api/report", "format=csv&by=model&limit=10"),
        ("/api/report", f"format=csv&by=step&use_case=uc3&{week}"),
        ("/api/runs", "format=json&order=cost"),
        ("/api/histogram", "format=json"),
        ("/api/run", f"format=json&id=run-{run}"),
        ("/api/budgets", "format=json"),
        ("/api/outcomes", "format=json&outcome=resolved"),
        ("/api/outcomes", "format=csv&outcome=resolved&by=user&tag=tenant%3Dt4"),
    ]


def _page(path: str, query: str) -> Callable[[Any], Any]:
    """Answer one page or route in-process, as the server's worker thread does (no HTTP: its cost is the
    same for every page); a status other than 200 is a failure of the benchmark."""
    from otel_usecase.ui import dashboard_app
    from otel_usecase.ui.params import parse_params

    route_path = path.removeprefix("page ")

    def answer(store: Any) -> Any:
        route = dashboard_app(store).routes[route_path]
        response = route.handler(store, parse_params(query.encode(), route.params), "")
        assert response.status == 200, (path, query, response.status, response.body[:300])
        return response

    return answer


def _time(store: Any, case: Callable[[Any], Any], reps: int) -> float:
    case(store)
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        case(store)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _timed(label: str, url: str, total: int, reps: int) -> list[dict[str, Any]]:
    from otel_usecase.report import views
    from otel_usecase.store import SCHEMA_VERSION, ReportFilter, open_store

    started = time.perf_counter()
    store = open_store(url)  # the migration: covering index, rollups, per-run table and groups created and filled
    migration = time.perf_counter() - started
    rows = [
        row(
            NAME,
            f"{label}: migration to schema {SCHEMA_VERSION} at {total:,} calls (indexes, rollups, per-run table, "
            "groups, tag values' runs)",
            f"{migration:.0f} s",
        )
    ]
    try:
        if label == "PostgreSQL":
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        check = views.summary(store, ReportFilter())
        assert check.calls == total, (check.calls, total)
        cases = [*_cases(), *((f"{path}?{query}", _page(path, query)) for path, query in _page_cases(total))]
        for name, case in cases:
            seconds = _time(store, case, reps)
            log(f"dashboard: {label} {name}: {seconds * 1000:.0f} ms")
            value, target = f"{seconds * 1000:.0f} ms", f"< {TARGET_S * 1000:.0f} ms"
            rows.append(row(NAME, f"{label}: {name}", value, target, seconds < TARGET_S, raw=seconds))
    finally:
        store.close()
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    total = 200_000 if quick else 10_000_000
    reps = 1 if quick else 3
    directory = Path(tempfile.mkdtemp(prefix="otel-usecase-dashboard-"))
    server = None
    rows: list[dict[str, Any]] = []
    try:
        path = directory / "costs.db"
        started = time.perf_counter()
        _fill_sqlite(path, total)
        log(f"dashboard: SQLite ledger of {total:,} calls in {time.perf_counter() - started:.0f} s")
        rows += _timed("SQLite", f"sqlite:///{path}", total, reps)
        path.unlink()
        try:
            from tests.pg import PostgresServer

            server = PostgresServer().setup()
        except Exception as exc:  # no PostgreSQL binaries: the SQLite half still stands
            rows.append(row(NAME, "PostgreSQL", f"skipped: {type(exc).__name__}: {exc}", status="SKIP"))
            return rows
        started = time.perf_counter()
        _fill_postgres(server.url, total)
        log(f"dashboard: PostgreSQL ledger of {total:,} calls in {time.perf_counter() - started:.0f} s")
        rows += _timed("PostgreSQL", server.url, total, reps)
        return rows
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    import sys

    for line in run("--quick" in sys.argv):
        print(line["metric"], line["value"], line["status"])
