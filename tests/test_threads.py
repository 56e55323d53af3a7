"""Scopes under real concurrency: one scope object shared by threads and tasks, and calls from thread pools.

Real threads, real ``ThreadPoolExecutor``s and event loops, the real openai
client through the real instrumentation against FakeOpenAI, costs read back
from the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from opentelemetry import context

import otel_usecase
from otel_usecase import Scope, current_scope, track, track_context
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost, report_json
from .rigs import CostRig

MSG = [{"role": "user", "content": "hello"}]
UNTRACKED = "(untracked)"
ORIGINAL_START = threading.Thread.start
ORIGINAL_SUBMIT = ThreadPoolExecutor.submit


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]


@pytest.fixture
def context_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything ``opentelemetry.context`` logs (its "Failed to detach context" tracebacks)."""
    with caplog.at_level(logging.DEBUG, logger="opentelemetry.context"):
        yield caplog


def detach_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.context")]


@pytest.fixture
def propagating() -> Iterator[None]:
    """The one documented call, undone afterwards so other tests see Python's own thread semantics."""
    otel_usecase.propagate_context_to_threads()
    try:
        yield
    finally:
        otel_usecase.stop_propagating_context_to_threads()


@pytest.fixture
def priced(fake_openai: FakeOpenAI) -> float:
    """Every call costs this much (gpt-4o-mini, 500 input and 50 output tokens)."""
    fake_openai.respond(usage=FakeUsage(prompt_tokens=500, completion_tokens=50))
    return mini_cost(500, 50)


# --- one scope object, many threads and tasks -------------------------------------------------


def test_one_scope_object_entered_by_five_threads_at_once(
    rig: CostRig, client: openai.OpenAI, priced: float, context_log: pytest.LogCaptureFixture
) -> None:
    shared = track_context("shared_case")
    entries_per_thread = 4
    barrier = threading.Barrier(5, timeout=60)
    seen: dict[int, list[str]] = {}
    after: dict[int, tuple[Scope | None, bool]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            runs = seen.setdefault(i, [])
            for _ in range(entries_per_thread):
                barrier.wait()  # all five threads inside the same object at the same time
                with shared as scope:
                    ask(client)
                    with shared as again:  # re-entered in the same thread: joins the run
                        assert again.use_case_id == scope.use_case_id
                        ask(client)
                    assert current_scope() == scope  # the inner exit restored the outer entry
                    runs.append(scope.use_case_id or "")
            after[i] = (current_scope(), context.get_current() == {})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert detach_errors(context_log) == []
    assert after == {i: (None, True) for i in range(5)}  # nothing left attached in any thread
    run_ids = [run for runs in seen.values() for run in runs]
    assert len(set(run_ids)) == 5 * entries_per_thread  # each entry a new run, like @track
    rows = {row["run_id"]: row for row in rig.report("run")}
    assert set(rows) == set(run_ids)  # no call billed to another thread's run or untracked
    for row in rows.values():
        assert row["calls"] == 2 and row["cost_usd"] == pytest.approx(2 * priced)


async def test_one_scope_object_entered_by_concurrent_tasks(
    rig: CostRig, fake_openai: FakeOpenAI, priced: float, context_log: pytest.LogCaptureFixture
) -> None:
    shared = track_context("task_case", user_id="u-tasks")
    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0)
    before = context.get_current()

    async def task() -> str:
        async with shared as scope:
            await asyncio.sleep(0)  # let the other tasks enter in between
            await client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
            async with shared as again:
                await asyncio.sleep(0)
                assert again.use_case_id == scope.use_case_id
            assert current_scope() == scope
            return scope.use_case_id or ""

    run_ids = await asyncio.gather(*(task() for _ in range(20)))
    await client.close()
    assert context.get_current() is before
    assert detach_errors(context_log) == []
    assert len(set(run_ids)) == 20
    rows = rig.report("run")
    assert {row["run_id"] for row in rows} == set(run_ids)
    assert all(row["calls"] == 1 and row["cost_usd"] == pytest.approx(priced) for row in rows)


