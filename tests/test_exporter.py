"""The exporter against real stores that are locked, hang or are healthy.

What a user checks: every LLM call the app made is in the store or counted in
``dropped_calls`` (never lost silently, e.g. in the SDK's own queue), the app's
requests never wait for the store, and ``provider.force_flush()`` leaves every
call in a healthy store.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
from otel_usecase.store import open_store
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost
from .pg import PostgresServer
from .rigs import CostRig
from .test_reliability import lock_sqlite

MSG = [{"role": "user", "content": "hi"}]
USAGE = FakeUsage(prompt_tokens=1_000, completion_tokens=100)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


class LoadedApp:
    """An app making LLM calls at a steady rate, its spans made by the SDK as the OpenAI instrumentation makes them.

    The SDK's ``BatchSpanProcessor`` has its default queue (2048 spans): an exporter
    that held the SDK's thread for a store's 2 s busy timeout would overflow it at
    this rate, and the SDK would drop spans that no counter of ours ever sees.
    """

    def __init__(self, exporter: UseCaseCostExporter) -> None:
        self.exporter = exporter
        self.provider = TracerProvider()
        self.provider.add_span_processor(UseCaseSpanProcessor())
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("opentelemetry.instrumentation.openai.v1")
        self.made = 0
        self.slowest_end_s = 0.0

    def call(self) -> None:
        span = self.tracer.start_span("openai.chat", attributes={"gen_ai.operation.name": "chat"})
        span.set_attributes(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.response.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 1_000,
                "gen_ai.usage.output_tokens": 100,
            }
        )
        started = time.monotonic()
        span.end()  # the request path: the span's end is all the app ever waits for
        self.slowest_end_s = max(self.slowest_end_s, time.monotonic() - started)
        self.made += 1

    def run(self, use_case: str, seconds: float, per_second: int = 1_500) -> None:
        """Calls at ``per_second`` (in bursts every 10 ms) for ``seconds``."""
        started = time.monotonic()
        made_here = 0
        with track_context(use_case):
            while (elapsed := time.monotonic() - started) < seconds:
                while made_here < elapsed * per_second:
                    self.call()
                    made_here += 1
                time.sleep(0.01)

    def close(self) -> None:
        self.provider.shutdown()


def stored_calls(store_url: str, use_case: str) -> tuple[int, float]:
    store = open_store(store_url)
    try:
        ((count, cost),) = store.query(
            "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM usecase_calls WHERE use_case = ?", (use_case,)
        )
    finally:
        store.close()
    return int(count), float(cost)


def test_sqlite_locked_for_6_s_every_call_is_stored_or_counted_and_the_app_never_waits(
    store_url: str,
) -> None:
    app = LoadedApp(UseCaseCostExporter(store=store_url, max_buffered_calls=3_000))
    try:
        app.run("warmup", 0.1)
        app.provider.force_flush()  # the store exists now
        blocker = lock_sqlite(store_url)  # another process's writer, as `BEGIN EXCLUSIVE`
        try:
            app.run("outage", 6.0)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        app.run("outage", 1.0)
        made = app.made - stored_calls(store_url, "warmup")[0]
        app.provider.force_flush()
        assert app.exporter.force_flush(timeout_millis=30_000)
        dropped = app.exporter.dropped_calls
    finally:
        app.close()
    stored, cost = stored_calls(store_url, "outage")
    assert stored + dropped == made  # none lost in the SDK's queue, none lost uncounted
    assert (
        dropped > 0 and stored > 3_000
    )  # the buffer did overflow, and the calls after the outage were stored
    assert cost == pytest.approx(stored * mini_cost(1_000, 100))
    assert app.slowest_end_s < 1.0  # SQLite's 2 s busy timeout never reached the app


class SilentServer:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word (a hung PostgreSQL)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(5)


def test_postgres_that_accepts_and_never_answers_holds_nothing_and_every_call_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = SilentServer()
    url = f"postgresql://otel@127.0.0.1:{server.port}/otel_usecase"
    app = LoadedApp(UseCaseCostExporter(store=url, max_buffered_calls=1_000))
    try:
        with caplog.at_level(logging.WARNING, logger="otel_usecase"):
            app.run("hung_store", 4.0)
            flush_started = time.monotonic()
            app.provider.force_flush()
            assert not app.exporter.force_flush(timeout_millis=500)
            assert time.monotonic() - flush_started < 3.0  # each bounded by its own short wait
            assert app.exporter.buffered_calls == 1_000
            shutdown_started = time.monotonic()
            app.exporter.shutdown(timeout_millis=1_000)
            assert time.monotonic() - shutdown_started < 4.0
        assert server.accepted  # the exporter really reached the server
        assert app.exporter.dropped_calls == app.made  # nothing was stored, and every call is counted
        assert app.exporter.buffered_calls == 0
        assert "buffer full (1000 calls)" in caplog.text
        assert f"shutting down with 1000 calls the store {url} did not take" in caplog.text
        assert app.slowest_end_s < 1.0
    finally:
        app.close()
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def healthy_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        return server.create_database(f"healthy_{int(time.monotonic_ns())}")
    return "sqlite:///" + str(tmp_path / "costs.db")


def test_provider_force_flush_leaves_every_call_in_a_healthy_store(
    healthy_store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=USAGE)
    rig = CostRig(healthy_store_url)
    try:
        for round_ in range(3):  # the first round opens (and creates) the store
            with track_context("flushed"):
                for _ in range(20):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            rig.provider.force_flush()  # the SDK's own flush: it never calls the exporter's force_flush
            assert stored_calls(healthy_store_url, "flushed") == (
                20 * (round_ + 1),
                pytest.approx(20 * (round_ + 1) * mini_cost(1_000, 100)),
            )
        assert rig.exporter.buffered_calls == 0 and rig.exporter.dropped_calls == 0
    finally:
        rig.close()


def test_force_flush_honours_its_timeout_while_sqlite_is_locked(
    rig: CostRig, store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=USAGE)
    with track_context("warmup"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    rig.flush()
    blocker = lock_sqlite(store_url)
    try:
        with track_context("locked"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        rig.provider.force_flush()
        started = time.monotonic()
        assert not rig.exporter.force_flush(timeout_millis=300)
        assert time.monotonic() - started < 1.5  # not SQLite's 2 s busy timeout
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rig.exporter.force_flush(timeout_millis=30_000)
    assert stored_calls(store_url, "locked")[0] == 1


def test_a_call_the_store_cannot_take_is_dropped_alone(
    rig: CostRig,
    store_url: str,
    fake_openai: FakeOpenAI,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lone surrogate in the model name (the request fails to encode; its span ends carrying it) blocks nothing."""
    fake_openai.respond(usage=USAGE)
    with caplog.at_level(logging.WARNING, logger="otel_usecase"), track_context("poisoned"):
        for model in ["gpt-4o-mini", "gpt-4o-mini\udcff", "gpt-4o-mini", "gpt-4o-mini\udcff", "gpt-4o-mini"]:
            if model.isascii():
                client.chat.completions.create(model=model, messages=MSG)
                continue
            try:
                client.chat.completions.create(model=model, messages=MSG)
            except (openai.APIError, UnicodeError):
                pass  # the request itself fails to encode; its span still ends, with the model asked for
        rig.provider.force_flush()
    stored = stored_calls(store_url, "poisoned")[0]
    rejected = rig.exporter.rejected_calls
    # every good call stored; a bad one stored (if sanitised on the way) or rejected, never lost uncounted
    assert stored + rejected == 5
    assert stored >= 3 and rig.exporter.dropped_calls == 0 and rig.exporter.buffered_calls == 0
    if rejected:  # the store refused them: counted, and said once per reason with the value's repr
        assert caplog.text.count("rejected the call") == 1
        assert "\\udcff" in caplog.text
    # later calls are still recorded
    with track_context("poisoned"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    rig.flush()
    assert stored_calls(store_url, "poisoned")[0] == stored + 1
