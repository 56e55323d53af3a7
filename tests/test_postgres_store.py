"""The PostgreSQL store against a real server (``tests/pg.py``), never a mock; where the
behaviour is the same for both stores (``any_store``), the SQLite store too.

Expected totals are computed here from the token counts and costs the tests put
in, then compared with what the store's reports say.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import re
import sqlite3
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest

from otel_usecase.cost.calls import Call
from otel_usecase.cost.token_classes import TOKEN_CLASSES
from otel_usecase.report.queries import GROUPINGS, build_report, format_report, render_report, run_calls
from otel_usecase.store import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    StoreUnavailable,
    open_store,
    postgres_reports,
)
from otel_usecase.store.base import TOKEN_COLUMNS, redact_url
from otel_usecase.store.postgres import PostgresStore, translate_placeholders

from .pg import PostgresServer

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
MINI_IN, MINI_OUT, MINI_CACHED = 0.15e-6, 0.60e-6, 0.075e-6  # gpt-4o-mini, USD per token
GPT4O_IN, GPT4O_OUT = 2.50e-6, 10.00e-6

CLASSES = tuple(c.name for c in TOKEN_CLASSES)

_db_names = count()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the module (about a second to initdb and start)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def db_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database per test, so tests never see each other's rows."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return pg_server.create_database(f"t{next(_db_names)}_{name}")


@pytest.fixture
def store(db_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(db_url)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store in turn: what the ledger promises holds for both."""
    if request.param == "postgresql":
        s: Store = PostgresStore(request.getfixturevalue("db_url"))
    else:
        s = open_store(f"sqlite:///{tmp_path}/costs.db")
    yield s
    s.close()


def make_call(i: int, **changes: Any) -> Call:
    """A realistic priced gpt-4o-mini chat call; ``changes`` override fields."""
    input_tokens = 200 + (i * 37) % 1800
    output_tokens = 20 + (i * 11) % 400
    cached = (i * 7) % 100
    call = Call(
        trace_id=f"{0xABC000 + i // 4:032x}",
        span_id=f"{0x5000 + i:016x}",
        start_ns=T0 + i * 1_000_000,
        end_ns=T0 + i * 1_000_000 + 750_000_000,
        service="support-bot",
        use_case="answer-ticket",
        run_id=f"run-{i % 5}",
        use_case_version="2.1.0",
        step="draft",
        experience_name="checkout",
        experience_id="exp-1",
        user_id=f"user-{i % 3}",
        provider="openai",
        model="gpt-4o-mini",
        operation="chat",
        tokens={"input": input_tokens, "output": output_tokens, "cache_read": cached},
        cost_usd=(input_tokens - cached) * MINI_IN + cached * MINI_CACHED + output_tokens * MINI_OUT,
        status="priced",
        cost_source="genai-prices 0.2.3",
        price_source="genai-prices",
        error=0,
    )
    return with_changes(call, **changes)


def with_changes(call: Call, **changes: Any) -> Call:
    """``call`` with fields replaced; a ``<class>_tokens`` keyword sets that token class's count."""
    tokens = dict(call.tokens)
    for column in [name for name in changes if name in TOKEN_COLUMNS]:
        tokens[column.removesuffix("_tokens")] = changes.pop(column)
    return call._replace(tokens=tokens, **changes)


def no_usage_copy(call: Call) -> Call:
    """The same request seen by an instrumentation that did not get the usage."""
    return call._replace(
        tokens={},
        cost_usd=None,
        status="no_usage",
        cost_source=None,
        price_source=None,
        unpriced_reason="no usage",
    )


