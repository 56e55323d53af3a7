"""``report --user/--experience/--version``: drill-down filters, on SQLite and real PostgreSQL.

Real openai calls through the real instrumentation against FakeOpenAI; each gpt-4o-mini call uses
FakeOpenAI's default 10 prompt and 5 completion tokens, so it costs 10 * $0.15/M + 5 * $0.60/M.
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
from otel_usecase.scope import privacy

from .expect import mini_cost, report_json
from .rigs import CostRig

COST = mini_cost(10, 5)
MSG = [{"role": "user", "content": "hello"}]
BIN = Path(sys.executable).parent

# (user, experience, version, calls)
WORK = [("alice", "chat", "v1", 2), ("bob", "chat", "v2", 1), ("alice", "search", "v2", 1)]


def spend(rig: CostRig, client: openai.OpenAI) -> None:
    for user, experience, version, calls in WORK:
        with track_context("summarize", user_id=user, experience_name=experience, use_case_version=version):
            for _ in range(calls):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    rig.flush()


def totals(store_url: str, by: str = "use-case", **filters: Any) -> tuple[int, float]:
    rows = report_json(store_url, by, **filters)
    return sum(r["calls"] for r in rows), sum(r["cost_usd"] for r in rows)


def test_each_filter_and_their_combination_select_the_calls_a_user_expects(
    sqlite_or_postgres: str, client: openai.OpenAI
) -> None:
    rig = CostRig(sqlite_or_postgres)
    try:
        spend(rig, client)
    finally:
        rig.close()
    assert totals(sqlite_or_postgres) == (4, pytest.approx(4 * COST))
    assert totals(sqlite_or_postgres, user="alice") == (3, pytest.approx(3 * COST))
    assert totals(sqlite_or_postgres, experience="chat") == (3, pytest.approx(3 * COST))
    assert totals(sqlite_or_postgres, version="v2") == (2, pytest.approx(2 * COST))
    assert totals(sqlite_or_postgres, user="alice", version="v2") == (1, pytest.approx(COST))
    assert totals(sqlite_or_postgres, user="carol") == (0, 0)
    # --by run --format json is written by the store's own SQL: the same filters apply there
    runs = report_json(sqlite_or_postgres, "run", user="alice", experience="chat")
    assert [(r["calls"], r["cost_usd"]) for r in runs] == [(2, pytest.approx(2 * COST))]

    out = subprocess.run(
        [str(BIN / "otel-usecase"), "report", "--store", sqlite_or_postgres, "--format", "json",
         "--user", "alice", "--experience", "search", "--version", "v2"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    rows = json.loads(out)
    assert [(r["calls"], r["cost_usd"]) for r in rows] == [(1, pytest.approx(COST))]


def test_user_filter_takes_the_raw_id_when_user_ids_are_hashed(store_url: str, client: openai.OpenAI) -> None:
    privacy.set_user_id_hmac_key("report-filter-hmac-key-0123456789")
    try:
        rig = CostRig(store_url)
        try:
            spend(rig, client)
        finally:
            rig.close()
        assert {r["user_id"] for r in report_json(store_url, "user")} == {
            privacy.hash_user_id("alice", "report-filter-hmac-key-0123456789"),
            privacy.hash_user_id("bob", "report-filter-hmac-key-0123456789"),
        }  # only hashes stored
        assert totals(store_url, user="alice") == (3, pytest.approx(3 * COST))
        assert totals(store_url, user="bob") == (1, pytest.approx(COST))
    finally:
        privacy.reset_user_id_hmac_key()
