"""Outcomes: ``record_outcome`` through real parts, and the cost per outcome finance asks for.

Every figure is computed here from published prices (gpt-4o-mini $0.15/M input, $0.60/M output,
:mod:`tests.expect`), never read back from the code under test. The calls are real OpenAI client
calls through the real instrumentation against FakeOpenAI; the outcomes go the way users' do: in
process through the exporter, under ``opentelemetry-instrument`` (stopped by SIGTERM), and over OTLP
into ``serve`` (directly and through a real collector).
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NoOpTracerProvider

from otel_usecase import (
    UseCaseCostExporter,
    UseCaseSpanProcessor,
    UseCaseWarning,
    record_outcome,
    set_default_use_case,
    track_context,
)
from otel_usecase.outcomes import outcome_counts
from otel_usecase.report.outcomes import outcome_costs
from otel_usecase.scope.validation import reset_warnings
from otel_usecase.store import ReportFilter, open_store
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .builders import a_call
from .expect import mini_cost
from .rigs import CostRig
from .servers import BIN, RotelProcess, ServeProcess, free_port
from .test_fork import APPS, instrumented_env
from .test_sigterm import stop, wait_for_line
from .test_views import _LedgerOnly, _Refusing

MSG = [{"role": "user", "content": "where is my order?"}]
CALL = mini_cost(1_000, 100)
"""One gpt-4o-mini call of 1,000 input and 100 output tokens: $0.00021."""
CLI = str(BIN / "otel-usecase")


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real console script (PYTHONPATH, inherited, puts the code under test first)."""
    return subprocess.run([CLI, *argv], check=False, capture_output=True, text=True, timeout=120)


def per_outcome(store_url: str, name: str, *extra: str) -> list[dict[str, Any]]:
    """What ``otel-usecase report --per-outcome NAME --format json`` says."""
    proc = cli("report", "--per-outcome", name, "--format", "json", "--store", store_url, *extra)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


