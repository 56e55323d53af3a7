"""Retention: ``otel-usecase prune --older-than`` and ``OTEL_USECASE_RETENTION_DAYS`` delete per-call rows
past the window while the dashboard's totals stay, on SQLite and real PostgreSQL.

Costs are checked against published prices (gpt-4o-mini: $0.15/M input, $0.60/M output).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_usecase import track_context
from otel_usecase.cli import main
from otel_usecase.outcomes import Outcome
from otel_usecase.report import views
from otel_usecase.report.queries import render_report
from otel_usecase.retention import DAY_NS, RetentionKeeper
from otel_usecase.store import ReportFilter, Store, open_store
from otel_usecase.store.base import TABLE
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost
from .rigs import CostRig
from .test_erasure import rounded
from .test_rollups import HOUR, T0, call


def hourly_calls(first: int, hours: int, per_hour: int, **fields: Any) -> list[Any]:
    """``per_hour`` calls in each of ``hours`` hours from ``T0`` (1,000 prompt and 100 completion tokens),
    in three runs of users u0, u1, u2."""
    return [
        call(first + h * per_hour + i, usage=(1_000, 100), run_id=f"run-{i % 3}", user_id=f"u{i % 3}",
             start_ns=T0 + h * HOUR + i * 1_000, end_ns=T0 + h * HOUR + i * 1_000 + 10, **fields)
        for h in range(hours)
        for i in range(per_hour)
    ]  # fmt: skip


def dashboard(store: Store) -> Any:
    """What the dashboard shows and ``report`` prints from the rollups (floats to 12 digits)."""
    f = ReportFilter()
    return rounded(
        (
            views.summary(store, f),
            views.cost_series(store, f, "hour", "use-case"),
            views.cost_series(store, f, "hour", "model"),
            views.list_runs(store, f, "cost", 50, 0),
            views.run_histogram(store, f),
            json.loads(render_report(store, "use-case", "json")),
            json.loads(render_report(store, "user", "json")),
        )
    )


def test_prune_keeps_what_the_dashboard_shows_and_deletes_the_calls(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.write(hourly_calls(0, 10, 6))
    store.write_outcomes(
        [
            Outcome(f"{h:032x}", f"{h:016x}", T0 + h * HOUR, None, "u", "run-0", "resolved", 1.0)
            for h in range(10)
        ]
    )
    before = dashboard(store)
    assert before[0][2] == 60 and before[0][0] == pytest.approx(60 * mini_cost(1_000, 100))

    # Older than 04:30: the cutoff is rounded down to 04:00, so hours 0-3 go (24 calls, 4 outcomes).
    assert main(["prune", "--older-than", "2026-01-01T04:30:00+00:00", "--store", store.url]) == 0
    out = capsys.readouterr().out
    assert "deleted 24 calls and 4 outcomes that started before 2026-01-01T04:00:00Z" in out
    assert "are unchanged" in out and "runs show" in out

    assert store.query(f"SELECT COUNT(*) FROM {TABLE}") == [(36,)]
    assert dashboard(store) == before
    assert len(store.run_outcomes("run-0")) == 6
    # The report by model reads the totals the dashboard shows (kept); what sums the calls themselves now
    # covers the kept ones only (as the output and the README say).
    (by_model,) = json.loads(render_report(store, "model", "json"))
    assert by_model["calls"] == 60 and by_model["cost_usd"] == pytest.approx(60 * mini_cost(1_000, 100))
    (by_source,) = json.loads(render_report(store, "cost-source", "json"))
    assert by_source["calls"] == 36 and by_source["cost_usd"] == pytest.approx(36 * mini_cost(1_000, 100))
    assert sum(r["calls"] for r in json.loads(render_report(store, "run", "json"))) == 36

    # Pruning again deletes nothing more.
    assert (
        main(["prune", "--older-than", "2026-01-01T04:30:00+00:00", "--store", store.url, "--format", "json"])
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert (again["calls_deleted"], again["outcomes_deleted"], again["totals_unchanged"]) == (0, 0, True)


def test_prune_in_batches_while_a_writer_writes(sqlite_or_postgres: str) -> None:
    """More rows than one batch deletes (SQLite 5,000 rows, PostgreSQL 128 blocks), with a writer on another
    connection writing new calls in between: the old calls go, every new one stays, the totals hold."""
    import threading

    admin, writer = open_store(sqlite_or_postgres), open_store(sqlite_or_postgres)
    old = hourly_calls(0, 4, 3_000)  # 12,000 calls, hours 0-3
    for start in range(0, len(old), 4_000):
        admin.write(old[start : start + 4_000])
    before = views.summary(admin, ReportFilter())
    new: list[Any] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set() or n < 20:
            batch = hourly_calls(100_000 + n * 50, 1, 50, use_case="later")
            batch = [c._replace(start_ns=c.start_ns + 48 * HOUR, end_ns=c.end_ns + 48 * HOUR) for c in batch]
            while True:
                try:
                    writer.write(batch)
                    break
                except (
                    Exception
                ):  # held up longer than its busy or lock timeout: retried, as the exporter does
                    time.sleep(0.05)
            new.extend(batch)
            n += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert main(["prune", "--older-than", "2026-01-02", "--store", sqlite_or_postgres]) == 0
    finally:
        stop.set()
        thread.join(120)
    writer.close()
    assert not thread.is_alive()
    assert admin.query(f"SELECT COUNT(*) FROM {TABLE}") == [(len(new),)]
    after = views.summary(admin, ReportFilter(use_case="u"))
    assert (after.calls, after.runs) == (before.calls, before.runs) == (12_000, 3)
    assert after.cost_usd == pytest.approx(12_000 * mini_cost(1_000, 100))
    later = views.summary(admin, ReportFilter(use_case="later"))
    assert later.calls == len(new) and later.cost_usd == pytest.approx(len(new) * mini_cost(1_000, 100))
    admin.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
        yield server


def test_retention_days_make_the_exporter_prune_once_a_day(
    sqlite_or_postgres: str, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``OTEL_USECASE_RETENTION_DAYS=30`` an app's exporter deletes the calls older than 30 days after
    its first write (off the write path); another process in the same day finds the day's prune taken."""
    now = time.time_ns()
    store = open_store(sqlite_or_postgres)
    old = [
        c._replace(start_ns=now - 40 * DAY_NS + i, end_ns=now - 40 * DAY_NS + i + 5)
        for i, c in enumerate(hourly_calls(0, 1, 5))
    ]
    store.write(old)
    monkeypatch.setenv("OTEL_USECASE_RETENTION_DAYS", "30")
    rig = CostRig(sqlite_or_postgres)
    try:
        client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        with track_context("support"):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        rig.flush()
        deadline = time.monotonic() + 60
        while store.query(f"SELECT COUNT(*) FROM {TABLE}") != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.query(f"SELECT use_case, cost_usd FROM {TABLE}") == [
            ("support", pytest.approx(mini_cost(1_000, 100)))
        ]
    finally:
        rig.close()
    # The rollups kept the pruned calls: the total of use case "u" is still there.
    assert views.summary(store, ReportFilter(use_case="u")).calls == 5

    # Another process the same day: its check finds the prune taken and leaves a new old call alone.
    store.write([old[0]._replace(span_id="f" * 16)])
    keeper = RetentionKeeper()
    assert keeper.days == 30
    keeper.poke(store)
    assert keeper.thread is not None
    keeper.thread.join(60)
    assert store.query(f"SELECT COUNT(*) FROM {TABLE}") == [(2,)]
    store.close()


