"""Faults injected for real: locked store, kill -9 of the receiver, concurrency, retries, exit, bad ids."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_usecase import current_scope, track, track_context
from otel_usecase.report.queries import build_report, format_report, format_run, run_calls
from otel_usecase.store import open_store
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost, report_json
from .rigs import CostRig
from .servers import ServeProcess

MSG = [{"role": "user", "content": "hi"}]


# --- store unavailable -------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def lock_sqlite(store_url: str) -> sqlite3.Connection:
    """Another process's writer holding the database lock."""
    conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_locked_sqlite_keeps_calls_in_memory_and_writes_them_later(
    rig: CostRig,
    store_url: str,
    fake_openai: FakeOpenAI,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    with track_context("warmup"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    rig.provider.force_flush()  # the store exists now
    blocker = lock_sqlite(store_url)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_usecase"):
            started = time.monotonic()
            with track_context("during_outage", use_case_id="outage-run"):
                for _ in range(3):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            app_time = time.monotonic() - started
            flush_started = time.monotonic()
            rig.provider.force_flush()
            flush_time = time.monotonic() - flush_started
            assert rig.exporter.buffered_calls == 3
            assert flush_time < 1.9  # the export did not wait out SQLite's 2 s busy timeout
            wait_for(lambda: "keeping 3 calls in memory" in caplog.text)  # once the writer's attempt fails
        assert app_time < 1.5  # the app never waited for the store
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with track_context("during_outage", use_case_id="outage-run"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    rig.provider.force_flush()
    assert rig.exporter.buffered_calls == 0
    runs = {r["run_id"]: r for r in report_json(store_url, "run")}
    assert runs["outage-run"]["calls"] == 4
    assert runs["outage-run"]["cost_usd"] == pytest.approx(4 * mini_cost(1_000, 100))


def test_full_buffer_drops_are_counted_and_logged(
    store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    rig = CostRig(store_url, max_buffered_calls=2)
    try:
        with track_context("warmup"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        rig.provider.force_flush()
        blocker = lock_sqlite(store_url)
        try:
            with caplog.at_level(logging.WARNING, logger="otel_usecase"):
                with track_context("overflow"):
                    for _ in range(3):
                        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
                rig.provider.force_flush()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert rig.exporter.dropped_calls == 1 and rig.exporter.buffered_calls == 2
        assert "dropped 1 calls" in caplog.text
        rig.provider.force_flush()
    finally:
        rig.close()
    by_case = {r["use_case"]: r for r in report_json(store_url)}
    assert by_case["overflow"]["calls"] == 2


# --- crash of the receiver while a sender streams and retries ----------------------------


def prebuilt_llm_spans(n: int, run_prefix: str) -> list[ReadableSpan]:
    provider = TracerProvider()
    captured = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    for i in range(n):
        span = tracer.start_span("openai.chat", attributes={"gen_ai.operation.name": "chat"})
        span.set_attributes(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.response.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 1_000,
                "gen_ai.usage.output_tokens": 100,
                "usecase.name": "streamed",
                "usecase.id": f"{run_prefix}-{i % 10}",
            }
        )
        span.end()
    return list(captured.get_finished_spans())


def test_kill_9_of_serve_while_a_sender_retries_loses_and_duplicates_nothing(store_url: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans = prebuilt_llm_spans(2_000, "crash")
    batches = [spans[i : i + 100] for i in range(0, len(spans), 100)]
    server = ServeProcess(store_url).start()
    exporter = OTLPSpanExporter(endpoint=server.http_url, timeout=5)
    killed_at: list[float] = []

    def killer() -> None:
        time.sleep(0.3)
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: no graceful anything
        server.proc.wait()
        killed_at.append(time.monotonic())
        time.sleep(0.5)
        server.start()  # same ports, same store

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        for batch in batches:
            deadline = time.monotonic() + 60
            while exporter.export(batch) is not SpanExportResult.SUCCESS:  # a sender retries until accepted
                assert time.monotonic() < deadline, "the restarted server never accepted the batch"
                time.sleep(0.1)
            time.sleep(0.02)
        thread.join(30)
        assert killed_at, "the server was not killed during the test"
    finally:
        exporter.shutdown()
        server.kill()
    rows = report_json(store_url, "run")
    assert sum(r["calls"] for r in rows) == 2_000
    assert all(r["calls"] == 200 for r in rows) and len(rows) == 10
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(2_000 * mini_cost(1_000, 100))


# --- concurrency -------------------------------------------------------------------------


def test_50_threads_and_200_tasks_each_in_its_own_scope(
    rig: CostRig, store_url: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=500, completion_tokens=50))
    sync_client = openai.OpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with track_context("threaded", use_case_id=f"thread-{i}", user_id=f"user-t{i}"):
                for _ in range(2):
                    sync_client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
                    assert current_scope().use_case_id == f"thread-{i}"  # type: ignore[union-attr]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()

    async def tasks() -> None:
        async_client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0)

        @track(use_case_name="async_task")
        async def one(i: int) -> str:
            with track_context(user_id=f"user-a{i}"):
                await async_client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
                await asyncio.sleep(0)
                await async_client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
                return current_scope().use_case_id  # type: ignore[union-attr,return-value]

        ids = await asyncio.gather(*(one(i) for i in range(200)))
        assert len(set(ids)) == 200
        await async_client.close()

    asyncio.run(tasks())
    for t in threads:
        t.join(60)
    assert not errors
    rig.provider.force_flush()

    # every LLM span carries exactly its own scope: the user of each run is the one it set
    runs = report_json(store_url, "run")
    assert len(runs) == 250
    assert all(r["calls"] == 2 for r in runs)
    users = report_json(store_url, "user")
    assert len(users) == 250 and all(u["calls"] == 2 and u["runs"] == 1 for u in users)
    spans = [s for s in rig.captured.get_finished_spans() if s.attributes and "usecase.id" in s.attributes]
    for span in spans:
        run_id = str(span.attributes["usecase.id"])  # type: ignore[index]
        user = str(span.attributes["user.id"])  # type: ignore[index]
        if run_id.startswith("thread-"):
            assert user == "user-t" + run_id.removeprefix("thread-")
    by_case = {r["use_case"]: r for r in report_json(store_url)}
    assert by_case["threaded"]["calls"] == 100 and by_case["async_task"]["calls"] == 400
    assert sum(r["cost_usd"] for r in by_case.values()) == pytest.approx(500 * mini_cost(500, 50))


# --- retries of the LLM call itself ------------------------------------------------------


def test_failed_attempt_is_a_failed_call_and_the_retry_is_priced(
    rig: CostRig, store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=2_000, completion_tokens=200))
    with track_context("app_retries", use_case_id="retry-run"):
        fake_openai.fail_next(status=500)
        for _attempt in range(2):  # the app's own retry loop
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
                break
            except openai.InternalServerError:
                continue
    rig.provider.force_flush()
    (row,) = report_json(store_url, "run")
    assert (row["calls"], row["no_usage_calls"]) == (2, 1)
    assert row["cost_usd"] == pytest.approx(mini_cost(2_000, 200))
    store = open_store(store_url)
    try:
        calls = run_calls(store, "retry-run")
        failed = store.query("SELECT status, error FROM usecase_calls WHERE status = 'no_usage'")
    finally:
        store.close()
    assert len(calls) == 2 and failed == [("no_usage", 1)]


def test_client_side_retries_bill_only_the_attempt_that_answered(
    rig: CostRig, store_url: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=2_000, completion_tokens=200))
    retrying = openai.OpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=2)
    fake_openai.fail_next(status=503, times=1)
    with track_context("client_retries"):
        retrying.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    rig.provider.force_flush()
    (row,) = report_json(store_url)
    assert row["calls"] == 1 and row["cost_usd"] == pytest.approx(mini_cost(2_000, 200))
    assert len(fake_openai.requests) == 2  # the failed attempt really happened