def test_a_scope_exited_where_it_was_not_entered_changes_nothing(
    context_log: pytest.LogCaptureFixture,
) -> None:
    shared = track_context("elsewhere")
    shared.__enter__()
    done: list[Scope | None] = []

    def other_thread() -> None:
        shared.__exit__(None, None, None)  # a bug in the app: logged, nothing detached
        done.append(current_scope())

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(30)
    assert done == [None]
    scope = current_scope()
    assert scope is not None and scope.use_case_name == "elsewhere"  # still attached here
    shared.__exit__(None, None, None)
    assert current_scope() is None
    assert detach_errors(context_log) == []
    assert any(
        "exited in a thread or task that did not enter it" in r.getMessage() for r in context_log.records
    )


# --- calls from threads and thread pools inside a scope ------------------------------------------


def test_without_the_call_thread_pool_calls_are_untracked(
    rig: CostRig, client: openai.OpenAI, priced: float
) -> None:
    """What issue 12 saw: Python starts threads without the caller's context."""
    with track_context("pooled"), ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: ask(client), range(2)))
    (row,) = rig.report("use-case")
    assert row["use_case"] == UNTRACKED and row["calls"] == 2


def test_executor_submit_and_map_land_in_the_scope(
    propagating: None, rig: CostRig, client: openai.OpenAI, priced: float
) -> None:
    with track_context("pooled", use_case_id="pool-run"), ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda _: ask(client), range(5)))
        for future in [pool.submit(ask, client) for _ in range(3)]:
            future.result()
    (row,) = rig.report("run")
    assert (row["use_case"], row["run_id"], row["calls"]) == ("pooled", "pool-run", 8)
    assert row["cost_usd"] == pytest.approx(8 * priced)


