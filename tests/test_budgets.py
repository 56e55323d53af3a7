"""Budgets against real parts: the openai client through the real instrumentation, FakeOpenAI, real stores,
real subprocesses (``opentelemetry-instrument``, ``otel-usecase serve``, the CLI), a real fork.

Expected spend comes from published prices (tests/expect.py): FakeOpenAI's default usage is 10 prompt
and 5 completion tokens, so each gpt-4o-mini call costs 10 * $0.15/M + 5 * $0.60/M.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_usecase import BudgetExceeded, check_budget, current_scope, track, track_context
from otel_usecase.budgets import (
    Budget,
    Crossing,
    budget_status,
    delete_budget,
    enable,
    list_budgets,
    set_budget,
)
from otel_usecase.budgets import registry as budget_registry
from otel_usecase.budgets import tracker as budget_tracker
from otel_usecase.scope import privacy
from otel_usecase.store import open_store
from otel_usecase.testing import FakeOpenAI

from .builders import a_call
from .expect import mini_cost
from .rigs import CostRig
from .servers import ServeProcess

COST = mini_cost(10, 5)
MSG = [{"role": "user", "content": "hello"}]
BIN = Path(sys.executable).parent
APP = Path(__file__).parent / "apps" / "budget_app.py"


@pytest.fixture(autouse=True)
def _fast_refresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Trackers refresh every 0.3 s here (5 s by default), and none outlives its test."""
    monkeypatch.setenv("OTEL_USECASE_BUDGET_REFRESH_S", "0.3")
    budget_registry.reset()
    yield
    budget_registry.reset()


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy (generous: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def call(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]


def known(tracker: budget_tracker.SpendTracker, name: str) -> bool:
    return any(view.budget.name == name for view in tracker.view())


def today_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT00:00:00+00:00")


def blocked(use_case: str) -> BudgetExceeded | None:
    try:
        with track_context(use_case):
            return None
    except BudgetExceeded as exc:
        return exc


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "daily cap"}, "name='daily cap' is not a valid name"),
        ({"use_case": ""}, "use_case='' is not a valid name"),
        ({"amount_usd": 0}, "amount_usd=0 must be more than 0"),
        ({"amount_usd": float("inf")}, "amount_usd=inf is not a finite number"),
        ({"amount_usd": True}, "amount_usd=True is not a finite number"),
        ({"window": "year"}, "window='year' is not one of run, hour, day, week, month, total"),
        ({"mode": "stop"}, "mode='stop' is not one of warn, block"),
        ({"timezone": "Europe/Parys"}, "timezone='Europe/Parys' is not an IANA time zone name"),
        ({"thresholds": (50, 0)}, "threshold 0 in thresholds=(50, 0) is not a whole percent from 1 to 1000"),
        ({"thresholds": (1001,)}, "threshold 1001"),
        ({"thresholds": ()}, "thresholds=() is empty"),
        ({"experience_name": "a b"}, "experience_name='a b' is not a valid name"),
        ({"webhook": "ftp://x"}, "webhook='ftp://x' is not an http:// or https:// URL"),
    ],
)
def test_a_bad_budget_raises_naming_the_value_and_the_rule(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Budget(**{"name": "daily", "use_case": "summarize", "amount_usd": 1.0, **fields})


def test_thresholds_are_sorted_without_repeats_and_a_budget_survives_the_store_as_json() -> None:
    budget = Budget("daily", "summarize", 2, thresholds=(100, 50, 50), timezone="Europe/Paris", version=7)  # type: ignore[arg-type]
    assert budget.thresholds == (50, 100) and budget.amount_usd == 2.0 and budget.version == "7"
    assert Budget.from_json(budget.to_json()) == budget


def test_a_budget_on_a_user_selects_that_users_calls_when_user_ids_are_hashed() -> None:
    key = "budget-test-hmac-key-0123456789"
    privacy.set_user_id_hmac_key(key)
    try:
        budget = Budget("alice-daily", "summarize", 1.0, user_id="alice")
        assert budget.user_id == privacy.hash_user_id("alice", key)
        with track_context("summarize", user_id="alice") as scope:
            assert scope.user_id == budget.user_id
        assert Budget.from_json(budget.to_json()).user_id == budget.user_id  # stored hashed, not hashed again
    finally:
        privacy.reset_user_id_hmac_key()


# --- block and warn through the real instrumentation ---------------------------------------


def test_a_block_budget_raises_at_scope_entry_once_spend_reaches_the_limit(
    rig: CostRig, client: openai.OpenAI
) -> None:
    set_budget(name="daily", use_case="summarize", amount_usd=2.5 * COST, mode="block", store=rig.store_url)
    tracker = budget_registry.tracker_for(rig.store_url)
    wait_until(lambda: known(tracker, "daily"), what="the tracker to read the budget")
    for _ in range(2):
        with track_context("summarize"):
            call(client)
    rig.flush()
    with track_context("summarize") as scope:
        assert check_budget() == pytest.approx(0.5 * COST)
        assert scope.remaining_usd == pytest.approx(0.5 * COST)
        call(client)  # the third call takes the spend past the limit
    rig.flush()

    with pytest.raises(BudgetExceeded) as info, track_context("summarize"):
        pytest.fail("the scope was entered")
    exc = info.value
    assert exc.budget.name == "daily" and exc.window_key == today_utc()
    assert exc.spent_usd == pytest.approx(3 * COST) and exc.limit_usd == pytest.approx(2.5 * COST)
    assert current_scope() is None  # nothing was attached
    with track_context("translate"):  # another use case is not limited
        assert check_budget() is None

    @track("summarize")
    def summarize() -> None:
        pytest.fail("the decorated function ran")

    with pytest.raises(BudgetExceeded):
        summarize()

    # Refreshes read the same calls from the store: still counted once.
    seen = tracker.refreshes
    wait_until(lambda: tracker.refreshes >= seen + 3, what="three refreshes")
    again = blocked("summarize")
    assert again is not None and again.spent_usd == pytest.approx(3 * COST)
    assert [r["cost_usd"] for r in rig.report()] == [pytest.approx(3 * COST)]


def test_a_warn_budget_logs_each_threshold_once_per_window_and_tells_each_crossing(
    rig: CostRig, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    set_budget(name="soft", use_case="summarize", amount_usd=1.5 * COST, store=rig.store_url)
    tracker = budget_registry.tracker_for(rig.store_url)
    crossings: list[Crossing] = []
    tracker.on_crossing = crossings.append  # where the coordinator wires the alert dispatcher
    wait_until(lambda: known(tracker, "soft"), what="the tracker to read the budget")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        with track_context("summarize"):
            call(client)  # 67%: crosses 50
        rig.flush()
        for _ in range(3):
            with track_context("summarize"):  # warn mode never blocks
                call(client)
        rig.flush()
        seen = tracker.refreshes
        wait_until(lambda: tracker.refreshes >= seen + 3, what="three refreshes")
    lines = [r.getMessage() for r in caplog.records if "budget 'soft'" in r.getMessage()]
    assert [re.search(r"reached (\d+)%", line).group(1) for line in lines] == ["50", "80", "100"]  # type: ignore[union-attr]
    assert [c.threshold for c in crossings] == [50, 80, 100]
    assert {c.window_key for c in crossings} == {today_utc()}
    assert crossings[0].spent_usd == pytest.approx(COST) and crossings[-1].spent_usd == pytest.approx(
        4 * COST
    )
    assert all(c.limit_usd == pytest.approx(1.5 * COST) for c in crossings)
    assert not any(isinstance(r.exc_info, tuple) for r in caplog.records)


def test_a_run_budget_counts_the_calls_of_one_run(rig: CostRig, client: openai.OpenAI) -> None:
    set_budget(
        name="per-run",
        use_case="agent",
        amount_usd=1.5 * COST,
        window="run",
        mode="block",
        store=rig.store_url,
    )
    tracker = budget_registry.tracker_for(rig.store_url)
    wait_until(lambda: known(tracker, "per-run") or tracker.refreshes > 2, what="a refresh")
    with track_context("agent", use_case_id="run-1"):
        call(client)
        call(client)
    rig.flush()
    with pytest.raises(BudgetExceeded) as info, track_context("agent", use_case_id="run-1"):
        pass
    assert info.value.window_key == "run:run-1" and info.value.spent_usd == pytest.approx(2 * COST)
    with track_context("agent", use_case_id="run-2"):  # a new run starts with nothing spent
        assert check_budget() == pytest.approx(1.5 * COST)


def test_bad_stored_budgets_and_a_store_without_the_budgets_table_never_raise(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(store_url)
    store.query("DROP TABLE otel_usecase_budgets")  # a store written before budgets existed
    assert list_budgets(store_url) == [] and budget_status(store_url) == []
    set_budget(Budget("good", "summarize", 1.0, mode="block"), store=store_url)
    store.save_budget("broken", '{"name": "broken", "use_case": "summarize", "amount_usd": -1}', 1)
    store.close()
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert [b.name for b in list_budgets(store_url)] == ["good"]
    assert "stored budget 'broken' is ignored: amount_usd=-1 must be more than 0" in caplog.text
    tracker = enable(store_url, wait_s=30)
    wait_until(lambda: known(tracker, "good"), what="the tracker to read the budget")
    with track_context("summarize"):
        assert check_budget() == pytest.approx(1.0)


def test_the_refresh_interval_is_configurable(monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    assert budget_tracker.SpendTracker(store_url).refresh_s == 0.3
    assert budget_tracker.SpendTracker(store_url, refresh_s=2).refresh_s == 2.0
    monkeypatch.setenv("OTEL_USECASE_BUDGET_REFRESH_S", "soon")
    assert budget_tracker.SpendTracker(store_url).refresh_s == 5.0  # a bad env value warns, default
    with pytest.raises(ValueError, match="refresh_s=0 is not a number of seconds > 0"):
        budget_tracker.SpendTracker(store_url, refresh_s=0)


# --- across processes -----------------------------------------------------------------------


def _instrumented_env(store_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "XDG_DATA_HOME"))}
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep)
        )
    env.update(
        {
            "OTEL_SERVICE_NAME": "budget-app",
            "OTEL_TRACES_EXPORTER": "usecase",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "langchain,openai_agents",
            "OTEL_USECASE_STORE": store_url,
            "OTEL_USECASE_BUDGET_REFRESH_S": "0.3",
            "XDG_DATA_HOME": str(tmp_path / "xdg"),
        }
    )
    return env