def test_retention_setting_off_by_default_and_a_bad_value_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.delenv("OTEL_USECASE_RETENTION_DAYS", raising=False)
    assert RetentionKeeper().days is None
    monkeypatch.setenv("OTEL_USECASE_RETENTION_DAYS", "0")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert RetentionKeeper().days is None
    assert "OTEL_USECASE_RETENTION_DAYS='0' is not accepted (less than 1)" in caplog.text
    with pytest.raises(ValueError, match="days=0 is not a whole number of days >= 1"):
        RetentionKeeper(days=0)


def test_prune_usage_errors_name_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///" + str(tmp_path / "costs.db")
    assert main(["prune", "--older-than", "forever", "--store", url]) == 2
    assert "--older-than 'forever' is neither an age (400d, 52w, 12h) nor a date" in capsys.readouterr().err
    assert main(["prune", "--older-than", "400d", "--store", url]) == 1  # no store there: never created
    assert not (tmp_path / "costs.db").exists()


def test_retention_days_make_serve_prune(sqlite_or_postgres: str) -> None:
    """``otel-usecase serve`` with ``OTEL_USECASE_RETENTION_DAYS``: an OTLP request's write starts the day's
    prune (a real subprocess, real OTLP/HTTP); the request itself is answered as usual."""
    import httpx

    from .servers import ServeProcess
    from .test_serve import llm_span_json, otlp_json

    now = time.time_ns()
    store = open_store(sqlite_or_postgres)
    store.write(
        [c._replace(start_ns=now - 9 * DAY_NS, end_ns=now - 9 * DAY_NS + 5) for c in hourly_calls(0, 1, 1)]
    )
    with ServeProcess(sqlite_or_postgres, env={"OTEL_USECASE_RETENTION_DAYS": "7"}) as server:
        body = otlp_json([llm_span_json("ab" * 16, "cd" * 8, "run-s", 1_000, 100)])
        assert httpx.post(server.http_url, json=body, timeout=30).status_code == 200
        deadline = time.monotonic() + 60
        while store.query(f"SELECT COUNT(*) FROM {TABLE}") != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.query(f"SELECT run_id, cost_usd FROM {TABLE}") == [
        ("run-s", pytest.approx(mini_cost(1_000, 100)))
    ]
    store.close()