def test_task_arguments_pass_through_unchanged(propagating: None) -> None:
    def task(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
        return args, kwargs

    with track_context("args"), ThreadPoolExecutor(1) as pool:
        got = pool.submit(task, 1, ctx="mine", func="also mine", fn="mine too").result()
    assert got == ((1,), {"ctx": "mine", "func": "also mine", "fn": "mine too"})


def test_threads_timers_and_thread_subclasses_land_in_the_scope(
    propagating: None, rig: CostRig, client: openai.OpenAI, priced: float
) -> None:
    class Worker(threading.Thread):
        def run(self) -> None:  # overrides run: still gets the context
            ask(client)

    with track_context("threaded", use_case_id="thread-run"):
        threads = [
            threading.Thread(target=ask, args=(client,)),
            Worker(),
            threading.Timer(0.01, ask, (client,)),
        ]
        for thread in threads:
            thread.start()
    for thread in threads:  # joined after the scope ended: the threads keep the context they started in
        thread.join(60)
    (row,) = rig.report("run")
    assert (row["run_id"], row["calls"]) == ("thread-run", 3)


async def test_run_in_executor_to_thread_and_gather_land_in_their_scopes(
    propagating: None, rig: CostRig, client: openai.OpenAI, priced: float
) -> None:
    loop = asyncio.get_running_loop()

    async def request(i: int) -> None:
        async with track_context("async_case", use_case_id=f"req-{i}"):
            await loop.run_in_executor(None, ask, client)
            await asyncio.to_thread(ask, client)  # already copied the context; still counted once
            with ThreadPoolExecutor(1) as own_pool:
                await loop.run_in_executor(own_pool, ask, client)

    await asyncio.gather(*(request(i) for i in range(6)))
    rows = {row["run_id"]: row["calls"] for row in rig.report("run")}
    assert rows == {f"req-{i}": 3 for i in range(6)}


def test_a_pool_thread_keeps_no_scope_between_tasks(
    propagating: None, rig: CostRig, client: openai.OpenAI, priced: float
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context("first", use_case_id="first-run"):
            pool.submit(ask, client).result()  # starts the pool's only worker thread, inside this scope
        pool.submit(ask, client).result()  # outside any scope
        with track_context("second", use_case_id="second-run"):
            pool.submit(ask, client).result()
        assert pool.submit(current_scope).result() is None
    runs = Counter((row["use_case"], row["calls"]) for row in rig.report("run"))
    assert runs == Counter({("first", 1): 1, ("second", 1): 1, (UNTRACKED, 1): 1})


def test_decorated_functions_run_from_a_pool_join_the_callers_run(
    propagating: None, rig: CostRig, client: openai.OpenAI, priced: float
) -> None:
    @track("fan_out")
    def part() -> str | None:
        ask(client)
        return current_scope().use_case_id  # type: ignore[union-attr]

    with track_context("fan_out") as scope, ThreadPoolExecutor(4) as pool:
        ids = [f.result() for f in [pool.submit(part) for _ in range(4)]]
    assert ids == [scope.use_case_id] * 4  # same use case: joins the enclosing run, as in one thread
    (row,) = rig.report("run")
    assert row["calls"] == 4


def test_the_call_is_idempotent_and_reversible() -> None:
    otel_usecase.propagate_context_to_threads()
    otel_usecase.propagate_context_to_threads()
    try:
        assert threading.Thread.start is not ORIGINAL_START
        assert ThreadPoolExecutor.submit is not ORIGINAL_SUBMIT
        seen: list[Scope | None] = []
        with track_context("once"):
            thread = threading.Thread(target=lambda: seen.append(current_scope()))
            thread.start()
            thread.join(30)
        assert seen[0] is not None and seen[0].use_case_name == "once"
    finally:
        otel_usecase.stop_propagating_context_to_threads()
    assert threading.Thread.start is ORIGINAL_START
    assert ThreadPoolExecutor.submit is ORIGINAL_SUBMIT
    with track_context("off"):
        thread = threading.Thread(target=lambda: seen.append(current_scope()))
        thread.start()
        thread.join(30)
    assert seen[1] is None  # Python's own semantics again


def test_stop_leaves_a_later_wrapper_in_place() -> None:
    """Another library that wrapped ours after us keeps working when ours is switched off."""
    otel_usecase.propagate_context_to_threads()
    ours = threading.Thread.start
    calls: list[str] = []

    def theirs(self: threading.Thread) -> None:
        calls.append(self.name)
        ours(self)

    threading.Thread.start = theirs  # type: ignore[method-assign]
    try:
        otel_usecase.stop_propagating_context_to_threads()
        assert threading.Thread.start is theirs
        seen: list[Scope | None] = []
        with track_context("off"):
            thread = threading.Thread(target=lambda: seen.append(current_scope()), name="t-1")
            thread.start()
            thread.join(30)
        assert calls == ["t-1"] and seen == [None]
    finally:
        threading.Thread.start = ORIGINAL_START  # type: ignore[method-assign]
        otel_usecase.stop_propagating_context_to_threads()


def test_the_hook_switch_warns_on_a_bad_value_and_stays_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_usecase.scope.threads import enable_from_env, propagating_context_to_threads

    try:
        monkeypatch.setenv("OTEL_USECASE_THREAD_CONTEXT", "false")
        enable_from_env()
        assert not propagating_context_to_threads()
        monkeypatch.setenv("OTEL_USECASE_THREAD_CONTEXT", "ture")
        with caplog.at_level(logging.WARNING, logger="otel_usecase"):
            enable_from_env()
        assert propagating_context_to_threads()
        assert "OTEL_USECASE_THREAD_CONTEXT='ture' is not accepted (not a boolean)" in caplog.text
    finally:
        otel_usecase.stop_propagating_context_to_threads()


# --- zero code: opentelemetry-instrument --------------------------------------------------------

APP = Path(__file__).parent / "apps" / "threads_app.py"


def run_app(base_url: str, store_url: str, **extra_env: str) -> None:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "threads-test",
        "OTEL_TRACES_EXPORTER": "usecase",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_USECASE_STORE": store_url,
        **extra_env,
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, str(APP), base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_opentelemetry_instrument_puts_thread_pool_calls_in_their_scope(
    fake_openai: FakeOpenAI, store_url: str, priced: float
) -> None:
    run_app(fake_openai.base_url, store_url)
    (row,) = report_json(store_url, "run")  # no (untracked) run
    assert (row["use_case"], row["run_id"], row["calls"]) == ("pooled", "pool-run", 6)
    assert row["cost_usd"] == pytest.approx(6 * priced)


def test_opentelemetry_instrument_thread_context_can_be_switched_off(
    fake_openai: FakeOpenAI, store_url: str, priced: float
) -> None:
    run_app(fake_openai.base_url, store_url, OTEL_USECASE_THREAD_CONTEXT="false")
    by_use_case = {row["use_case"]: row["calls"] for row in report_json(store_url, "use-case")}
    assert by_use_case == {UNTRACKED: 6}