def test_a_second_process_sees_the_first_processes_spend_within_the_refresh_interval(
    store_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    set_budget(name="shared", use_case="summarize", amount_usd=2.5 * COST, mode="block", store=store_url)
    tracker = enable(store_url, wait_s=30)
    wait_until(lambda: known(tracker, "shared"), what="the tracker to read the budget")
    assert blocked("summarize") is None
    app = subprocess.run(
        [
            str(BIN / "opentelemetry-instrument"),
            sys.executable,
            str(APP),
            fake_openai.base_url,
            "3",
            "summarize",
            "check",
        ],
        env=_instrumented_env(store_url, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    flushed = time.monotonic()
    assert app.returncode == 0, app.stderr
    assert "FLUSHED" in app.stdout
    # The first process counts its own calls at once (from its exporter's sink).
    first = re.search(r"BLOCKED (\S+) (\S+)", app.stdout)
    assert first is not None, app.stdout
    assert float(first.group(1)) == pytest.approx(3 * COST)
    # This process sees them at its next refresh: within the refresh interval (0.3 s) once they are
    # stored, plus scheduling slack on a loaded machine.
    exc = wait_until(lambda: blocked("summarize"), timeout=60, what="the other process's spend")
    assert time.monotonic() - flushed < 30
    assert exc.spent_usd == pytest.approx(3 * COST) and exc.budget.name == "shared"


def test_an_app_whose_calls_go_through_serve_is_blocked_once_serve_has_stored_them(
    store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otel_usecase import UseCaseSpanProcessor

    set_budget(name="served", use_case="summarize", amount_usd=1.5 * COST, mode="block", store=store_url)
    with ServeProcess(store_url, env={"OTEL_USECASE_BUDGET_REFRESH_S": "0.3"}) as serve:
        provider = TracerProvider()
        provider.add_span_processor(UseCaseSpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=serve.http_url)))
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            tracker = enable(store_url, wait_s=30)  # the app's calls are stored by serve, not here
            wait_until(lambda: known(tracker, "served"), what="the tracker to read the budget")
            for _ in range(2):
                with track_context("summarize"):
                    call(client)
            exc = wait_until(lambda: blocked("summarize"), timeout=60, what="serve's stored spend")
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
    assert exc.spent_usd == pytest.approx(2 * COST) and exc.limit_usd == pytest.approx(1.5 * COST)


def test_a_forked_child_keeps_tracking_and_checking(store_url: str) -> None:
    set_budget(name="forked", use_case="summarize", amount_usd=1.0, mode="block", store=store_url)
    tracker = enable(store_url, wait_s=30)
    wait_until(lambda: known(tracker, "forked"), what="the tracker to read the budget")
    pid = os.fork()
    if pid == 0:  # the child: its tracker must refresh on its own thread to see the change
        code = 1
        try:
            set_budget(name="forked", use_case="summarize", amount_usd=0.25, mode="block", store=store_url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with track_context("summarize"):
                    if check_budget() == pytest.approx(0.25):
                        code = 0
                        break
                time.sleep(0.05)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_until(lambda: _remaining_in("summarize") == pytest.approx(0.25), what="the parent to see it too")


def _remaining_in(use_case: str) -> float | None:
    with track_context(use_case):
        return check_budget()


# --- the CLI, on SQLite and PostgreSQL ----------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Any]:
    from .pg import PostgresServer

    with PostgresServer() as server:
        yield server


_db_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
        return str(request.getfixturevalue("pg_server").create_database(f"b{next(_db_names)}_{name}"))
    return "sqlite:///" + str(tmp_path / "cli.db")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "otel-usecase"), "budgets", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_round_trip_set_list_status_delete(cli_store: str, client: openai.OpenAI) -> None:
    set_ = cli(
        "set",
        "daily",
        "--use-case",
        "summarize",
        "--amount",
        "0.01",
        "--mode",
        "block",
        "--timezone",
        "Europe/Paris",
        "--thresholds",
        "80,50",
        "--store",
        cli_store,
    )
    assert set_.returncode == 0, set_.stderr
    bad = cli("set", "bad", "--use-case", "sum marize", "--amount", "1", "--store", cli_store)
    assert bad.returncode == 2 and "use_case='sum marize' is not a valid name" in bad.stderr
    listed = json.loads(cli("list", "--format", "json", "--store", cli_store).stdout)
    assert [(b["name"], b["mode"], b["timezone"], b["thresholds"]) for b in listed] == [
        ("daily", "block", "Europe/Paris", [50, 80])
    ]
    rig = CostRig(cli_store)
    try:
        for _ in range(4):
            with track_context("summarize"):
                call(client)
        rig.flush()
        assert rig.exporter.force_flush()
        # The exporter's tracker reads this store's spend (window totals and its calls' keys) too.
        tracker = budget_registry.tracker_for(cli_store)
        seen = tracker.refreshes
        wait_until(lambda: tracker.refreshes >= seen + 2, what="two refreshes")
        assert tracker.refresh_errors == 0
        assert [view.spent_usd for view in tracker.view()] == [pytest.approx(4 * COST)]
    finally:
        rig.close()
    status = cli("status", "--format", "json", "--store", cli_store)
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert row["spent_usd"] == pytest.approx(4 * COST) and row["limit_usd"] == 0.01
    assert row["remaining_usd"] == pytest.approx(0.01 - 4 * COST) and row["unpriced_calls"] == 0
    assert row["window_end"].endswith(("+01:00", "+02:00")) and row["window_key"].endswith(
        "T00:00:00" + row["window_end"][-6:]
    )
    table = cli("status", "--store", cli_store).stdout
    assert "daily" in table and f"${4 * COST:.6f}" in table and "window end" in table
    assert cli("delete", "daily", "--store", cli_store).returncode == 0
    missing = cli("delete", "daily", "--store", cli_store)
    assert missing.returncode == 1 and "no budget 'daily'" in missing.stderr
    assert json.loads(cli("list", "--format", "json", "--store", cli_store).stdout) == []


def test_read_only_budget_commands_never_create_a_store(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "nowhere.db")
    for args in (("list",), ("status",), ("delete", "x")):
        done = cli(*args, "--store", url)
        assert done.returncode == 1 and "does not exist" in done.stderr
    assert not (tmp_path / "nowhere.db").exists()
    assert delete_budget  # the Python API says the same (StoreError), tested through the CLI


# --- counting each call once, however its write and the refresh interleave -------------------


def _ledger_call(span: str, cost: float, status: str = "priced") -> Any:
    now = time.time_ns()
    return a_call(
        span_id=span.rjust(16, "0"),
        start_ns=now,
        end_ns=now + 1,
        use_case="summarize",
        cost_usd=cost,
        status=status,
    )


def test_local_calls_count_once_before_during_and_after_they_reach_the_store(cli_store: str) -> None:
    store_url = cli_store
    from otel_usecase.cost.sink import CallEvent, CallSink

    set_budget(name="once", use_case="summarize", amount_usd=100.0, mode="block", store=store_url)
    store = open_store(store_url)
    tracker = budget_tracker.SpendTracker(store_url, refresh_s=3600)  # refreshed by hand below
    try:
        assert tracker.refresh()
        sink: CallSink[Any] = CallSink(store.write)
        tracker.attach(sink)

        def spent() -> float:
            [view] = tracker.view()
            return view.spent_usd

        sink.put([_ledger_call("a", 1.0, "partial")])  # stored, then told
        assert spent() == pytest.approx(1.0)
        store.write([_ledger_call("c", 2.0)])  # another process's call
        assert spent() == pytest.approx(1.0)
        assert tracker.refresh() and spent() == pytest.approx(3.0)

        # A better copy of "a" told before the writer stored it: its difference counts at once,
        # and neither the refresh that finds the old copy nor the one that finds the new counts it again.
        tracker.on_events([CallEvent(_ledger_call("a", 1.5), _ledger_call("a", 1.0, "partial"))])
        assert spent() == pytest.approx(3.5)
        assert tracker.refresh() and spent() == pytest.approx(3.5)
        store.write([_ledger_call("a", 1.5)])
        assert tracker.refresh() and spent() == pytest.approx(3.5)

        # A call told but never stored (its write lost) still counts here, on every refresh.
        tracker.on_events([CallEvent(_ledger_call("b", 0.25))])
        for _ in range(3):
            assert tracker.refresh() and spent() == pytest.approx(3.75)
        assert list(tracker._pending) == [("0" * 31 + "1", "b".rjust(16, "0"))]
        # A call of a use case without a budget is not kept at all.
        tracker.on_events([CallEvent(_ledger_call("z", 9.0)._replace(use_case="translate"))])
        assert len(tracker._pending) == 1
    finally:
        tracker.stop()
        store.close()


def test_a_block_budget_on_a_hashed_user_blocks_that_user_only(rig: CostRig, client: openai.OpenAI) -> None:
    privacy.set_user_id_hmac_key("budget-test-hmac-key-0123456789")
    try:
        set_budget(
            name="alice-cap",
            use_case="chat",
            user_id="alice",
            amount_usd=1.5 * COST,
            mode="block",
            store=rig.store_url,
        )
        tracker = budget_registry.tracker_for(rig.store_url)
        wait_until(lambda: known(tracker, "alice-cap"), what="the tracker to read the budget")
        for user in ("alice", "alice", "bob"):
            with track_context("chat", user_id=user):
                call(client)
        rig.flush()
        with pytest.raises(BudgetExceeded) as info, track_context("chat", user_id="alice"):
            pass
        assert info.value.spent_usd == pytest.approx(2 * COST)  # bob's call is not alice's
        with track_context("chat", user_id="bob"):
            assert check_budget() is None
        [status] = budget_status(rig.store_url)
        assert status.spent_usd == pytest.approx(2 * COST)  # the store agrees, by the hashed id
    finally:
        privacy.reset_user_id_hmac_key()