# --- process exit ------------------------------------------------------------------------

EXITING_APP = """
import sys, openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
provider = TracerProvider()
provider.add_span_processor(UseCaseSpanProcessor())
provider.add_span_processor(BatchSpanProcessor(UseCaseCostExporter(store=sys.argv[1]), schedule_delay_millis=60_000))
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()
client = openai.OpenAI(base_url=sys.argv[2], api_key="k", max_retries=0)
with track_context("exiting", use_case_id="exit-run"):
    for _ in range(5):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
# no shutdown(), no flush(): the interpreter exits normally
"""


def test_normal_interpreter_exit_flushes_everything(
    store_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=100, completion_tokens=10))
    script = tmp_path / "app.py"
    script.write_text(EXITING_APP)
    subprocess.run([sys.executable, str(script), store_url, fake_openai.base_url], check=True, timeout=120)
    (row,) = report_json(store_url, "run")
    assert (row["run_id"], row["calls"]) == ("exit-run", 5)


# --- hostile ids -------------------------------------------------------------------------

HOSTILE = [
    "quote'\"; DROP TABLE usecase_calls; --",
    "line\nbreak\r\n",
    "\x1b[31mred\x1b[0m\x07",
    '=HYPERLINK("http://example.invalid")',
    "+1+2",
    "-2-3",
    "@SUM(A1)",
]


