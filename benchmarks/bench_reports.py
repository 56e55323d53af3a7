"""Benchmark 5: ``otel-usecase report`` over 1,000,000 ledger rows, SQLite and PostgreSQL.

The ledger is filled by writing ``Call`` rows straight through the store
(``open_store(url).write(calls)``, batches of 10,000): 1,000,000 calls in
200,000 runs (1 to 9 calls each, 5 on average) of 10 use cases, 5,000 users,
an experience on half of the runs, 22 models, start times spread over 30 days.
PostgreSQL is a real throw-away server (``tests/pg.py``'s ``PostgresServer``)
in a temporary directory; after the load it gets ``VACUUM ANALYZE``, which its
autovacuum would do on its own shortly after such a load. SQLite gets nothing
(the application never runs ``ANALYZE``).

Timed: the real console command, ``.venv/bin/otel-usecase report --by run|use-case
--store URL --format json > /dev/null``, wall clock including interpreter start
and imports; median of 3 after one untimed run (warm OS cache, as on a machine
where reports are run). Each report's JSON is checked once (rows and calls).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import BIN, log, median, row
from _spans import MODELS, USE_CASES

from otel_usecase.cost.calls import Call
from otel_usecase.cost.prices import map_provider

NAME = "reports"
TARGET_S = 2.0
WRITE_BATCH = 10_000


def generate(total: int, rng: random.Random):
    """Yield lists of ``Call`` (``WRITE_BATCH`` each) totalling ``total`` calls; also count runs."""
    now_ns = time.time_ns()
    month_ns = 30 * 86_400 * 10**9
    batch: list[Call] = []
    written = 0
    run_index = 0
    while written < total:
        run_index += 1
        size = min(rng.randint(1, 9), total - written)
        use_case = USE_CASES[run_index % len(USE_CASES)]
        run_id = f"{rng.getrandbits(128):032x}"
        user = f"user-{rng.randrange(5000):05d}"
        experience = run_index % 2 == 0
        exp_id = f"{rng.getrandbits(128):032x}" if experience else None
        trace = f"{rng.getrandbits(128):032x}"
        start = now_ns - rng.randrange(month_ns)
        for k in range(size):
            system, _, model, operation = MODELS[rng.randrange(len(MODELS))]
            input_tokens = rng.randrange(50, 12000)
            output_tokens = rng.randrange(1, 1500)
            batch.append(
                Call(
                    trace_id=trace,
                    span_id=f"{rng.getrandbits(64):016x}",
                    start_ns=start + k * 10**9,
                    end_ns=start + k * 10**9 + 800_000_000,
                    service="bench-app",
                    use_case=use_case,
                    run_id=run_id,
                    use_case_version="2025.06",
                    step=("plan", "retrieve", "answer", "review")[k % 4],
                    experience_name="support_chat" if experience else None,
                    experience_id=exp_id,
                    user_id=user,
                    provider=map_provider(system),
                    model=model,
                    operation=operation,
                    tokens={
                        "input": input_tokens,
                        "output": output_tokens,
                        "cache_read": input_tokens // 4 if k % 3 == 0 else 0,
                    },
                    cost_usd=(input_tokens * 2.5 + output_tokens * 10) / 1e6,
                    status="priced",
                    cost_source="genai-prices 0.2.3",
                    price_source="genai-prices 0.2.3",
                    error=0,
                )
            )
            written += 1
            if len(batch) == WRITE_BATCH:
                yield batch, run_index
                batch = []
    if batch:
        yield batch, run_index


def _time_cli(by: str, url: str, reps: int) -> tuple[float, list[dict]]:
    argv = [str(BIN / "otel-usecase"), "report", "--by", by, "--store", url, "--format", "json"]
    checked = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return median(times), checked


def _report_rows(store_label: str, url: str, total: int, runs: int, reps: int) -> list[dict]:
    rows = []
    for by, expect_rows in (("run", runs), ("use-case", len(USE_CASES))):
        log(f"reports: {store_label} --by {by}, median of {reps}")
        seconds, records = _time_cli(by, url, reps)
        calls = sum(r["calls"] for r in records)
        ok_data = len(records) == expect_rows and calls == total
        note = "" if ok_data else f"; WRONG OUTPUT: {len(records)} rows, {calls} calls"
        rows.append(
            row(
                NAME,
                f"report --by {by}, {store_label}, {total:,} rows",
                f"{seconds:.2f} s ({len(records):,} report rows){note}",
                f"< {TARGET_S:.0f} s",
                seconds < TARGET_S and ok_data,
            )
        )
    return rows


def run(quick: bool) -> list[dict]:
    from otel_usecase.store import open_store

    total = 20_000 if quick else 1_000_000
    reps = 1 if quick else 3
    directory = Path(tempfile.mkdtemp(prefix="otel-usecase-bench-"))
    sqlite_url = f"sqlite:///{directory}/costs.db"
    server = None
    pg_url = None
    pg_skip = ""
    try:
        try:
            from tests.pg import PostgresServer

            server = PostgresServer().setup()
            pg_url = server.url
        except Exception as exc:
            pg_skip = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            log(f"reports: PostgreSQL part skipped: {pg_skip}")
        stores = {"SQLite": open_store(sqlite_url)}
        if pg_url is not None:
            stores["PostgreSQL"] = open_store(pg_url)
        log(f"reports: writing {total:,} calls into {' and '.join(stores)}")
        rng = random.Random(5)
        runs = 0
        fill = dict.fromkeys(stores, 0.0)
        for batch, runs in generate(total, rng):
            for label, store in stores.items():
                started = time.perf_counter()
                store.write(batch)
                fill[label] += time.perf_counter() - started
        for store in stores.values():
            store.close()
        if pg_url is not None:
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE usecase_calls")
        log(f"reports: {runs:,} runs; fill " + ", ".join(f"{k} {v:.0f} s" for k, v in fill.items()))

        rows = _report_rows("SQLite", sqlite_url, total, runs, reps)
        if pg_url is not None:
            rows += _report_rows("PostgreSQL", pg_url, total, runs, reps)
        else:
            for by in ("run", "use-case"):
                rows.append(
                    row(
                        NAME,
                        f"report --by {by}, PostgreSQL, {total:,} rows",
                        f"skipped: no PostgreSQL server ({pg_skip})",
                        f"< {TARGET_S:.0f} s",
                        None,
                        status="SKIP",
                    )
                )
        rows.append(
            row(
                NAME,
                "ledger fill through store.write (not a target)",
                ", ".join(f"{k} {total / v / 1000:.1f}k rows/s" for k, v in fill.items()),
                "",
                None,
            )
        )
        return rows
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
