"""``runs list``, ``report --limit`` and ``report --by day|week|month [--tz]``, as a user runs them.

Runs are recorded through the real openai client and instrumentation against FakeOpenAI (each gpt-4o-mini
call: 10 prompt and 5 completion tokens, 10 * $0.15/M + 5 * $0.60/M), or, where a test needs calls at
chosen times, written as the exporter writes them with their published-price cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_usecase import track_context
from otel_usecase.cli import main as cli_main
from otel_usecase.store import open_store

from .builders import a_call
from .expect import mini_cost
from .rigs import CostRig

BIN = Path(sys.executable).parent
MSG = [{"role": "user", "content": "hello"}]
CALL = mini_cost(10, 5)
HOUR = 3_600_000_000_000
DAY_2026_03_10 = 1_773_100_800 * 1_000_000_000  # 2026-03-10 00:00 UTC


def record(store_url: str, client: openai.OpenAI, runs: list[tuple[str, str, int]]) -> list[str]:
    """Each (use case, user, calls) as one run, in this order; returns the run ids."""
    rig = CostRig(store_url)
    ids = []
    try:
        for use_case, user, calls in runs:
            with track_context(use_case, user_id=user) as scope:
                for _ in range(calls):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
                ids.append(scope.use_case_id)
            rig.flush()  # one run after the other: newest is the last one recorded
    finally:
        rig.close()
    return ids


def runs_list(store_url: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "otel-usecase"), "runs", "list", "--store", store_url, "--format", "json", *args],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_runs_list_pages_newest_first_with_the_reports_filters(
    sqlite_or_postgres: str, client: openai.OpenAI
) -> None:
    ids = record(
        sqlite_or_postgres, client, [("triage", "alice", 1), ("triage", "bob", 3), ("answer", "alice", 2)]
    )
    newest = runs_list(sqlite_or_postgres)
    assert [r["run_id"] for r in newest] == ids[::-1]
    assert [r["calls"] for r in newest] == [2, 3, 1]
    assert [r["cost_usd"] for r in newest] == pytest.approx([2 * CALL, 3 * CALL, CALL])
    assert newest[0]["input_tokens"] == 20 and newest[0]["output_tokens"] == 10 and newest[0]["cost_complete"]
    assert [r["run_id"] for r in runs_list(sqlite_or_postgres, "--limit", "1", "--offset", "1")] == [ids[1]]
    assert [r["run_id"] for r in runs_list(sqlite_or_postgres, "--order", "cost")] == [ids[1], ids[2], ids[0]]
    assert [
        r["run_id"] for r in runs_list(sqlite_or_postgres, "--use-case", "triage", "--user", "alice")
    ] == [ids[0]]
    table = subprocess.run(
        [str(BIN / "otel-usecase"), "runs", "list", "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert ids[1] in table and "triage" in table and "alice" in table


def test_report_limit_keeps_the_most_expensive_rows(
    store_url: str, client: openai.OpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    record(store_url, client, [("cheap", "u", 1), ("dear", "u", 3), ("middle", "u", 2)])
    capsys.readouterr()
    assert cli_main(["report", "--store", store_url, "--format", "json", "--limit", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["use_case"], r["calls"]) for r in rows] == [("dear", 3), ("middle", 2)]
    assert rows[0]["cost_usd"] == pytest.approx(3 * CALL)
    assert cli_main(["report", "--store", store_url, "--limit", "0"]) == 2
    assert "--limit 0 must be at least 1" in capsys.readouterr().err


def _at(store_url: str, starts: list[int]) -> None:
    store = open_store(store_url)
    try:
        assert store.write([
            a_call(trace_id=f"{i:032x}", span_id=f"{i:016x}", run_id=f"r{i}", start_ns=start, end_ns=start + 10,
                   tokens={"input": 1000, "output": 100}, cost_usd=mini_cost(1000, 100))
            for i, start in enumerate(starts)
        ]) == []  # fmt: skip
    finally:
        store.close()


def _periods(capsys: pytest.CaptureFixture[str], store_url: str, *args: str) -> dict[str, tuple[int, float]]:
    capsys.readouterr()
    assert cli_main(["report", "--store", store_url, "--format", "json", *args]) == 0
    return {r["period"]: (r["calls"], r["cost_usd"]) for r in json.loads(capsys.readouterr().out)}


def test_report_by_day_follows_the_time_zone_also_off_the_whole_hour(
    sqlite_or_postgres: str, capsys: pytest.CaptureFixture[str]
) -> None:
    one = mini_cost(1000, 100)
    # 2026-03-09 23:30 UTC, 2026-03-10 00:30 UTC, and 18:15 and 18:45 UTC on the 10th: the last two
    # fall on either side of midnight in Asia/Kolkata (UTC+05:30), inside one UTC hour.
    _at(sqlite_or_postgres, [DAY_2026_03_10 - HOUR // 2, DAY_2026_03_10 + HOUR // 2,
                             DAY_2026_03_10 + 18 * HOUR + HOUR // 4, DAY_2026_03_10 + 18 * HOUR + 3 * HOUR // 4])  # fmt: skip
    utc = _periods(capsys, sqlite_or_postgres, "--by", "day")
    assert utc == {"2026-03-09": (1, pytest.approx(one)), "2026-03-10": (3, pytest.approx(3 * one))}
    kolkata = _periods(capsys, sqlite_or_postgres, "--by", "day", "--tz", "Asia/Kolkata")
    assert kolkata == {"2026-03-10": (3, pytest.approx(3 * one)), "2026-03-11": (1, pytest.approx(one))}
    new_york = _periods(capsys, sqlite_or_postgres, "--by", "day", "--tz", "America/New_York")  # UTC-4 (DST)
    assert new_york == {"2026-03-09": (2, pytest.approx(2 * one)), "2026-03-10": (2, pytest.approx(2 * one))}
    assert _periods(capsys, sqlite_or_postgres, "--by", "week") == {"2026-W11": (4, pytest.approx(4 * one))}
    assert _periods(capsys, sqlite_or_postgres, "--by", "month") == {"2026-03": (4, pytest.approx(4 * one))}
    assert cli_main(["report", "--store", sqlite_or_postgres, "--by", "day", "--tz", "Mars/Olympus"]) == 2
    assert "--tz 'Mars/Olympus' is not a time zone" in capsys.readouterr().err