def test_hostile_ids_are_stored_verbatim_and_rendered_safely(rig: CostRig, store_url: str) -> None:
    # LLM spans with the ids set as another SDK sends them: a local scope would normalise the
    # control characters (tests/test_ids.py), but the store and the report must cope with them raw.
    tracer = rig.provider.get_tracer("another.sdk")
    for value in HOSTILE:
        tracer.start_span(
            "chat",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.response.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 1,
                "usecase.name": "hostile",
                "usecase.id": value,
                "user.id": value,
            },
        ).end()
    rig.provider.force_flush()
    store = open_store(store_url)
    try:
        stored = {r[0] for r in store.query("SELECT run_id FROM usecase_calls")}
        assert stored == set(HOSTILE)  # verbatim, and the table is still there
        rows = build_report(store, "run")
        table = format_report(rows, "run", "table")
        run_table = format_run(HOSTILE[2], run_calls(store, HOSTILE[2]))
        csv_text = format_report(build_report(store, "user"), "user", "csv")
    finally:
        store.close()
    for text in (table, run_table):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
        assert "\\x1b[31mred\\x1b[0m\\x07" in text  # shown, escaped
    for record in csv.DictReader(io.StringIO(csv_text)):
        assert record["user_id"][:1] not in ("=", "+", "-", "@")
    assert "'=HYPERLINK" in csv_text and "'+1+2" in csv_text and "'@SUM(A1)" in csv_text


# --- full and read-only disks (a real tmpfs mount; needs root, as CI has) ----------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_and_read_only_disk_buffer_then_recover(
    small_disk: Path, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    store_url = "sqlite:///" + str(small_disk / "costs.db")
    rig = CostRig(store_url)
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))

    def calls(n: int) -> None:
        with track_context("disk_faults", use_case_id="disk-run", user_id="u" * 200):
            for _ in range(n):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        rig.provider.force_flush()

    try:
        calls(2)
        filler = small_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last byte
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
        finally:
            os.close(fd)
        calls(40)
        assert rig.exporter.buffered_calls > 0  # the disk was really full for some writes
        filler.unlink()
        calls(1)
        assert rig.exporter.buffered_calls == 0
    finally:
        rig.close()

    # A read-only view of the same disk: a process that starts while its store cannot be written
    read_only = small_disk.parent / "read_only"
    read_only.mkdir()
    subprocess.run(["mount", "--bind", str(small_disk), str(read_only)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], check=True)
        rig = CostRig("sqlite:///" + str(read_only / "costs.db"))
        try:
            calls(3)
            assert rig.exporter.buffered_calls == 3
            subprocess.run(["mount", "-o", "remount,bind,rw", str(read_only)], check=True)
            calls(1)
            assert rig.exporter.buffered_calls == 0 and rig.exporter.dropped_calls == 0
        finally:
            rig.close()
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
    (row,) = report_json(store_url, "run")
    assert row["calls"] == 47
    assert row["cost_usd"] == pytest.approx(47 * mini_cost(1_000, 100))