def expected_report(calls: list[Call], by: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """What ``build_report(store, by)`` must say, computed from the calls themselves."""
    keys = GROUPINGS[by]
    runs: dict[tuple[Any, ...], dict[str, list[Call]]] = defaultdict(lambda: defaultdict(list))
    for c in calls:
        runs[tuple(getattr(c, k) for k in keys)][c.run_id].append(c)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, by_run in runs.items():
        group = [c for cs in by_run.values() for c in cs]
        # Unpriced is unknown, not free: the per-run figures are over the runs whose every call is priced.
        run_costs = [
            sum(c.cost_usd or 0.0 for c in cs)
            for cs in by_run.values()
            if all(c.status == "priced" for c in cs)
        ]
        known = [c.cost_usd for c in group if c.cost_usd is not None]
        out[key] = {
            "runs": len(by_run),
            "calls": len(group),
            **{f"{name}_tokens": sum(c.tokens.get(name) or 0 for c in group) for name in CLASSES},
            "cost_usd": sum(known) if known else None,
            "cost_complete": all(c.status == "priced" for c in group),
            "unpriced_calls": sum(c.status == "unpriced" for c in group),
            "no_usage_calls": sum(c.status == "no_usage" for c in group),
            "avg_run_cost_usd": sum(run_costs) / len(run_costs) if run_costs else None,
            "p50_run_cost_usd": interpolated(sorted(run_costs), 0.5) if run_costs else None,
            "p95_run_cost_usd": interpolated(sorted(run_costs), 0.95) if run_costs else None,
            "runs_left_out": len(by_run) - len(run_costs),
        }
    return out


def interpolated(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between closest ranks (numpy's default)."""
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def actual_report(store: Store, by: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = build_report(store, by)
    return {
        tuple(r.key.values()): {
            "runs": r.runs,
            "calls": r.calls,
            **{f"{name}_tokens": r.tokens[name] for name in CLASSES},
            "cost_usd": r.cost_usd,
            "cost_complete": r.cost_complete,
            "unpriced_calls": r.unpriced_calls,
            "no_usage_calls": r.no_usage_calls,
            "avg_run_cost_usd": r.avg_run_cost_usd,
            "p50_run_cost_usd": r.p50_run_cost_usd,
            "p95_run_cost_usd": r.p95_run_cost_usd,
            "runs_left_out": r.runs_left_out,
        }
        for r in rows
    }


def assert_report(store: Store, calls: list[Call], by: str) -> None:
    expected = expected_report(calls, by)
    actual = actual_report(store, by)
    assert actual.keys() == expected.keys(), by
    for key, want in expected.items():
        got = actual[key]
        for field, value in want.items():
            if isinstance(value, float):
                assert got[field] == pytest.approx(value, rel=1e-9, abs=1e-15), (by, key, field)
            else:
                assert got[field] == value, (by, key, field)


def count_rows(store: Store) -> int:
    [(n,)] = store.query("SELECT COUNT(*) FROM usecase_calls")
    return int(n)


# --- schema ------------------------------------------------------------------------------


def test_schema_is_created_on_first_use_with_version_row(db_url: str) -> None:
    first = PostgresStore(db_url)
    try:
        assert first.query("SELECT value FROM otel_usecase_meta WHERE key = ?", ("schema_version",)) == [
            (str(SCHEMA_VERSION),)
        ]
        types = dict(
            first.query(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                ("usecase_calls",),
            )
        )
        assert types["start_ns"] == types["input_tokens"] == types["reasoning_tokens"] == "bigint"
        assert types["cost_usd"] == "double precision"
        assert types["trace_id"] == types["status"] == "text"
        assert types["error"] == "smallint"
        indexes = {
            n
            for (n,) in first.query(
                "SELECT indexname FROM pg_indexes WHERE tablename = ?", ("usecase_calls",)
            )
        }
        assert indexes == {"usecase_calls_pkey", "usecase_calls_run_totals", "usecase_calls_start"}
        first.write([make_call(1)])
    finally:
        first.close()

    second = PostgresStore(db_url)  # opening again: no error, nothing recreated, data kept
    try:
        assert count_rows(second) == 1
        assert second.query("SELECT COUNT(*) FROM otel_usecase_meta") == [(1,)]
    finally:
        second.close()


# The version 1 ledger's secondary indexes, as otel-usecase 0.1 created them.
V1_INDEXES = (
    (
        "CREATE INDEX usecase_calls_run_totals ON usecase_calls "
        "(run_id, use_case, input_tokens, output_tokens, cache_read_tokens, reasoning_tokens, cost_usd, status)"
    ),
    "CREATE INDEX usecase_calls_use_case ON usecase_calls (use_case, start_ns)",
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_1_ledger_is_upgraded_in_place(backend: str, db_url: str, tmp_path: Path) -> None:
    """Opening a schema 1 store moves start_ns into the covering index and drops the use-case index."""
    url = db_url if backend == "postgresql" else f"sqlite:///{tmp_path}/costs.db"
    store = open_store(url)
    calls = mixed_calls()
    store.write(calls)
    store.close()
    # make it what 0.1 left behind
    if backend == "postgresql":
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DROP INDEX usecase_calls_run_totals")
            for statement in V1_INDEXES:
                conn.execute(statement)
            conn.execute("UPDATE otel_usecase_meta SET value = '1' WHERE key = 'schema_version'")
    else:
        with sqlite3.connect(tmp_path / "costs.db") as conn:
            conn.execute("DROP INDEX usecase_calls_run_totals")
            for statement in V1_INDEXES:
                conn.execute(statement)
            conn.execute("UPDATE otel_usecase_meta SET value = '1' WHERE key = 'schema_version'")

    store = open_store(url)
    try:
        assert store.query("SELECT value FROM otel_usecase_meta WHERE key = ?", ("schema_version",)) == [
            (str(SCHEMA_VERSION),)
        ]
        if backend == "postgresql":
            definitions = dict(
                store.query(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ?", ("usecase_calls",)
                )
            )
            assert definitions.keys() == {"usecase_calls_pkey", "usecase_calls_run_totals", "usecase_calls_start"}
            assert definitions["usecase_calls_run_totals"].endswith("status, start_ns)")
        else:
            names = {
                n
                for (n,) in store.query(
                    "SELECT name FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name IN ('usecase_calls', 'otel_usecase_meta')"  # the tables this test is about
                )
            }
            assert names == {
                "sqlite_autoindex_usecase_calls_1",
                "sqlite_autoindex_otel_usecase_meta_1",
                "usecase_calls_run_totals",
                "usecase_calls_start",
            }
            columns = [r[2] for r in store.query("PRAGMA index_info(usecase_calls_run_totals)")]
            assert columns[-1] == "start_ns"
            # a --since report reads the covering index only, never the table
            plan = " ".join(
                r[3]
                for r in store.query(
                    "EXPLAIN QUERY PLAN SELECT run_id, use_case, SUM(cost_usd) FROM usecase_calls "
                    "WHERE start_ns >= ? GROUP BY run_id, use_case",
                    (0,),
                )
            )
            assert "COVERING INDEX usecase_calls_run_totals" in plan, plan
        assert count_rows(store) == len(calls)  # type: ignore[arg-type]
        assert_report(store, calls, "run")  # type: ignore[arg-type]
        since = T0 + 30 * 1_000_000
        recent = [c for c in calls if c.start_ns >= since]
        [row] = build_report(store, "use-case", use_case="triage", since="2026-01-01T00:00:00.030")
        assert row.calls == len([c for c in recent if c.use_case == "triage"])
    finally:
        store.close()


# The version 2 ledger, as otel-usecase created it before the cost engine v2 (types per store).
V2_LEDGER = """CREATE TABLE usecase_calls (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, start_ns {int} NOT NULL, end_ns {int} NOT NULL,
    service TEXT, use_case TEXT NOT NULL, run_id TEXT NOT NULL, use_case_version TEXT, step TEXT,
    experience_name TEXT, experience_id TEXT, user_id TEXT, provider TEXT, model TEXT, operation TEXT,
    input_tokens {int}, output_tokens {int}, cache_read_tokens {int} NOT NULL DEFAULT 0,
    cache_write_tokens {int} NOT NULL DEFAULT 0, reasoning_tokens {int} NOT NULL DEFAULT 0,
    cost_usd {real}, status TEXT NOT NULL, price_source TEXT, error {flag} NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id)
)"""
V2_SCHEMA = (
    "CREATE TABLE otel_usecase_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "INSERT INTO otel_usecase_meta (key, value) VALUES ('schema_version', '2')",
    (
        "CREATE INDEX usecase_calls_run_totals ON usecase_calls (run_id, use_case, input_tokens, "
        "output_tokens, cache_read_tokens, reasoning_tokens, cost_usd, status, start_ns)"
    ),
)
V2_COLUMNS = (
    "trace_id, span_id, start_ns, end_ns, service, use_case, run_id, use_case_version, step, experience_name, "
    "experience_id, user_id, provider, model, operation, input_tokens, output_tokens, cache_read_tokens, "
    "cache_write_tokens, reasoning_tokens, cost_usd, status, price_source, error"
)


def v2_row(call: Call) -> tuple[Any, ...]:
    """``call`` as a version 2 ledger row (its five token columns; no cost source, context or reason)."""
    t = call.tokens
    return (
        *call[:15],
        t.get("input"),
        t.get("output"),
        t.get("cache_read", 0),
        t.get("cache_write", 0),
        t.get("reasoning", 0),
        call.cost_usd,
        call.status,
        call.price_source,
        call.error,
    )


def make_v2_ledger(backend: str, url: str, calls: list[Call]) -> None:
    if backend == "postgresql":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(V2_LEDGER.format(int="BIGINT", real="DOUBLE PRECISION", flag="SMALLINT"))
            for statement in V2_SCHEMA:
                conn.execute(statement)
            conn.cursor().executemany(
                f"INSERT INTO usecase_calls ({V2_COLUMNS}) VALUES ({', '.join(['%s'] * 24)})",
                [v2_row(c) for c in calls],
            )
    else:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(V2_LEDGER.format(int="INTEGER", real="REAL", flag="INTEGER"))
            for statement in V2_SCHEMA:
                conn.execute(statement)
            conn.executemany(
                f"INSERT INTO usecase_calls ({V2_COLUMNS}) VALUES ({', '.join(['?'] * 24)})",
                [v2_row(c) for c in calls],
            )


def ledger_columns(store: Store, backend: str) -> set[str]:
    if backend == "postgresql":
        sql = "SELECT column_name FROM information_schema.columns WHERE table_name = 'usecase_calls'"
        return {name for (name,) in store.query(sql)}
    return {row[1] for row in store.query("PRAGMA table_info(usecase_calls)")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_2_ledger_is_read_as_is_by_a_reader_and_upgraded_in_place_by_a_writer(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    """A report (a reader) of a v2 ledger changes nothing and reads it; a writer adds the v3 columns,
    old rows read the same in every report, and new calls with audio tokens land."""
    url = db_url if backend == "postgresql" else f"sqlite:///{tmp_path}/costs.db"
    old = [
        c._replace(cost_source=None, computed_cost_usd=None, price_context=None, unpriced_reason=None)
        for c in mixed_calls()
        if not (c.tokens.keys() - {"input", "output", "cache_read", "cache_write", "reasoning"})
    ]
    make_v2_ledger(backend, url, old)

    reader = open_store(url, create=False)
    try:
        for by in GROUPINGS:
            assert_report(reader, old, by)
        from_sql = json.loads(render_report(reader, "run", "json"))
        from_python = json.loads(format_report(build_report(reader, "run"), "run", "json"))
        assert [list(r.items())[:2] for r in from_sql] == [list(r.items())[:2] for r in from_python]
        for got, want in zip(from_sql, from_python):
            assert got == {k: pytest.approx(v) if isinstance(v, float) else v for k, v in want.items()}
        [first] = [c for c in run_calls(reader, old[0].run_id) if c.span_id == old[0].span_id]
        assert first.tokens == {k: v for k, v in old[0].tokens.items() if v} and first.cost_source is None
        assert reader.query("SELECT value FROM otel_usecase_meta") == [("2",)]  # nothing upgraded
        assert "input_audio_tokens" not in ledger_columns(reader, backend)
    finally:
        reader.close()

    writer = open_store(url)
    try:
        assert writer.query("SELECT value FROM otel_usecase_meta") == [(str(SCHEMA_VERSION),)]
        assert {"input_audio_tokens", "output_audio_tokens", "cost_source"} <= ledger_columns(writer, backend)
        for by in GROUPINGS:
            assert_report(writer, old, by)  # old rows read the same
        # no 1-hour cache, audio, image or video tokens (v2 had no column for them), so no marks:
        # the report queries read only the covering index, which holds the five older classes
        assert indexed_columns(writer, backend) == INDEXED
        plans = report_plans(writer, backend)
        assert len(plans) >= 4 and [p for p in plans if not p.only_index] == []
        audio_in, audio_out = 1_200, 300  # gpt-4o-audio-preview: $40/M audio in, $80/M audio out
        new = make_call(500, run_id="audio-run")._replace(
            tokens={"input": 1_250, "output": 320, "input_audio": audio_in, "output_audio": audio_out},
            cost_usd=50 * 2.5e-6 + audio_in * 40e-6 + 20 * 10e-6 + audio_out * 80e-6,
            cost_source="genai-prices 0.2.3",
        )
        assert writer.write([new]) == []
        [landed] = run_calls(writer, "audio-run")
        assert landed.tokens == new.tokens and landed.cost_source == "genai-prices 0.2.3"
        assert seen_marks(writer) == {"token_class_seen:input_audio", "token_class_seen:output_audio"}
        for by in GROUPINGS:
            assert_report(writer, [*old, new], by)  # the audio tokens summed: read from the table now
        plans = report_plans(writer, backend)
        assert plans and all("input_audio_tokens" in p.sql and not p.only_index for p in plans)
    finally:
        writer.close()


INDEXED = (
    "run_id, use_case, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, "
    "cost_usd, status, start_ns"
)
"""The covering index: what nearly every report reads (never the 1-hour cache, audio, image, video classes)."""


def indexed_columns(store: Store, backend: str) -> str:
    if backend == "postgresql":
        [(definition,)] = store.query(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'usecase_calls_run_totals'"
        )
        return str(definition).split(" USING btree (", 1)[1].rstrip(")")
    return ", ".join(r[2] for r in store.query("PRAGMA index_info(usecase_calls_run_totals)"))


def seen_marks(store: Store) -> set[str]:
    """The token classes the ledger is marked as having had (keys of the meta table)."""
    return {
        key for (key,) in store.query("SELECT key FROM otel_usecase_meta WHERE key LIKE 'token_class_seen:%'")
    }


class Plan(NamedTuple):
    sql: str
    plan: str
    only_index: bool


def report_plans(store: Store, backend: str) -> list[Plan]:
    """The plan of every ledger query the reports ``--by run`` (table and JSON), ``--by use-case`` and
    ``--by use-case --since`` run, and whether it reads the covering index alone (never the table)."""
    recorded: list[tuple[str, list[Any]]] = []
    query = store.query
    store._rollups = False  # type: ignore[attr-defined]  # the ledger's plans (the rollups answer these otherwise)

    def recording(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        recorded.append((sql, list(params)))
        return query(sql, params)

    store.query = recording  # type: ignore[method-assign]
    try:
        build_report(store, "run")
        render_report(store, "run", "json")
        build_report(store, "use-case")
        build_report(store, "use-case", since="2026-01-01T00:00:00.010")
    finally:
        del store.query
        store._rollups = True  # type: ignore[attr-defined]
    if backend == "postgresql":  # what autovacuum does after a load: index-only scans need the visibility map
        with psycopg.connect(store._conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute("VACUUM ANALYZE usecase_calls")
    plans = []
    for sql, params in recorded:
        if "FROM usecase_calls" not in sql:
            continue
        if backend == "postgresql":
            plan = "\n".join(str(r[0]) for r in store.query("EXPLAIN " + sql, params))
            only = "Index Only Scan using usecase_calls_run_totals" in plan and not re.search(
                r"Seq Scan|Index Scan|Bitmap", plan.replace("Index Only Scan", "")
            )
        else:
            lines = [str(r[3]) for r in store.query("EXPLAIN QUERY PLAN " + sql, params)]
            plan = "\n".join(lines)
            reads = [line for line in lines if "usecase_calls" in line]
            only = bool(reads) and all(
                "USING COVERING INDEX usecase_calls_run_totals" in line for line in reads
            )
        plans.append(Plan(sql, plan, only))
    return plans


def test_newer_schema_version_is_refused_by_name(db_url: str) -> None:
    PostgresStore(db_url).close()
    newer = SCHEMA_VERSION + 41
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE otel_usecase_meta SET value = %s WHERE key = 'schema_version'", (str(newer),))
    with pytest.raises(StoreError, match=rf"schema version {newer}\b.*newer") as raised:
        PostgresStore(db_url)
    assert not isinstance(raised.value, StoreUnavailable)  # retrying will not help: upgrade


def test_open_store_returns_a_postgres_store_and_hides_the_password(db_url: str) -> None:
    store = open_store(db_url)
    try:
        assert isinstance(store, PostgresStore)
        assert store.url == db_url
    finally:
        store.close()
    # trust auth ignores the password, so it can be anything; it must not show in the URL
    with_password = db_url.replace("://otel@", "://otel:s3cr%40t@").replace("postgresql://", "postgres://")
    store = open_store(with_password)
    try:
        assert isinstance(store, PostgresStore)
        assert "s3cr" not in store.url and "***" in store.url
        assert "s3cr" not in repr(store)
    finally:
        store.close()


def test_an_unreachable_server_is_unavailable_quickly(pg_server: PostgresServer) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        PostgresStore(f"postgresql://otel@127.0.0.1:{port}/otel_usecase")
    assert time.monotonic() - started < 5


def test_without_psycopg_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes "import psycopg" raise ImportError
    with pytest.raises(StoreError, match=re.escape("pip install 'otel-usecase[postgres]'")):
        open_store("postgresql://otel@127.0.0.1:1/otel_usecase")


def test_passwords_never_show_in_store_urls() -> None:
    assert redact_url("postgresql://u:p%40ss@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("postgresql://u@db/x?sslmode=require&password=abc&a=1") == (
        "postgresql://u@db/x?sslmode=require&password=***&a=1"
    )
    assert redact_url("host=db password='a b' user=u") == "host=db password=*** user=u"
    assert redact_url("postgresql://u@db:5432/x") == "postgresql://u@db:5432/x"


# --- writing and reporting ---------------------------------------------------------------


def mixed_calls() -> list[Call]:
    """Three use cases, several runs, models, steps, users and versions, unpriced and no-usage calls."""
    calls: list[Call] = []
    for i in range(60):
        use_case = ("answer-ticket", "summarise-thread", "triage")[i % 3]
        call = make_call(
            i,
            use_case=use_case,
            run_id=f"{use_case}-run-{i % 4}",
            step=("retrieve", "draft", "review")[i % 3 if i % 2 else 0],
            user_id=None if i % 7 == 0 else f"user-{i % 3}",
            use_case_version=("1.0", "1.1")[i % 2],
            experience_name=None if i % 5 == 0 else "checkout",
            experience_id=None if i % 5 == 0 else f"exp-{i % 2}",
            error=int(i % 9 == 0),
        )
        if i % 4 == 1:  # a bigger model
            call = call._replace(
                model="gpt-4o",
                cost_usd=call.input_tokens * GPT4O_IN + call.output_tokens * GPT4O_OUT,  # type: ignore[operator]
                tokens={"input": call.input_tokens, "output": call.output_tokens, "reasoning": i},
            )
        if i % 8 == 5:  # an audio call: its audio parts included in input and output
            call = with_changes(call, input_audio_tokens=40 + i, output_audio_tokens=10 + i)
        if i % 6 == 2:
            call = call._replace(cost_source="provider", computed_cost_usd=call.cost_usd)
        elif i % 11 == 4:
            call = call._replace(cost_source="override 0123456789ab")
        if i % 10 == 3:
            call = call._replace(
                model="local-llama",
                provider="ollama",
                cost_usd=None,
                status="unpriced",
                cost_source=None,
                unpriced_reason="unknown model",
            )
        if i % 10 == 7:
            call = no_usage_copy(call)
        calls.append(call)
    return calls


def test_written_calls_add_up_in_every_report(any_store: Store) -> None:
    store = any_store
    calls = mixed_calls()
    store.write(calls[:25])
    store.write(calls[25:])
    assert count_rows(store) == len(calls)
    for by in GROUPINGS:
        assert_report(store, calls, by)
    total = sum(c.cost_usd or 0.0 for c in calls)
    assert sum(r.cost_usd or 0.0 for r in build_report(store, "use-case")) == pytest.approx(total, rel=1e-12)
    assert sum(r.unpriced_calls for r in build_report(store, "model")) == 6
    assert sum(r.no_usage_calls for r in build_report(store, "model")) == 6
    # where each cost came from: the split adds up to the total
    split = {r.key["cost_source"]: r for r in build_report(store, "cost-source")}
    assert split.keys() == {"provider", "genai-prices 0.2.3", "override 0123456789ab", None}
    for source, row in split.items():
        mine = [c for c in calls if c.cost_source == source]
        assert row.calls == len(mine)
        if source is not None:
            assert row.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in mine), rel=1e-12)
    assert split[None].cost_usd is None and split[None].unpriced_calls == 6
    # audio tokens are summed too, and only then shown in a table
    audio = sum(c.tokens.get("input_audio", 0) for c in calls)
    assert audio > 0 and sum(r.tokens["input_audio"] for r in build_report(store, "use-case")) == audio
    header = format_report(build_report(store, "use-case"), "use-case").splitlines()[2]
    assert re.split(r"\s{2,}", header.strip())[3:9] == [
        "input",
        "output",
        "cached",
        "reasoning",
        "input audio",
        "output audio",
    ]
    late = build_report(store, "use-case", since="2026-01-01T00:00:00.054")  # calls 54 on: none has audio
    assert sum(r.calls for r in late) == 6 and all(r.tokens["input_audio"] == 0 for r in late)
    assert "audio" not in format_report(late, "use-case").splitlines()[2]
    runs = json.loads(render_report(store, "run", "json", since="2026-01-01"))
    assert sum(r["output_audio_tokens"] for r in runs) == sum(c.tokens.get("output_audio", 0) for c in calls)

    # filtered reports pass ? parameters through
    only = [c for c in calls if c.use_case == "triage"]
    [row] = build_report(store, "use-case", use_case="triage")
    assert row.calls == len(only) and row.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in only))

    # sums of BIGINT columns come back as int (not Decimal), like SQLite's
    [(n, inp, cost, unpriced)] = store.query(
        "SELECT COUNT(*), SUM(input_tokens), COALESCE(SUM(cost_usd), 0), "
        "SUM(CASE WHEN status = 'unpriced' THEN 1 ELSE 0 END) FROM usecase_calls"
    )
    assert (type(n), type(inp), type(cost), type(unpriced)) == (int, int, float, int)
    assert inp == sum(c.input_tokens or 0 for c in calls)

    run = run_calls(store, "triage-run-2")
    assert [r.span_id for r in run] == [
        c.span_id for c in sorted(calls, key=lambda c: c.start_ns) if c.run_id == "triage-run-2"
    ]
    [(errors,)] = store.query("SELECT SUM(error) FROM usecase_calls")
    assert errors == sum(c.error for c in calls)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "postgresql-split"])
def test_runs_json_written_by_the_database_is_the_report(
    backend: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``report --by run --format json`` (JSON from SQL) says what the Python-built report says.

    ``postgresql-split``: the two halves a big ledger is written in, here forced on a small one.
    """
    store = PostgresStore(db_url) if backend != "sqlite" else open_store(f"sqlite:///{tmp_path}/costs.db")
    together: list[int] = []
    if backend == "postgresql-split":
        monkeypatch.setattr(postgres_reports, "SPLIT_FROM_PAGES", 0)
        query_together = store.query_together  # type: ignore[attr-defined]

        def counted(queries: Any) -> Any:
            results = query_together(queries)
            together.append(sum(1 for rows in results if rows and rows[0][0]))
            return results

        monkeypatch.setattr(store, "query_together", counted)
    try:
        assert render_report(store, "run", "json") == "[]"
        calls = mixed_calls()
        # two runs that cost exactly the same, in different use cases: ties go by use case, then run id
        twin = make_call(900, use_case="zz-tie", run_id="tie-b", span_id=f"{0x9000:016x}")
        calls += [twin, twin._replace(use_case="aa-tie", run_id="tie-a", span_id=f"{0x9001:016x}")]
        calls.append(
            make_call(901, use_case='odd "name"\n\u00e9', run_id="run-\u00e9", span_id=f"{0x9002:016x}")
        )
        store.write(calls)
        for filters in (
            {},
            {"use_case": "triage"},
            {"since": "2026-01-01T00:00:00.030"},
            {"use_case": "none"},
        ):
            from_sql = json.loads(render_report(store, "run", "json", **filters))  # type: ignore[arg-type]
            from_python = json.loads(format_report(build_report(store, "run", **filters), "run", "json"))  # type: ignore[arg-type]
            assert [(r["use_case"], r["run_id"]) for r in from_sql] == [
                (r["use_case"], r["run_id"]) for r in from_python
            ], filters
            for got, want in zip(from_sql, from_python):
                assert got.keys() == want.keys()
                for field, value in want.items():
                    assert got[field] == (
                        pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
                    )
        ties = [
            r["run_id"]
            for r in json.loads(render_report(store, "run", "json"))
            if r["run_id"].startswith("tie")
        ]
        assert ties == ["tie-a", "tie-b"]
        expected = expected_report(calls, "run")
        runs = {(r["use_case"], r["run_id"]): r for r in json.loads(render_report(store, "run", "json"))}
        assert runs.keys() == expected.keys()
        for key, want in expected.items():
            assert runs[key]["calls"] == want["calls"] and runs[key]["input_tokens"] == want["input_tokens"]
            assert runs[key]["cost_usd"] == pytest.approx(want["cost_usd"], rel=1e-12)
        if backend == "postgresql-split":
            assert together and max(together) == 2  # both halves ran and had runs in them
    finally:
        store.close()


def test_query_together_returns_every_part_and_needs_no_second_connection(db_url: str) -> None:
    """Parts run on connections of their own; a role allowed one connection still gets every part."""
    writer = PostgresStore(db_url)
    calls = mixed_calls()
    writer.write(calls)
    queries = [
        ("SELECT COUNT(*), SUM(input_tokens) FROM usecase_calls WHERE use_case = ?", ["triage"]),
        ("SELECT COUNT(*), SUM(input_tokens) FROM usecase_calls WHERE NOT (use_case = ?)", ["triage"]),
    ]
    triage = [c for c in calls if c.use_case == "triage"]
    others = [c for c in calls if c.use_case != "triage"]
    expected = [
        [(len(triage), sum(c.input_tokens or 0 for c in triage))],
        [(len(others), sum(c.input_tokens or 0 for c in others))],
    ]
    assert writer.query_together(queries) == expected
    role = f"reporter_{next(_db_names)}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        admin.execute(f"GRANT SELECT ON usecase_calls, otel_usecase_meta TO {role}")
    reader = PostgresStore(db_url.replace("://otel@", f"://{role}@"))
    try:
        assert reader.query_together(queries) == expected  # the second part ran on the first connection
    finally:
        reader.close()
        writer.close()


def test_a_split_run_report_falls_back_to_one_query_where_snapshots_cannot_be_exported(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server (or role) without ``pg_export_snapshot`` still gets the report, written in one query."""
    writer = PostgresStore(db_url)
    writer.write(mixed_calls())
    role = f"no_export_{next(_db_names)}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT ON usecase_calls, otel_usecase_meta TO {role}")
        admin.execute("REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC")
    reader = PostgresStore(db_url.replace("://otel@", f"://{role}@"))
    try:
        with pytest.raises(StoreError, match="pg_export_snapshot"):
            reader.query_together([("SELECT 1", []), ("SELECT 2", [])])
        monkeypatch.setattr(postgres_reports, "SPLIT_FROM_PAGES", 0)
        writer._rollups = False  # type: ignore[attr-defined]  # the ledger's figures, to the last bit
        from_python = format_report(build_report(writer, "run"), "run", "json")
        assert json.loads(render_report(reader, "run", "json")) == json.loads(from_python)
    finally:
        reader.close()
        writer.close()


def test_the_same_batch_written_twice_counts_once(any_store: Store) -> None:
    store = any_store
    calls = [make_call(i) for i in range(40)]
    store.write(calls)
    store.write(calls)
    store.write(list(reversed(calls[:10])))
    assert count_rows(store) == 40
    assert_report(store, calls, "run")


def test_a_no_usage_row_is_replaced_by_a_copy_with_usage_never_the_reverse(any_store: Store) -> None:
    store = any_store
    first_without = make_call(1)
    first_with = make_call(2)
    same_batch = make_call(3)
    store.write([no_usage_copy(first_without), first_with])
    store.write([first_without, no_usage_copy(first_with)])  # upgrade one, must not downgrade the other
    store.write([no_usage_copy(same_batch), same_batch])  # both copies in one batch
    store.write([no_usage_copy(first_without), no_usage_copy(same_batch)])  # late no-usage copies
    assert count_rows(store) == 3
    rows = {
        r[0]: r[1:] for r in store.query("SELECT span_id, status, input_tokens, cost_usd FROM usecase_calls")
    }
    for call in (first_without, first_with, same_batch):
        assert rows[call.span_id] == ("priced", call.input_tokens, pytest.approx(call.cost_usd))
    assert_report(store, [first_without, first_with, same_batch], "use-case")


def test_batches_of_any_size_are_written_whole_and_once(any_store: Store) -> None:
    """SQLite writes a batch as multi-row statements of 512, 256, ... 1 rows: every size must land whole."""
    store = any_store
    calls: list[Call] = []
    for size in (1, 2, 3, 7, 100, 511, 512, 513, 1100):
        batch = [make_call(len(calls) + i) for i in range(size)]
        store.write(batch)
        calls += batch
        assert count_rows(store) == len(calls), size
    random.Random(7).shuffle(calls)
    for start in range(0, len(calls), 700):  # a retry of everything, cut differently
        store.write(calls[start : start + 700])
    assert count_rows(store) == len(calls)
    assert_report(store, calls, "run")

    # Two copies of one request in one batch, in different statements (rows 0 and 600 of 700):
    # the copy with usage wins whichever comes first.
    fresh = [make_call(10_000 + i) for i in range(700)]
    fresh[0], fresh[600] = no_usage_copy(fresh[600]), fresh[600]
    fresh[1], fresh[601] = fresh[601], no_usage_copy(fresh[601])
    store.write(fresh)
    written = {
        span_id: status
        for span_id, status in store.query(
            "SELECT span_id, status FROM usecase_calls WHERE span_id IN (?, ?)",
            (fresh[600].span_id, fresh[601].span_id),
        )
    }
    assert written == {fresh[600].span_id: "priced", fresh[601].span_id: "priced"}
    assert count_rows(store) == len(calls) + 698


def test_a_batch_of_512_takes_milliseconds(store: PostgresStore) -> None:
    timings = []
    for batch in range(5):
        calls = [make_call(batch * 1000 + i) for i in range(512)]
        started = time.perf_counter()
        store.write(calls)
        timings.append(time.perf_counter() - started)
    assert count_rows(store) == 5 * 512
    # ~10 ms on a 2-CPU VM; the bound only catches a lost pipeline (one round trip per call) on slow CI
    assert statistics.median(timings) < 0.5, timings


def test_one_store_is_shared_safely_by_threads(any_store: Store) -> None:
    store = any_store
    calls = [make_call(i) for i in range(800)]
    errors: list[BaseException] = []

    def work(part: int) -> None:
        try:
            for b in range(part * 100, part * 100 + 100, 25):
                store.write(calls[b : b + 25])
                store.query("SELECT COUNT(*) FROM usecase_calls WHERE run_id = ?", ("run-1",))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert count_rows(store) == 800
    assert_report(store, calls, "run")


def test_text_with_nul_characters_is_stored_not_rejected(store: PostgresStore) -> None:
    call = make_call(1, user_id="bad\x00user", step="\x00")
    store.write([call])
    assert store.query("SELECT user_id, step FROM usecase_calls") == [("bad\ufffduser", "\ufffd")]


# --- placeholders ------------------------------------------------------------------------

TRICKY = "50% off'; DROP TABLE usecase_calls; -- ? %s %(x)s \"q\" \\ 'it''s' $$ /* ?"


def test_question_marks_become_placeholders_only_outside_literals() -> None:
    cases = {
        "SELECT a FROM t WHERE x = ? AND y LIKE 'a%?'": "SELECT a FROM t WHERE x = %s AND y LIKE 'a%%?'",
        "SELECT 'it''s ?', ?": "SELECT 'it''s ?', %s",
        'SELECT "we?ird%", ?': 'SELECT "we?ird%%", %s',
        "SELECT ? -- what? 100%\n, ?": "SELECT %s -- what? 100%%\n, %s",
        "SELECT /* ? /* nested ? */ still ? */ ?": "SELECT /* ? /* nested ? */ still ? */ %s",
        "SELECT $$?%$$, $tag$ ? $tag$, ?": "SELECT $$?%%$$, $tag$ ? $tag$, %s",
        "SELECT E'\\'?', ?": "SELECT E'\\'?', %s",
        "SELECT 5 % 3, ?": "SELECT 5 %% 3, %s",
    }
    for sql, want in cases.items():
        assert translate_placeholders(sql) == want, sql


def test_values_with_percent_quotes_and_sql_round_trip_verbatim(store: PostgresStore) -> None:
    call = make_call(7, user_id=TRICKY, step=TRICKY, run_id=TRICKY, use_case="q?uote's 100%")
    store.write([call, make_call(8)])
    rows = store.query(
        "SELECT user_id, step, '?', 'it''s 100%', $$?%$$, 7 % 4 FROM usecase_calls "
        "WHERE user_id = ? AND step LIKE ? /* a ? in a comment */ AND use_case = ? -- and here ?",
        (TRICKY, "50% off%", "q?uote's 100%"),
    )
    assert rows == [(TRICKY, TRICKY, "?", "it's 100%", "?%", 3)]
    assert [c.user_id for c in run_calls(store, TRICKY)] == [TRICKY]
    assert count_rows(store) == 2  # the DROP TABLE in the value stayed a value
    [row] = build_report(store, "run", use_case="q?uote's 100%")
    assert row.key == {"use_case": "q?uote's 100%", "run_id": TRICKY}


# --- outages -----------------------------------------------------------------------------


def test_a_stopped_server_makes_writes_unavailable_and_the_store_reconnects(
    pg_server: PostgresServer, db_url: str
) -> None:
    store = PostgresStore(db_url)
    before = [make_call(i) for i in range(20)]
    during = [make_call(i) for i in range(20, 40)]
    after = [make_call(i) for i in range(40, 60)]
    try:
        store.write(before)
        pg_server.stop()
        try:
            for _ in range(2):  # the old connection is dead, then the reconnect is refused
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="unavailable|cannot connect"):
                    store.write(during)
                assert time.monotonic() - started < 5
            with pytest.raises(StoreUnavailable):
                store.query("SELECT 1")
        finally:
            pg_server.start()
        store.write(during)  # the same store object: it reconnects on its own
        # a restart between two calls is invisible: the stale connection is replaced and the batch retried
        pg_server.stop()
        pg_server.start()
        store.write(after)
        assert count_rows(store) == 60
        assert_report(store, before + during + after, "run")
    finally:
        store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.write(after)


# --- many writers ------------------------------------------------------------------------

N_WRITERS = 4
N_RUNS = 20
PER_WRITER = 2000
OVERLAP = 400  # each writer shares its last 400 calls with the next writer (cyclically)
BATCH = 100
DISTINCT = N_WRITERS * (PER_WRITER - OVERLAP)  # 6400


def concurrent_call(i: int) -> Call:
    return make_call(
        i,
        trace_id=f"{0xC0C0 + i // 8:032x}",
        span_id=f"{i:016x}",
        use_case=f"uc-{(i % N_RUNS) % 3}",
        run_id=f"run-{i % N_RUNS:02d}",
    )


def writer_batches(worker: int) -> list[list[Call]]:
    """What one writer sends: its 2000 calls shuffled into batches of 100, ~10% of batches sent twice.

    In the range shared with the next writer, this writer sends a no-usage copy of
    every other call, the next writer the full copy: the usage must win whatever
    the order.
    """
    start = worker * (PER_WRITER - OVERLAP)
    calls = []
    for k in range(PER_WRITER):
        i = (start + k) % DISTINCT
        call = concurrent_call(i)
        if k >= PER_WRITER - OVERLAP and i % 2 == 0:
            call = no_usage_copy(call)
        calls.append(call)
    rng = random.Random(worker)
    rng.shuffle(calls)
    batches = [calls[b : b + BATCH] for b in range(0, len(calls), BATCH)]
    for again in rng.sample(range(len(batches)), k=len(batches) // 10):
        batches.insert(rng.randrange(again + 1, len(batches) + 1), batches[again])
    return batches


def _writer(url: str, worker: int, barrier: Any, results: Any) -> None:
    """One writer process: open the store at the same moment as the others, then write."""
    try:
        barrier.wait(timeout=60)
        store = PostgresStore(url)  # all four create the schema at once on an empty database
        for batch in writer_batches(worker):
            store.write(batch)
        store.close()
        results.put((worker, "ok"))
    except BaseException as exc:  # report it to the test instead of dying silently
        # (the URL fills the start; the cause, a deadlock or a lock timeout, follows it)
        results.put((worker, f"{type(exc).__name__}: {exc}"[:1000]))


def test_four_concurrent_writers_count_every_call_once(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db_url, w, barrier, results)) for w in range(N_WRITERS)]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=90) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert outcomes == {w: "ok" for w in range(N_WRITERS)}, outcomes
    assert sum(len(writer_batches(w)) for w in range(N_WRITERS)) == N_WRITERS * 22  # resends happened

    expected = [concurrent_call(i) for i in range(DISTINCT)]
    store = PostgresStore(db_url)
    try:
        assert count_rows(store) == DISTINCT
        by_run = {r.key["run_id"]: r for r in build_report(store, "run")}
        assert len(by_run) == N_RUNS
        for run in range(N_RUNS):
            mine = [c for c in expected if c.run_id == f"run-{run:02d}"]
            row = by_run[f"run-{run:02d}"]
            assert row.calls == len(mine)
            assert row.input_tokens == sum(c.input_tokens or 0 for c in mine)
            assert row.output_tokens == sum(c.output_tokens or 0 for c in mine)
            assert row.cached_tokens == sum(c.tokens.get("cache_read", 0) for c in mine)
            assert row.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in mine), rel=1e-9)
            assert row.no_usage_calls == 0  # every no-usage copy lost to its full copy
        assert_report(store, expected, "use-case")
    finally:
        store.close()


def test_exporter_survives_postgres_stopped_in_the_middle_of_a_load(
    pg_server: PostgresServer, db_url: str, fake_openai: Any, client: Any
) -> None:
    """The in-process exporter over PostgreSQL: the server stops and starts mid-load; totals stay exact."""
    from otel_usecase import track_context
    from otel_usecase.testing import FakeUsage

    from .expect import mini_cost
    from .rigs import CostRig

    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    rig = CostRig(db_url)

    def calls(n: int) -> None:
        with track_context("pg_load", use_case_id="pg-run"):
            for _ in range(n):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
                )
        rig.flush()

    try:
        calls(5)
        pg_server.stop()
        try:
            calls(7)
            assert rig.exporter.buffered_calls == 7
        finally:
            pg_server.start()
        calls(3)
        assert rig.exporter.buffered_calls == 0 and rig.exporter.dropped_calls == 0
        (row,) = rig.report("run")
    finally:
        rig.close()
    assert row["calls"] == 15
    assert row["cost_usd"] == pytest.approx(15 * mini_cost(1_000, 100))