@pytest.fixture
def answering(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    return fake_openai


@pytest.fixture
def shared_rig(sqlite_or_postgres: str) -> Iterator[CostRig]:
    rig = CostRig(sqlite_or_postgres)
    try:
        yield rig
    finally:
        rig.close()


def written(rig: CostRig) -> None:
    """Everything exported so far is in the store (the SDK's queue, then the exporter's writers)."""
    rig.flush()
    assert rig.exporter.force_flush(60_000)


def support_desk(rig: CostRig, fake: FakeOpenAI) -> None:
    """Three support runs (two resolve tickets: 1 and 2) and a summary run with an outcome of its own."""
    client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
    runs = [("t-1", "v1", 2, 1.0), ("t-2", "v1", 1, 2.0), ("t-3", "v2", 1, None)]
    for run, version, calls, resolved in runs:
        with track_context("support", use_case_id=run, use_case_version=version, user_id=f"user-{run}"):
            for _ in range(calls):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            if resolved is not None:
                assert record_outcome("ticket_resolved", resolved, tracer_provider=rig.provider)
    with track_context("summaries", use_case_id="s-1"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert record_outcome("summary_accepted", tracer_provider=rig.provider)
    written(rig)


# --- the figure finance asks for ---------------------------------------------------------------


def test_cost_per_outcome_counts_the_runs_that_did_not_achieve_it(
    shared_rig: CostRig, answering: FakeOpenAI
) -> None:
    support_desk(shared_rig, answering)
    support, summaries = per_outcome(shared_rig.store_url, "ticket_resolved")
    assert support["use_case"] == "support"
    assert (support["runs"], support["runs_with_outcome"], support["runs_without_outcome"]) == (3, 2, 1)
    assert (support["outcomes"], support["outcome_value"], support["calls"]) == (2, 3.0, 4)
    assert support["cost_usd"] == pytest.approx(4 * CALL) and support["cost_complete"] is True
    assert support["cost_per_outcome_usd"] == pytest.approx(4 * CALL / 3)  # t-3's call is in the cost
    assert support["cost_without_outcome_usd"] == pytest.approx(CALL)
    assert summaries["use_case"] == "summaries" and summaries["outcomes"] == 0
    assert summaries["cost_per_outcome_usd"] is None  # nothing achieved: no figure, never $0
    assert summaries["cost_usd"] == pytest.approx(CALL)

    # The dashboard's function gives the same figures.
    store = open_store(shared_rig.store_url)
    try:
        rows = outcome_costs(store, ReportFilter(), "ticket_resolved")
    finally:
        store.close()
    assert [(r.key, r.outcome_value, r.runs_without_outcome) for r in rows] == [
        ({"use_case": "support"}, 3.0, 1),
        ({"use_case": "summaries"}, 0.0, 1),
    ]
    assert rows[0].cost_per_outcome_usd == pytest.approx(4 * CALL / 3)


def test_cost_per_outcome_by_version_filters_and_formats(shared_rig: CostRig, answering: FakeOpenAI) -> None:
    support_desk(shared_rig, answering)
    url = shared_rig.store_url
    by_version = {
        r["use_case_version"]: r
        for r in per_outcome(url, "ticket_resolved", "--by", "version", "--use-case", "support")
    }
    assert set(by_version) == {"v1", "v2"}
    assert by_version["v1"]["cost_per_outcome_usd"] == pytest.approx(3 * CALL / 3)
    assert (by_version["v2"]["runs_without_outcome"], by_version["v2"]["cost_per_outcome_usd"]) == (1, None)
    (one_user,) = per_outcome(url, "ticket_resolved", "--by", "user", "--user", "user-t-2")
    assert (one_user["outcome_value"], one_user["cost_per_outcome_usd"]) == (2.0, pytest.approx(CALL / 2))

    # CSV: the same fields, one row per group; the table: cost per outcome and the runs without it.
    proc = cli("report", "--per-outcome", "ticket_resolved", "--format", "csv", "--store", url)
    header, first = proc.stdout.splitlines()[:2]
    assert header.split(",")[:4] == ["use_case", "outcome", "runs", "runs_with_outcome"]
    assert first.startswith("support,ticket_resolved,3,2,1,2,3.0,4,")
    table = cli("report", "--per-outcome", "ticket_resolved", "--store", url).stdout
    support_line = next(line for line in table.splitlines() if line.startswith("support "))
    assert support_line.split()[1:] == [
        "3",
        "2",
        "1",
        "2",
        "3",
        f"${4 * CALL:.6f}",
        f"${4 * CALL / 3:.6f}",
        f"${CALL:.6f}",
    ]
    assert (
        f"total ${5 * CALL:.6f} over 4 runs (2 without the outcome): ${5 * CALL / 3:.6f} per outcome" in table
    )

    # An outcome belongs to a run: grouping by a call's property is refused, by name (exit 2).
    refused = cli("report", "--per-outcome", "ticket_resolved", "--by", "model", "--store", url)
    assert refused.returncode == 2 and "--by 'model' cannot be used with --per-outcome" in refused.stderr
    bad = cli("report", "--per-outcome", "ticket resolved", "--store", url)
    assert bad.returncode == 2 and "not an outcome name" in bad.stderr


def test_a_run_whose_version_changed_counts_once_in_the_group_of_most_of_its_calls(
    rig: CostRig, answering: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=answering.base_url, api_key="k", max_retries=0)
    for version, calls in (("v1", 2), ("v2", 1)):  # one run, its version changed mid-run
        with track_context("support", use_case_id="t-9", use_case_version=version):
            for _ in range(calls):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with track_context("support", use_case_id="t-9", use_case_version="v2"):
        assert record_outcome("ticket_resolved", tracer_provider=rig.provider)
    written(rig)
    by_version = {
        r["use_case_version"]: r for r in per_outcome(rig.store_url, "ticket_resolved", "--by", "version")
    }
    assert (by_version["v1"]["runs"], by_version["v1"]["outcome_value"]) == (1, 1.0)  # 2 of its 3 calls
    assert by_version["v1"]["cost_per_outcome_usd"] == pytest.approx(2 * CALL)
    assert (by_version["v2"]["runs"], by_version["v2"]["calls"], by_version["v2"]["outcomes"]) == (0, 1, 0)
    assert by_version["v2"]["cost_usd"] == pytest.approx(CALL)  # its cost stays where its call is


def test_outcomes_of_runs_outside_the_selection_are_counted_not_lost(
    rig: CostRig, answering: FakeOpenAI
) -> None:
    support_desk(rig, answering)
    # Recorded by run id for a run that has no call (a mistyped id, or calls not in the selection).
    assert record_outcome("ticket_resolved", run_id="t-404", use_case="support", tracer_provider=rig.provider)
    written(rig)
    (support, _) = per_outcome(rig.store_url, "ticket_resolved")
    assert support["outcome_value"] == 3.0  # not divided into the runs' cost
    table = cli("report", "--per-outcome", "ticket_resolved", "--store", rig.store_url).stdout
    assert "1 outcomes (value 1) belong to runs with no call in this selection" in table


def test_an_outcome_exported_twice_is_stored_once(rig: CostRig, answering: FakeOpenAI) -> None:
    support_desk(rig, answering)
    spans = rig.captured.get_finished_spans()
    assert sum(1 for s in spans if s.name == "usecase.outcome") == 3
    assert rig.exporter.export(spans).name == "SUCCESS"  # a retried export: the same spans again
    assert rig.exporter.force_flush(60_000)
    (support, _) = per_outcome(rig.store_url, "ticket_resolved")
    assert (support["outcomes"], support["outcome_value"], support["cost_usd"]) == (
        2,
        3.0,
        pytest.approx(4 * CALL),
    )


def test_with_a_default_use_case_and_no_run_id_the_run_is_the_trace_as_for_its_calls(
    rig: CostRig, answering: FakeOpenAI
) -> None:
    set_default_use_case("support")  # no scope, no run id: each trace (request) is a run
    client = openai.OpenAI(base_url=answering.base_url, api_key="k", max_retries=0)
    tracer = rig.provider.get_tracer("app")
    for resolved in (True, False):
        with tracer.start_as_current_span("request"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            if resolved:
                assert record_outcome("ticket_resolved", tracer_provider=rig.provider)
    written(rig)
    (support,) = per_outcome(rig.store_url, "ticket_resolved")
    assert (support["runs"], support["runs_with_outcome"]) == (2, 1)
    assert support["cost_per_outcome_usd"] == pytest.approx(2 * CALL)


# --- data never raises; what is not recorded is said and counted --------------------------------


def test_bad_values_and_missing_runs_warn_and_are_counted_never_raise(rig: CostRig) -> None:
    reset_warnings()  # warnings are rate-limited per process (ten a minute, with the ids')
    provider = rig.provider
    before = outcome_counts()
    with pytest.raises(ValueError, match=r"outcome name='ticket resolved' is not a valid name"):
        record_outcome("ticket resolved", tracer_provider=provider)  # a name is code
    with track_context("support", use_case_id="t-1"):
        for bad in (float("nan"), float("inf"), "3", None, True):
            with pytest.warns(UseCaseWarning, match=f"value={bad!r} is not a finite number"):
                assert record_outcome("ticket_resolved", bad, tracer_provider=provider) is False  # type: ignore[arg-type]
        with pytest.warns(UseCaseWarning, match=r"use_case='billing' is not the current run's \('support'\)"):
            assert record_outcome("ticket_resolved", use_case="billing", tracer_provider=provider) is False
    with pytest.warns(UseCaseWarning, match="outside any scope: record it inside track_context"):
        assert record_outcome("ticket_resolved", tracer_provider=provider) is False
    with pytest.warns(UseCaseWarning, match=r"run_id='t-1' outside any scope: pass use_case="):
        assert record_outcome("ticket_resolved", run_id="t-1", tracer_provider=provider) is False
    after = outcome_counts()
    assert after.not_recorded - before.not_recorded == 8 and after.recorded == before.recorded
    written(rig)
    store = open_store(rig.store_url)
    try:
        assert store.outcome_totals("ticket_resolved") == []
    finally:
        store.close()


def test_without_an_sdk_provider_or_sampled_out_an_outcome_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = outcome_counts()
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert record_outcome("ok", run_id="r", use_case="u", tracer_provider=NoOpTracerProvider()) is False
    assert "is not an OpenTelemetry SDK TracerProvider" in caplog.text
    sampled = TracerProvider(sampler=ALWAYS_OFF)  # dropped with its trace, whose calls are dropped too
    assert record_outcome("ok", run_id="r", use_case="u", tracer_provider=sampled) is False
    after = outcome_counts()
    assert (after.not_recorded - before.not_recorded, after.sampled_out - before.sampled_out) == (1, 1)


def test_outcomes_wait_out_a_locked_store_and_are_written_once_when_it_is_free(
    rig: CostRig, answering: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=answering.base_url, api_key="k", max_retries=0)
    with track_context("support", use_case_id="t-0"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    written(rig)  # the store exists
    locker = sqlite3.connect(rig.store_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock, for longer than a busy timeout
    try:
        with track_context("support", use_case_id="t-1"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            assert record_outcome("ticket_resolved", tracer_provider=rig.provider)
        rig.flush()  # the export does not wait for a store that is failing
        assert rig.exporter.buffered_outcomes == 1
        assert not rig.exporter.force_flush(500)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert rig.exporter.force_flush(60_000)
    (support,) = per_outcome(rig.store_url, "ticket_resolved")
    assert (support["runs"], support["outcomes"], support["cost_per_outcome_usd"]) == (
        2,
        1,
        pytest.approx(2 * CALL),
    )
    assert rig.exporter.dropped_outcomes == 0


def test_outcomes_a_store_cannot_take_are_counted_and_logged_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that is down: outcomes wait in the exporter's buffer, and what shutdown cannot write is
    counted in ``dropped_outcomes`` and logged with its number."""
    down = f"postgresql://otel@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    provider = TracerProvider()
    exporter = UseCaseCostExporter(store=down, export_wait_millis=50)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    with track_context("support", use_case_id="t-1"):
        for _ in range(3):
            assert record_outcome("ticket_resolved", tracer_provider=provider)
    provider.force_flush()
    assert exporter.buffered_outcomes == 3
    with caplog.at_level(logging.ERROR, logger="otel_usecase"):
        exporter.shutdown(timeout_millis=500)
    assert exporter.dropped_outcomes == 3
    assert "shutting down with 3 outcomes the store" in caplog.text
    provider.shutdown()


# --- stores: the table, idempotent, and a store that predates it ---------------------------------


def _drop_outcomes_table(url: str) -> None:
    """Make ``url`` a store as otel-usecase left it before outcomes existed."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("DROP TABLE otel_usecase_outcomes")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE otel_usecase_outcomes")


def test_a_store_from_before_outcomes_reports_without_them_and_gets_the_table_on_the_first_one(
    shared_rig: CostRig, answering: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=answering.base_url, api_key="k", max_retries=0)
    with track_context("support", use_case_id="t-1"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    written(shared_rig)
    url = shared_rig.store_url
    _drop_outcomes_table(url)
    (before,) = per_outcome(url, "ticket_resolved")  # read as no outcomes: every run without it
    assert (before["runs_without_outcome"], before["cost_per_outcome_usd"]) == (1, None)
    assert cli("runs", "show", "t-1", "--store", url).returncode == 0

    # A long-running exporter (its store opened before the table went) creates it with the first outcome.
    with track_context("support", use_case_id="t-1"):
        assert record_outcome("ticket_resolved", tracer_provider=shared_rig.provider)
    written(shared_rig)
    (after,) = per_outcome(url, "ticket_resolved")
    assert (after["runs_with_outcome"], after["cost_per_outcome_usd"]) == (1, pytest.approx(CALL))


def test_the_store_writes_an_outcome_once_and_refuses_bad_ones_alone(sqlite_or_postgres: str) -> None:
    from otel_usecase.store.outcome_sql import Outcome

    good = Outcome("a" * 32, "b" * 16, time.time_ns(), "svc", "support", "t-1", "ticket_resolved", 1.0)
    bad = good._replace(span_id="c" * 16, run_id="lone \udcff surrogate")
    store = open_store(sqlite_or_postgres)
    try:
        refused = store.write_outcomes([good, bad, good])
        assert [(r.outcome.span_id, r.reason) for r in refused] == [
            ("c" * 16, "run_id must be valid Unicode text (no lone surrogates), got 'lone \\udcff surrogate'")
        ]
        assert store.write_outcomes([good]) == []  # a retry
        assert store.outcome_totals("ticket_resolved") == [("support", "t-1", 1, 1.0, good.recorded_ns)]
        assert store.run_outcomes("t-1") == [good]
    finally:
        store.close()


# --- runs show ---------------------------------------------------------------------------------


def test_runs_show_names_experience_user_version_tags_cost_source_and_outcomes(
    rig: CostRig, answering: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=answering.base_url, api_key="k", max_retries=0)
    with track_context(
        "support",
        use_case_id="t-7",
        use_case_version="v3",
        experience_name="help_center",
        experience_id="sess-1",
        user_id="alice",
    ) as scope:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert record_outcome("ticket_resolved", tracer_provider=rig.provider)
        assert record_outcome("csat", 4.5, tracer_provider=rig.provider)
    written(rig)
    # A second call of the run, stored with tags by another writer (serve, say).
    store = open_store(rig.store_url)
    try:
        store.write(
            [
                a_call(
                    run_id="t-7",
                    use_case="support",
                    span_id="f" * 16,
                    start_ns=time.time_ns(),
                    tags={"tenant": "acme"},
                    cost_usd=CALL,
                )
            ]
        )
    finally:
        store.close()
    proc = cli("runs", "show", "t-7", "--store", rig.store_url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    title = lines[1]
    assert title.startswith("run t-7  use case support  version v3  user alice")
    assert f"experience help_center ({scope.experience_id})" in title and "tags tenant=acme" in title
    assert "genai-prices" in proc.stdout  # each call's cost source
    assert lines[-1] == "outcomes csat x1 (value 4.5), ticket_resolved x1 (value 1)"
    records = json.loads(cli("runs", "show", "t-7", "--format", "json", "--store", rig.store_url).stdout)
    assert [(r["experience_name"], r["use_case_version"], r["tags"]) for r in records] == [
        ("help_center", "v3", {}),
        (None, None, {"tenant": "acme"}),
    ]
    assert records[0]["cost_source"].startswith("genai-prices") and records[0]["cost_usd"] == pytest.approx(
        CALL
    )


# --- zero code, SIGTERM ------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_opentelemetry_instrument_app_records_outcomes_and_flushes_them_at_exit_and_sigterm(
    ending: str, sqlite_or_postgres: str, answering: FakeOpenAI
) -> None:
    store_url = sqlite_or_postgres
    proc = subprocess.Popen(
        [
            str(BIN / "opentelemetry-instrument"),
            str(BIN / "python"),
            str(APPS / "outcome_app.py"),
            answering.base_url,
            "exit" if ending == "exit" else "wait",
        ],
        env=instrumented_env(store_url, answering),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(proc, "DONE")
    if ending == "sigterm":
        code, _, err = stop(proc)
        assert code == -signal.SIGTERM, err
    else:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    (support,) = per_outcome(store_url, "ticket_resolved")
    assert (support["runs"], support["runs_with_outcome"], support["calls"]) == (2, 1, 3)
    assert support["cost_per_outcome_usd"] == pytest.approx(3 * CALL)
    (csat,) = per_outcome(store_url, "csat")  # recorded by run id, outside any scope
    assert (csat["outcome_value"], csat["cost_per_outcome_usd"]) == (4.5, pytest.approx(3 * CALL / 4.5))


# --- through serve, directly and behind a collector ----------------------------------------------


def app_exporting(exporter: Any, fake: FakeOpenAI) -> None:
    """An app whose only exporter is OTLP (no store of its own): two support runs, one resolved."""
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": "remote-app"}))
    provider.add_span_processor(UseCaseSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        with track_context("support", use_case_id="r-1"):
            for _ in range(2):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            assert record_outcome("ticket_resolved", tracer_provider=provider)
        with track_context("support", use_case_id="r-2"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def wait_for_outcomes(url: str, name: str, value: float, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        proc = cli("report", "--per-outcome", name, "--format", "json", "--store", url)
        rows = json.loads(proc.stdout) if proc.returncode == 0 else []
        if rows and rows[0]["outcome_value"] == value and rows[0]["calls"] == 3:
            return dict(rows[0])
        time.sleep(0.3)
    raise AssertionError(f"the outcomes did not arrive: {rows}")


@pytest.mark.parametrize("path", ["otlp-http", "collector"])
def test_apps_exporting_to_serve_record_outcomes_there(
    path: str, tmp_path: Path, store_url: str, answering: FakeOpenAI
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with ServeProcess(store_url) as served:
        if path == "collector":
            with RotelProcess(f"http://127.0.0.1:{served.http_port}", tmp_path) as collector:
                app_exporting(
                    OTLPSpanExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/traces"), answering
                )
                support = wait_for_outcomes(store_url, "ticket_resolved", 1.0)
        else:
            app_exporting(OTLPSpanExporter(endpoint=served.http_url), answering)
            support = wait_for_outcomes(store_url, "ticket_resolved", 1.0)
        assert served.healthz()["outcomes_written"] == 1
    assert (support["runs"], support["runs_without_outcome"]) == (2, 1)
    assert support["cost_per_outcome_usd"] == pytest.approx(3 * CALL)


@pytest.mark.parametrize("name", ["gateway.yaml", "loadbalancing.yaml"])
def test_the_shipped_collector_configs_send_outcome_spans_to_the_cost_engine(name: str) -> None:
    """Their filter keeps only LLM spans for ``serve``; an outcome span is kept too (a plain one is not)."""
    from .test_collector_config import filter_drops, load

    drops = filter_drops(load(name), "filter/llm_spans")
    outcome = {
        "usecase.outcome.name": "ticket_resolved",
        "usecase.outcome.value": 1.0,
        "usecase.name": "support",
    }
    assert not drops(outcome)
    assert drops({"usecase.name": "support", "usecase.id": "t-1"})


def outcome_request(trace_id: str, span_id: str, run: str) -> dict[str, Any]:
    """An OTLP/JSON request with one outcome span, as ``record_outcome`` sends it."""
    now = str(time.time_ns())
    attributes = [
        {"key": "usecase.outcome.name", "value": {"stringValue": "ticket_resolved"}},
        {"key": "usecase.outcome.value", "value": {"doubleValue": 1.0}},
        {"key": "usecase.name", "value": {"stringValue": "support"}},
        {"key": "usecase.id", "value": {"stringValue": run}},
    ]
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "usecase.outcome",
        "kind": 1,
        "startTimeUnixNano": now,
        "endTimeUnixNano": now,
        "attributes": attributes,
    }
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [{"scope": {"name": "otel_usecase.outcomes"}, "spans": [span]}],
            }
        ]
    }


def test_a_resent_otlp_request_writes_its_outcome_once_and_a_bad_one_is_refused_by_name(
    store_url: str,
) -> None:
    with ServeProcess(store_url) as served:
        body = outcome_request("1" * 32, "2" * 16, "r-1")
        for _ in range(2):  # a collector's retry of the same request
            got = httpx.post(served.http_url, json=body, timeout=30)
            assert got.status_code == 200 and got.json() == {}
        bad = outcome_request("3" * 32, "4" * 16, "r-1")
        bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][1]["value"] = {
            "stringValue": "lots"
        }
        refused = httpx.post(served.http_url, json=bad, timeout=30)
    assert refused.status_code == 200
    assert refused.json()["partialSuccess"] == {
        "rejectedSpans": "1",
        "errorMessage": "1 span rejected: outcome span 4444444444444444 of trace "
        "33333333333333333333333333333333: usecase.outcome.value 'lots' is not a finite number",
    }
    store = open_store(store_url)
    try:
        assert [row[:4] for row in store.outcome_totals("ticket_resolved")] == [("support", "r-1", 1, 1.0)]
    finally:
        store.close()


# --- many runs: the kept totals and the ledger give the figures of published prices ------------

HOUR_NS = 3_600_000_000_000
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC


class _Run:
    """One generated run: its attributes, its calls' (input, output, priced) and its outcomes' values."""

    def __init__(self, n: int, run_id: str, use_case: str, version: str, user: str, experience: str,
                 tenant: str, calls: list[tuple[int, int, bool]], outcomes: list[float]) -> None:  # fmt: skip
        self.n, self.run_id, self.use_case, self.version = n, run_id, use_case, version
        self.user, self.experience, self.tenant, self.calls, self.outcomes = user, experience, tenant, calls, outcomes
        self.at = T0 + n * HOUR_NS

    def key(self, by: str) -> tuple[Any, ...]:
        return {
            "use-case": (self.use_case,),
            "version": (self.use_case, self.version),
            "experience": (self.experience, "1"),
            "user": (self.user,),
        }[by]


def _generated_runs() -> list[_Run]:
    runs = []
    for n in range(90):
        calls = [(100 + n, 10 + n % 7, True), (50, 5 + n % 3, n % 11 != 0)]  # every 11th run: one unpriced call
        outcomes = [1.0 + n % 3] + ([0.5] if n % 8 == 0 else []) if n % 4 == 0 else []
        runs.append(_Run(n, f"r{n}", "abc"[n % 3], f"v{n % 2}", f"u{n % 5}", f"e{n % 4}",
                         ("t1", "t2")[n % 6 == 0], calls, outcomes))  # fmt: skip
    # every run of user "done" achieved it; user "free"'s run without it has no known cost
    runs.append(_Run(90, "done-1", "a", "v0", "done", "e0", "t1", [(300, 30, True)], [1.0]))
    runs.append(_Run(91, "done-2", "b", "v1", "done", "e1", "t1", [(310, 30, True)], [2.0]))
    runs.append(_Run(92, "free-1", "a", "v0", "free", "e0", "t1", [(300, 30, True)], [1.0]))
    runs.append(_Run(93, "free-2", "a", "v0", "free", "e0", "t1", [(10, 1, False)], []))
    return runs


def _counted(filters: ReportFilter, use_case: str) -> bool:
    """Whether the outcomes of a use case's runs count at all (outside the selection, if not in it)."""
    return filters.use_case in (None, use_case) and (filters.use_cases is None or use_case in filters.use_cases)


def _expected(runs: list[_Run], selected: Any, by: str, filters: ReportFilter) -> tuple[dict[Any, Any], float]:
    """Per group: (runs, with, outcomes, value, calls, cost, complete, without), from published prices; and
    the value of the outcomes of the runs left out of the selection (those of the use cases it reads)."""
    groups: dict[Any, Any] = {}
    outside = 0.0
    for run in runs:
        if not selected(run):
            if _counted(filters, run.use_case) and (filters.since_ns is None or run.at >= filters.since_ns):
                outside += sum(run.outcomes)
            continue
        g = groups.setdefault(run.key(by), {"runs": 0, "with": 0, "outcomes": 0, "value": 0.0, "calls": 0,
                                            "cost": None, "complete": True, "without": None})  # fmt: skip
        g["runs"] += 1
        g["calls"] += len(run.calls)
        priced = [mini_cost(i, o) for i, o, ok in run.calls if ok]
        if priced:
            g["cost"] = (g["cost"] or 0.0) + sum(priced)
            if not run.outcomes:
                g["without"] = (g["without"] or 0.0) + sum(priced)
        g["complete"] = g["complete"] and all(ok for _, _, ok in run.calls)
        if run.outcomes:
            g["with"] += 1
            g["outcomes"] += len(run.outcomes)
            g["value"] += sum(run.outcomes)
    for g in groups.values():
        if g["without"] is None and g["cost"] is not None:
            g["without"] = 0.0
    return groups, outside


def test_cost_per_outcome_of_many_runs_is_their_calls_at_published_prices_under_every_filter(
    sqlite_or_postgres: str,
) -> None:
    """The groups' totals come from what the store keeps (the per-run table, the group totals) and only the
    runs that achieved the outcome are read; under a time window, or read from the ledger, the same
    figures. Every figure against published prices; a group whose every run achieved it, or whose runs
    without it cost nothing known, costs exactly $0 without it."""
    from otel_usecase.report.outcomes import OUTCOME_GROUPINGS, outcome_report
    from otel_usecase.store.outcome_sql import Outcome

    runs = _generated_runs()
    store = open_store(sqlite_or_postgres)
    try:
        calls, outcomes = [], []
        for run in runs:
            for i, (prompt, completion, ok) in enumerate(run.calls):
                calls.append(a_call(trace_id=f"{run.n:030x}{i:02x}", span_id=f"{run.n:014x}{i:02x}",
                                    start_ns=run.at + i, end_ns=run.at + i + 1, use_case=run.use_case,
                                    run_id=run.run_id, use_case_version=run.version, user_id=run.user,
                                    experience_name=run.experience, experience_id="1", tags={"tenant": run.tenant},
                                    tokens={"input": prompt, "output": completion},
                                    cost_usd=mini_cost(prompt, completion) if ok else None,
                                    status="priced" if ok else "unpriced"))  # fmt: skip
            for i, value in enumerate(run.outcomes):
                outcomes.append(Outcome(f"{run.n:032x}", f"{i:016x}", run.at + 10, None, run.use_case,
                                        run.run_id, "resolved", value))  # fmt: skip
        outcomes.append(Outcome("f" * 32, "f" * 16, T0 + 5, None, "a", "no-such-run", "resolved", 4.0))
        outcomes.append(Outcome("e" * 32, "e" * 16, T0 + 5, None, "a", "r0", "other", 9.0))
        store.write(calls)
        assert store.write_outcomes(outcomes) == []
        ledger: Any = _LedgerOnly(store)
        since = T0 + 45 * HOUR_NS
        cases: list[tuple[ReportFilter, Any]] = [
            (ReportFilter(), lambda r: True),
            (ReportFilter(use_case="a"), lambda r: r.use_case == "a"),
            (ReportFilter(user_id="u1"), lambda r: r.user == "u1"),
            (ReportFilter(experience_name="e2"), lambda r: r.experience == "e2"),
            (ReportFilter(use_case_version="v1"), lambda r: r.version == "v1"),
            (ReportFilter(tags=(("tenant", "t2"),)), lambda r: r.tenant == "t2"),
            (ReportFilter(use_case="b", tags=(("tenant", "t1"),)), lambda r: (r.use_case, r.tenant) == ("b", "t1")),
            (ReportFilter(use_cases=("a", "c")), lambda r: r.use_case in ("a", "c")),
            (ReportFilter(since_ns=since), lambda r: r.at >= since),
        ]  # fmt: skip
        for filters, selected in cases:
            for by, reader in ((by, reader) for by in OUTCOME_GROUPINGS for reader in (store, ledger)):
                report = outcome_report(reader, filters, "resolved", by)  # kept totals, then the ledger's
                expected, outside = _expected(runs, selected, by, filters)
                stray = filters.since_ns is None and _counted(filters, "a")  # (recorded before the window)
                outside += 4.0 if stray else 0.0
                where = (filters, by, reader is store)
                assert (report.outside_value, report.outside_outcomes) == (outside, int(stray) + sum(
                    len(r.outcomes) for r in runs if not selected(r) and _counted(filters, r.use_case)
                    and (filters.since_ns is None or r.at >= filters.since_ns))), where  # fmt: skip
                got = {tuple(r.key.values()): r for r in report.rows}
                assert set(got) == set(expected), where
                for key, g in expected.items():
                    r = got[key]
                    assert (r.runs, r.runs_with_outcome, r.outcomes, r.outcome_value, r.calls, r.cost_complete) == (
                        g["runs"], g["with"], g["outcomes"], g["value"], g["calls"], g["complete"]), (where, key)  # fmt: skip
                    assert r.cost_usd == pytest.approx(g["cost"], rel=1e-12), (where, key)
                    assert r.cost_without_outcome_usd == pytest.approx(g["without"], rel=1e-9, abs=0), (where, key)
                    if g["with"] == g["runs"] or g["without"] == 0.0:
                        assert r.cost_without_outcome_usd == 0.0, (where, key)
                order = [(r.cost_usd is None, -(r.cost_usd or 0.0)) for r in report.rows]
                assert order == sorted(order), where
                for limit in (1, 2):  # a page: the first groups, the outcomes outside counted over all
                    page = outcome_report(reader, filters, "resolved", by, limit)
                    assert page.rows == report.rows[:limit], (where, limit)
                    assert page[1:] == report[1:], (where, limit)
        assert {r.key["user_id"]: r.cost_without_outcome_usd for r in outcome_report(store, ReportFilter(), "resolved", "user").rows}["done"] == 0.0
    finally:
        store.close()



# --- over a time window: the runs crossing its ends, the outcomes recorded in it ---------------

W0, W1 = T0 + 10 * HOUR_NS, T0 + 20 * HOUR_NS
"""The window of the next test: [W0, W1)."""

_WINDOW_RUNS: list[tuple[str, str, str, str | None, list[tuple[int, int, int, bool]], list[tuple[int, float]]]] = [
    # run id, use case, user, version, calls (at, input, output, priced), outcomes (recorded at, value)
    ("inside", "a", "u1", "v1", [(W0 + HOUR_NS, 100, 10, True), (W0 + 2 * HOUR_NS, 120, 12, True)], [(W0 + 3 * HOUR_NS, 1.0)]),
    ("inside-none", "a", "u2", "v1", [(W0 + HOUR_NS, 200, 20, True), (W0 + HOUR_NS + 5, 10, 1, False)], []),
    # its first call before the window (unpriced: the window's cost is still complete), its outcome in it
    ("cross-start", "a", "u1", "v2", [(W0 - HOUR_NS, 300, 30, False), (W0 + HOUR_NS, 310, 31, True)], [(W0 + 2 * HOUR_NS, 2.0)]),
    # its outcome after the window: the run is in the window by its first call
    ("cross-end", "a", "u2", "v2", [(W1 - HOUR_NS, 400, 40, True), (W1 + HOUR_NS, 410, 41, True)], [(W1 + 2 * HOUR_NS, 3.0), (W1 + 3 * HOUR_NS, 0.5)]),
    ("cross-none", "a", "u2", "v1", [(W0 - 1, 500, 50, True), (W0, 510, 51, True)], []),
    # calls on both sides, none in the window: outside, its first outcome being in it
    ("cross-gap", "a", "u1", "v1", [(W0 - HOUR_NS, 600, 60, True), (W1 + HOUR_NS, 610, 61, True)], [(W0 + 3 * HOUR_NS, 5.0)]),
    # wholly before: outside when its first outcome is in the window, not at all when before it
    ("before", "a", "u1", "v1", [(W0 - 3 * HOUR_NS, 700, 70, True)], [(W0 + 4 * HOUR_NS, 7.0), (W1 + HOUR_NS, 1.0)]),
    ("before-old", "a", "u2", "v1", [(W0 - 3 * HOUR_NS, 800, 80, True)], [(W0 - 2 * HOUR_NS, 11.0), (W0 + HOUR_NS, 1.0)]),
    # inside, its outcome recorded before the window (record_outcome(run_id=...)): achieved, not outside
    ("inside-early", "a", "u2", "v2", [(W0 + 5 * HOUR_NS, 900, 90, True)], [(W0 - 5 * HOUR_NS, 13.0)]),
    ("unversioned", "a", "u3", None, [(W0 + 7 * HOUR_NS, 50, 5, True)], [(W0 + 7 * HOUR_NS + 5, 1.0)]),  # a None key
    ("b-cross", "b", "u1", "v1", [(W0 - HOUR_NS, 1000, 100, True), (W0 + HOUR_NS, 1010, 101, True)], [(W0 + 2 * HOUR_NS, 17.0)]),
    ("b-after", "b", "u2", "v1", [(W1 + HOUR_NS, 1100, 110, True)], [(W0 + 6 * HOUR_NS, 19.0)]),
]  # fmt: skip


def _window_expected(
    filters: ReportFilter, by: str
) -> tuple[dict[tuple[Any, ...], tuple[int, int, int, float, int, float | None, bool]], int, float]:
    """Per group: (runs, runs with the outcome, outcomes, value, calls in the window, their cost at published
    prices, complete); the outcomes and value outside the selection, by each run's first outcome."""
    low = filters.since_ns if filters.since_ns is not None else -(2**63)
    high = filters.until_ns if filters.until_ns is not None else 2**63 - 1
    groups: dict[tuple[Any, ...], list[Any]] = {}
    outside, outside_value = 0, 0.0
    for run_id, use_case, user, version, calls, outcomes in _WINDOW_RUNS:
        if not _counted(filters, use_case):
            continue
        inside = [c for c in calls if low <= c[0] < high and filters.user_id in (None, user)]
        if not inside:
            if outcomes and low <= min(at for at, _ in outcomes) < high:
                outside, outside_value = outside + len(outcomes), outside_value + sum(v for _, v in outcomes)
            continue
        key = {"use-case": (use_case,), "user": (user,), "version": (use_case, version)}[by]
        g = groups.setdefault(key, [0, 0, 0, 0.0, 0, None, True])
        g[0] += 1
        g[1] += bool(outcomes)
        g[2] += len(outcomes)
        g[3] += sum(v for _, v in outcomes)
        g[4] += len(inside)
        priced = [mini_cost(i, o) for _, i, o, ok in inside if ok]
        if priced:
            g[5] = (g[5] or 0.0) + sum(priced)
        g[6] = g[6] and all(ok for *_, ok in inside)
    return {k: tuple(v) for k, v in groups.items()}, outside, outside_value  # type: ignore[misc]


def test_cost_per_outcome_over_a_window_counts_the_calls_in_it_of_the_runs_crossing_its_ends(
    sqlite_or_postgres: str,
) -> None:
    """Over a time window a run counts by its calls in it: one crossing an end counts with those calls only
    (read from the ledger), one whose calls straddle the window without one in it does not count, and the
    outcomes of the runs left out are counted outside when their first one is in the window. The kept
    reading (each outcome's runs, without reading every run's totals) and the ledger's give the figures of
    published prices, under an open or closed window, a use case and a user."""
    from otel_usecase.report.outcomes import outcome_report
    from otel_usecase.store.outcome_sql import Outcome

    store = open_store(sqlite_or_postgres)
    try:
        calls, outcomes = [], []
        for n, (run_id, use_case, user, version, run_calls, run_outcomes) in enumerate(_WINDOW_RUNS):
            for i, (at, prompt, completion, ok) in enumerate(run_calls):
                calls.append(a_call(trace_id=f"{n:030x}{i:02x}", span_id=f"{n:014x}{i:02x}", start_ns=at,
                                    end_ns=at + 1, use_case=use_case, run_id=run_id, use_case_version=version,
                                    user_id=user, tokens={"input": prompt, "output": completion},
                                    cost_usd=mini_cost(prompt, completion) if ok else None,
                                    status="priced" if ok else "unpriced"))  # fmt: skip
            for i, (at, value) in enumerate(run_outcomes):
                outcomes.append(Outcome(f"{n:032x}", f"{i:016x}", at, None, use_case, run_id, "resolved", value))
        outcomes.append(Outcome("f" * 32, "f" * 16, W0 + 1, None, "a", "no-such-run", "resolved", 23.0))
        outcomes.append(Outcome("e" * 32, "e" * 16, W0 + 1, None, "a", "inside-none", "other", 29.0))
        store.write(calls)
        assert store.write_outcomes(outcomes) == []
        kept, ledger = _Refusing(store, "run_totals"), _LedgerOnly(store)  # (every run's totals)
        for filters, readers in [
            (ReportFilter(since_ns=W0, until_ns=W1), (kept, ledger)),
            (ReportFilter(since_ns=W0), (kept, ledger)),
            (ReportFilter(until_ns=W1), (kept, ledger)),
            (ReportFilter(since_ns=W0, until_ns=W1, use_case="a"), (kept, ledger)),
            (ReportFilter(since_ns=W0, until_ns=W1, use_cases=("b",)), (kept, ledger)),
            (ReportFilter(since_ns=W0, until_ns=W1, user_id="u1"), (store, ledger)),  # (top reads the ledger)
        ]:
            for by, reader in ((by, reader) for by in ("use-case", "user", "version") for reader in readers):
                where = (filters, by, reader is ledger)
                report = outcome_report(reader, filters, "resolved", by)
                expected, outside, outside_value = _window_expected(filters, by)
                stray = filters.use_case in (None, "a") and filters.use_cases is None and filters.user_id is None
                # the outcome of no run: outside whenever its use case is read
                outside, outside_value = outside + stray, outside_value + 23.0 * stray
                if filters.user_id is not None:  # the outcomes of the runs of "a" with no call of u1 in the window
                    outside, outside_value = outside + 1, outside_value + 23.0
                assert (report.outside_outcomes, report.outside_value) == (outside, outside_value), where
                got = {tuple(r.key.values()): r for r in report.rows}
                assert set(got) == set(expected), where
                for key, (runs, with_, count, value, n_calls, cost, complete) in expected.items():
                    r = got[key]
                    assert (r.runs, r.runs_with_outcome, r.outcomes, r.outcome_value, r.calls, r.cost_complete) == (
                        runs, with_, count, value, n_calls, complete), (where, key)  # fmt: skip
                    assert r.cost_usd == pytest.approx(cost, rel=1e-12), (where, key)
                    with_cost = sum(
                        mini_cost(i, o)
                        for run_id, use_case, user, version, run_calls, run_outcomes in _WINDOW_RUNS
                        if run_outcomes and _counted(filters, use_case) and _window_expected_key(by, use_case, user, version) == key
                        for at, i, o, ok in run_calls
                        if ok and _in(filters, at) and filters.user_id in (None, user)
                    )
                    assert r.cost_without_outcome_usd == pytest.approx((cost or 0.0) - with_cost, rel=1e-9, abs=1e-15), (where, key)
                for limit in range(1, len(report.rows) + 1):  # a page names its groups; the rest counted apart
                    page = outcome_report(reader, filters, "resolved", by, limit)
                    assert page.rows == report.rows[:limit], (where, limit)
                    assert page[1:] == report[1:], (where, limit)
    finally:
        store.close()


def _window_expected_key(by: str, use_case: str, user: str, version: str | None) -> tuple[Any, ...]:
    return {"use-case": (use_case,), "user": (user,), "version": (use_case, version)}[by]


def _in(filters: ReportFilter, at: int) -> bool:
    return (filters.since_ns is None or at >= filters.since_ns) and (filters.until_ns is None or at < filters.until_ns)
