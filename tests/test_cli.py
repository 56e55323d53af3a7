"""The ``otel-usecase`` command tells the truth about what it read: the real console script, run as users run it.

Stores are filled the way users fill them: calls through the real OpenAI instrumentation
against FakeOpenAI (``rig``), or rows as another writer (an older version, ``serve`` taking
hostile ids over OTLP) could have left them, written with ``sqlite3`` directly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_usecase import track_context
from otel_usecase.cost.calls import Call
from otel_usecase.cost.usage import MAX_TOKEN_COUNT
from otel_usecase.report.queries import CELL_LIMIT, GROUPINGS
from otel_usecase.store import open_store
from otel_usecase.store.base import COLUMNS, classes_to_mark, mark_params, mark_sql, row_of
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost
from .pg import PostgresServer
from .rigs import CostRig

MSG = [{"role": "user", "content": "hello"}]
CLI = str(Path(sys.executable).parent / "otel-usecase")
FORMATS = ("table", "json", "csv")


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real console script (PYTHONPATH, inherited, puts the code under test first)."""
    return subprocess.run([CLI, *argv], check=False, capture_output=True, text=True, timeout=120)


def ok(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = cli(*argv)
    assert proc.returncode == 0, proc.stderr
    return proc


# --- which store, and only an existing one --------------------------------------------------


def test_report_on_a_missing_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing-dir" / "costs.db"
    url = f"sqlite:///{missing}"
    for argv in (("report",), ("report", "--by", "run", "--format", "json"), ("runs", "show", "r1")):
        proc = cli(*argv, "--store", url)
        assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
        assert url in proc.stderr and "does not exist" in proc.stderr
        assert proc.stdout == ""
    assert not missing.parent.exists()  # no directory, no empty database


def test_a_file_that_is_not_a_ledger_is_an_error_and_is_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (t TEXT)")
    conn.commit()
    conn.close()
    proc = cli("report", "--store", f"sqlite:///{other}")
    assert proc.returncode == 1 and "no ledger table" in proc.stderr and str(other) in proc.stderr
    conn = sqlite3.connect(other)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


def test_the_default_store_is_not_created_by_a_report(tmp_path: Path) -> None:
    """A user who forgot OTEL_USECASE_STORE gets an error naming the default store, not an empty report."""
    env = {k: v for k, v in os.environ.items() if k != "OTEL_USECASE_STORE"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    proc = subprocess.run([CLI, "report"], check=False, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert str(tmp_path / "data" / "otel-usecase" / "costs.db") in proc.stderr
    assert not (tmp_path / "data").exists()


def test_bad_options_are_usage_errors_before_the_store_is_looked_at(tmp_path: Path) -> None:
    proc = cli("report", "--since", "yesterday-ish", "--store", f"sqlite:///{tmp_path}/none.db")
    assert proc.returncode == 2 and "--since 'yesterday-ish'" in proc.stderr
    proc = cli("report", "--store", "mysql://u@h/db")
    assert proc.returncode == 2 and "unknown scheme 'mysql'" in proc.stderr


@pytest.fixture
def filled(rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI) -> CostRig:
    """Three runs of one use case: priced (gpt-4o-mini), unpriced (an unknown model), and mixed."""
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=200, cached_tokens=400))
    with track_context("support", use_case_id="run-priced"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with track_context("support", use_case_id="run-unpriced"):
        client.chat.completions.create(model="acme-llm-cli-1", messages=MSG)
    with track_context("support", use_case_id="run-mixed"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        client.chat.completions.create(model="acme-llm-cli-1", messages=MSG)
    rig.flush()
    return rig


PER_CALL = mini_cost(1_000, 200, 400)


def test_every_report_says_which_store_it_read(filled: CostRig) -> None:
    url = filled.store_url
    table = ok("report", "--store", url)
    assert table.stdout.splitlines()[0] == f"store {url}"
    as_json = ok("report", "--format", "json", "--store", url)
    assert json.loads(as_json.stdout)  # stdout stays pure JSON
    assert url in as_json.stderr
    as_csv = ok("report", "--format", "csv", "--store", url)
    assert next(csv.reader(io.StringIO(as_csv.stdout)))[0] == "use_case"
    assert url in as_csv.stderr
    run = ok("runs", "show", "run-priced", "--store", url)
    assert run.stdout.splitlines()[0] == f"store {url}"
    assert url in ok("runs", "show", "run-priced", "--format", "json", "--store", url).stderr


def test_runs_show_of_an_unknown_run_exits_1(filled: CostRig) -> None:
    for fmt in FORMATS:
        proc = cli("runs", "show", "no-such-run", "--format", fmt, "--store", filled.store_url)
        assert proc.returncode == 1, proc.stdout
        assert "no run 'no-such-run'" in proc.stderr and filled.store_url in proc.stderr


# --- unpriced is unknown, not free ----------------------------------------------------------


def test_unpriced_is_never_shown_as_zero(filled: CostRig) -> None:
    url = filled.store_url
    runs = {
        r["run_id"]: r
        for r in json.loads(ok("report", "--by", "run", "--format", "json", "--store", url).stdout)
    }
    assert runs["run-priced"]["cost_usd"] == pytest.approx(2 * PER_CALL)
    assert runs["run-priced"]["cost_complete"] is True
    assert runs["run-unpriced"]["cost_usd"] is None and runs["run-unpriced"]["cost_complete"] is False
    assert runs["run-mixed"]["cost_usd"] == pytest.approx(PER_CALL)  # a lower bound, marked so
    assert runs["run-mixed"]["cost_complete"] is False
    assert (
        not {"avg_run_cost_usd", "runs_left_out"} & runs["run-priced"].keys()
    )  # one run's figures: its cost
    assert list(runs) == ["run-priced", "run-mixed", "run-unpriced"]  # most expensive first, unknown last

    # per-run figures of the use case: only the fully priced run, and how many were left out
    (case,) = json.loads(ok("report", "--format", "json", "--store", url).stdout)
    assert case["runs"] == 3 and case["runs_left_out"] == 2
    assert case["cost_usd"] == pytest.approx(3 * PER_CALL) and case["cost_complete"] is False
    for stat in ("avg_run_cost_usd", "p50_run_cost_usd", "p95_run_cost_usd"):
        assert case[stat] == pytest.approx(2 * PER_CALL)

    table = ok("report", "--by", "run", "--store", url).stdout
    row = {line.split()[1]: line for line in table.splitlines() if line.startswith("support ")}
    assert re.search(r"\s+unpriced\s", row["run-unpriced"]) and "$" not in row["run-unpriced"]
    assert f">= ${PER_CALL:.6f}" in row["run-mixed"]
    assert f"total >= ${3 * PER_CALL:.6f}" in table
    assert "avg/p50/p95 per run leave out 2 runs" in ok("report", "--store", url).stdout

    by_model = ok("report", "--by", "model", "--store", url).stdout
    (acme,) = [line for line in by_model.splitlines() if "acme-llm-cli-1" in line]
    assert "unpriced" in acme and "$" not in acme
    model_csv = {
        r["model"]: r
        for r in csv.DictReader(
            io.StringIO(ok("report", "--by", "model", "--format", "csv", "--store", url).stdout)
        )
    }
    assert (
        model_csv["acme-llm-cli-1"]["cost_usd"] == ""
        and model_csv["acme-llm-cli-1"]["cost_complete"] == "False"
    )
    assert float(model_csv["gpt-4o-mini"]["cost_usd"]) == pytest.approx(3 * PER_CALL)

    shown = ok("runs", "show", "run-mixed", "--store", url).stdout
    assert "unpriced" in shown and f"total >= ${PER_CALL:.5f}" in shown


def test_partial_calls_make_a_lower_bound(store_url: str) -> None:
    """A call whose usage could only partly be read (status ``partial``) is priced on what was read."""
    _insert_calls(
        store_url, [_call("run-p", 1, cost=PER_CALL, status="partial"), _call("run-p", 2, cost=PER_CALL)]
    )
    (run,) = json.loads(ok("report", "--by", "run", "--format", "json", "--store", store_url).stdout)
    assert (run["partial_calls"], run["cost_complete"]) == (1, False)
    assert run["cost_usd"] == pytest.approx(2 * PER_CALL)
    (case,) = json.loads(ok("report", "--format", "json", "--store", store_url).stdout)
    assert (case["runs_left_out"], case["avg_run_cost_usd"], case["cost_complete"]) == (1, None, False)
    table = ok("report", "--by", "run", "--store", store_url).stdout
    assert f">= ${2 * PER_CALL:.6f}" in table and "1 calls with partly unreadable usage" in table


def test_the_table_says_input_includes_cached_and_costs_share_one_precision(filled: CostRig) -> None:
    table = ok("report", "--by", "run", "--store", filled.store_url).stdout
    assert "input includes cached" in table.splitlines()[1]
    priced = [line for line in table.splitlines() if line.startswith("support ")]
    decimals = {len(m) for line in priced for m in re.findall(r"\$\d[\d,]*\.(\d+)", line)}
    assert len(decimals) == 1, priced  # every cost in the table with the same number of decimals


def test_runs_show_and_the_cost_source_split_say_where_each_cost_came_from(store_url: str) -> None:
    """``runs show`` names each call's cost source, price context and why a call has no cost;
    ``report --by cost-source`` splits the cost into provider-billed, genai-prices and override."""
    priority = 8 * 2.50e-6 + 82 * 20.00e-6  # gpt-5 at the Priority tier: $2.50/M in, $20/M out
    billed = 0.0042  # what the gateway billed (OpenRouter usage.cost), kept as the call's cost
    override = 1_000 * 0.10e-6 + 200 * 0.40e-6  # a prices file's own rate for a house model
    calls = [
        _call("run-src", 1, cost=priority, model="gpt-5")._replace(
            tokens={"input": 8, "output": 82, "reasoning": 64},
            cost_source="genai-prices 0.2.3",
            price_context="service_tier=priority",
        ),
        _call("run-src", 2, cost=billed)._replace(cost_source="provider", computed_cost_usd=0.0031),
        _call("run-src", 3, cost=override, model="house-llm")._replace(cost_source="override 0123456789ab"),
        _call("run-src", 4, model="gpt-4o-audio-preview", status="unpriced")._replace(
            tokens={"input": 900, "output": 300, "input_audio": 700, "output_audio": 250},
            unpriced_reason="unknown token class audio",
        ),
    ]
    _insert_calls(store_url, calls)
    table = ok("runs", "show", "run-src", "--store", store_url).stdout.splitlines()
    assert table[0] == f"store {store_url}" and table[1].startswith("run run-src")
    header = re.split(r"\s{2,}", table[4].strip())
    assert header[3:13] == [
        "input",
        "output",
        "cached",
        "reasoning",
        "input audio",
        "output audio",
        "cost",
        "cost source",
        "price context",
        "unpriced reason",
    ]
    rows = {re.split(r"\s{2,}", line)[2]: re.split(r"\s{2,}", line) for line in table[6:10]}
    assert rows["gpt-5"][9:12] == [f"${priority:.6f}", "genai-prices 0.2.3", "service_tier=priority"]
    assert rows["gpt-4o-mini"][9:11] == [f"${billed:.6f}", "provider"]
    assert rows["house-llm"][10] == "override 0123456789ab"
    assert rows["gpt-4o-audio-preview"][7:9] == ["700", "250"]
    assert rows["gpt-4o-audio-preview"][9:13] == ["unpriced", "-", "-", "unknown token class audio"]
    records = json.loads(ok("runs", "show", "run-src", "--format", "json", "--store", store_url).stdout)
    assert [(r["cost_source"], r["price_context"], r["unpriced_reason"]) for r in records] == [
        ("genai-prices 0.2.3", "service_tier=priority", None),
        ("provider", None, None),
        ("override 0123456789ab", None, None),
        (None, None, "unknown token class audio"),
    ]
    assert records[1]["computed_cost_usd"] == pytest.approx(0.0031)
    assert (records[3]["input_audio_tokens"], records[3]["output_audio_tokens"]) == (700, 250)

    split = json.loads(ok("report", "--by", "cost-source", "--format", "json", "--store", store_url).stdout)
    assert [(r["cost_source"], r["calls"]) for r in split] == [
        ("provider", 1),
        ("genai-prices 0.2.3", 1),
        ("override 0123456789ab", 1),
        (None, 1),
    ]
    assert [r["cost_usd"] for r in split[:3]] == [
        pytest.approx(billed),
        pytest.approx(priority),
        pytest.approx(override),
    ]
    assert split[3]["cost_usd"] is None and split[3]["input_audio_tokens"] == 700
    by_source = ok("report", "--by", "cost-source", "--store", store_url).stdout
    assert "provider" in by_source and "input audio" in by_source


# --- no stored row makes a report fail --------------------------------------------------------

MAX_INT64 = 2**63 - 1


def _call(
    run_id: str,
    i: int,
    *,
    cost: float | None = None,
    status: str = "priced",
    input_tokens: int = 1_000,
    **changes: Any,
) -> Call:
    call = Call(
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        start_ns=1_767_225_600_000_000_000 + i,
        end_ns=1_767_225_600_000_000_000 + i + 1,
        service="svc",
        use_case="support",
        run_id=run_id,
        use_case_version="v1",
        step="answer",
        experience_name="chat",
        experience_id="exp-1",
        user_id="user-1",
        provider="openai",
        model="gpt-4o-mini",
        operation="chat",
        tokens={"input": input_tokens, "output": 200, "cache_read": 400},
        cost_usd=cost,
        status=status,
        price_source="genai-prices",
        error=0,
    )
    return call._replace(**changes)


def _insert_calls(store_url: str, calls: list[Call]) -> None:
    """``calls`` as rows, written with sqlite3 past every check of ours (a store made by open_store)."""
    open_store(store_url).close()
    conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
    rows = [row_of(call) for call in calls]
    conn.executemany(
        f"INSERT INTO usecase_calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows
    )
    marks = classes_to_mark([value for row in rows for value in row], ())
    if marks:  # a writer past the store marks the audio, image, video classes itself (store.base.SEEN_PREFIX)
        conn.execute(mark_sql("?", len(marks)), mark_params(marks))
    conn.commit()
    conn.close()


def _insert_raw(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Rows as another writer (an older version, a script) could have left them, bypassing every check."""
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO usecase_calls (trace_id, span_id, start_ns, end_ns, use_case, run_id, user_id, provider, model, "
        "input_tokens, output_tokens, cache_read_tokens, reasoning_tokens, cost_usd, status) "
        "VALUES (?, ?, ?, ?, 'support', ?, 'user-1', 'openai', 'gpt-4o-mini', ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()


def test_no_stored_row_makes_a_report_fail(filled: CostRig, tmp_path: Path) -> None:
    url = filled.store_url
    path = Path(url.removeprefix("sqlite:///"))
    # The largest count SQLite holds, in a run that has other calls too: SUM() overflows.
    _insert_raw(
        path,
        [
            (
                "f" * 32,
                "1" * 16,
                1,
                2,
                "run-huge",
                MAX_INT64,
                MAX_INT64,
                MAX_INT64,
                MAX_INT64,
                0.01,
                "priced",
            ),
            ("f" * 32, "2" * 16, 3, 4, "run-huge", 1_000, 10, 0, 0, 0.02, "priced"),
            ("f" * 32, "3" * 16, 5, 6, "run-huge", -(2**63), "text", b"\x00\xff", "x", 1e308, "priced"),
            (
                "f" * 32,
                "4" * 16,
                "not a time",
                6,
                "run-huge",
                MAX_INT64,
                MAX_INT64,
                0,
                0,
                1e308,
                "unheard-of",
            ),
        ],
    )
    for by in GROUPINGS:
        for fmt in FORMATS:
            proc = cli("report", "--by", by, "--format", fmt, "--store", url)
            assert proc.returncode == 0, (by, fmt, proc.stderr)
            if fmt == "json":
                json.loads(proc.stdout)
    for fmt in FORMATS:
        assert cli("runs", "show", "run-huge", "--format", fmt, "--store", url).returncode == 0
    # Every other run keeps its exact figures.
    runs = {
        r["run_id"]: r
        for r in json.loads(ok("report", "--by", "run", "--format", "json", "--store", url).stdout)
    }
    assert runs["run-priced"]["input_tokens"] == 2_000 and runs["run-priced"]["cost_usd"] == pytest.approx(
        2 * PER_CALL
    )
    assert runs["run-huge"]["input_tokens"] == MAX_INT64  # saturated, not an error
    assert runs["run-huge"]["cost_usd"] is None  # past 1e308: unknown, not Infinity (invalid JSON)


def test_token_sums_stay_exact_integers(store_url: str) -> None:
    """Overflow-proof sums are still exact integers for any count a call can have (up to MAX_TOKEN_COUNT)."""
    calls = [_call("run-big", i, cost=0.5, input_tokens=MAX_TOKEN_COUNT) for i in range(1, 5)]
    _insert_calls(store_url, [*calls, _call("run-big", 9, cost=0.5, input_tokens=1)])
    (run,) = json.loads(ok("report", "--by", "run", "--format", "json", "--store", store_url).stdout)
    (group,) = json.loads(ok("report", "--by", "user", "--format", "json", "--store", store_url).stdout)
    assert type(run["input_tokens"]) is int and run["input_tokens"] == 4 * MAX_TOKEN_COUNT + 1
    assert type(group["input_tokens"]) is int and group["input_tokens"] == 4 * MAX_TOKEN_COUNT + 1


# --- hostile text in table output -------------------------------------------------------------

BIDI = "invoice\u202eexe.txt"
ZERO_WIDTH = "ad\u200bmin"
LINE_SEP = "line\u2028two"
ESCAPE = "\x1b[2J\x1b[31mred"
LONG = "x" * 500


def test_control_and_format_characters_are_escaped_in_tables(store_url: str) -> None:
    _insert_calls(
        store_url,
        [
            _call(BIDI, 1, cost=0.001, user_id=ZERO_WIDTH, model=LINE_SEP, step=ESCAPE),
            _call(BIDI, 2, cost=0.002, user_id=LONG, span_id="\x1b]0;pwned\x07abcdef"),
        ],
    )
    outputs = [ok("report", "--by", by, "--store", store_url).stdout for by in GROUPINGS]
    outputs.append(ok("runs", "show", BIDI, "--store", store_url).stdout)
    for text in outputs:
        for char in text:
            assert unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp") or char == "\n", (
                repr(char),
                text,
            )
        rows = text.splitlines()
        rule = next(k for k, line in enumerate(rows) if line.startswith("---"))
        for line in rows[rule + 1 : rows.index("", rule)]:  # the table's rows
            assert all(len(cell) <= CELL_LIMIT for cell in re.split(r"\s{2,}", line)), line
    joined = "\n".join(outputs)
    assert "invoice\\u202eexe.txt" in joined and "ad\\u200bmin" in joined and "line\\u2028two" in joined
    assert "\\x1b[2J\\x1b[31mred" in joined and "\\x1b]0;pwned\\x07abcdef" in joined
    assert "x" * (CELL_LIMIT - 1) + "\u2026" in joined and "x" * CELL_LIMIT not in joined
    # JSON and CSV are for tools: values verbatim there.
    runs = json.loads(ok("runs", "show", BIDI, "--format", "json", "--store", store_url).stdout)
    assert {r["user_id"] for r in runs} == {ZERO_WIDTH, LONG}


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def test_postgres_reader_never_creates_the_ledger(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("cli_empty")
    proc = cli("report", "--store", url)
    assert proc.returncode == 1 and "no ledger table" in proc.stderr
    import psycopg

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('usecase_calls')").fetchone() == (None,)


def test_postgres_reports_unpriced_and_huge_rows(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("cli_rows")
    open_store(url).close()
    import psycopg

    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            f"INSERT INTO usecase_calls ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            [
                row_of(call)
                for call in (
                    _call("run-priced", 1, cost=PER_CALL),
                    _call("run-unpriced", 2, model="acme-llm-cli-1", status="unpriced"),
                    _call("run-huge", 3, cost=0.01, input_tokens=MAX_INT64),
                    _call("run-huge", 4, cost=0.01, input_tokens=MAX_INT64),
                )
            ],
        )
    for by in GROUPINGS:
        for fmt in FORMATS:
            proc = cli("report", "--by", by, "--format", fmt, "--store", url)
            assert proc.returncode == 0, (by, fmt, proc.stderr)
    runs = {
        r["run_id"]: r
        for r in json.loads(ok("report", "--by", "run", "--format", "json", "--store", url).stdout)
    }
    assert runs["run-huge"]["input_tokens"] == 2 * MAX_INT64  # numeric: exact
    assert runs["run-unpriced"]["cost_usd"] is None and runs["run-unpriced"]["cost_complete"] is False
    assert list(runs)[-1] == "run-unpriced"
    table = ok("report", "--by", "model", "--store", url).stdout
    (acme,) = [line for line in table.splitlines() if "acme-llm-cli-1" in line]
    assert "unpriced" in acme and "$" not in acme
