"""The cost engine end to end: real openai client -> real instrumentation -> exporter -> SQLite -> report.

Expected costs are computed from published per-million-token prices (see ``tests/expect.py``), never
from the code under test.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from otel_usecase import UseCaseCostExporter, track, track_context
from otel_usecase.cli import main as cli_main
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import (
    EMBED_SMALL_IN,
    GPT4O_CACHED,
    GPT4O_IN,
    GPT4O_OUT,
    MINI_CACHED,
    MINI_IN,
    MINI_OUT,
    O3_MINI_IN,
    O3_MINI_OUT,
    M,
    openai_cost,
    report_json,
)
from .rigs import CostRig

MSG = [{"role": "user", "content": "hello"}]


def test_cached_tokens_are_priced_at_the_cached_rate(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=12_000, completion_tokens=800, cached_tokens=10_000))
    with track_context("document_summarization", user_id="u-42"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    (row,) = rig.report()
    expected = openai_cost(12_000, 800, 10_000, MINI_IN, MINI_OUT, MINI_CACHED)
    assert row["use_case"] == "document_summarization"
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (12_000, 800, 10_000)
    assert (row["runs"], row["calls"], row["unpriced_calls"]) == (1, 1, 0)


def test_reasoning_tokens_are_counted_once_as_output(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=2_000, completion_tokens=5_000, reasoning_tokens=4_000))
    with track_context("planning"):
        client.chat.completions.create(model="o3-mini", messages=MSG)
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx((2_000 * O3_MINI_IN + 5_000 * O3_MINI_OUT) / M, rel=1e-9)
    assert (row["output_tokens"], row["reasoning_tokens"]) == (5_000, 4_000)


def test_runs_users_experiences_and_steps(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    per_call = openai_cost(1_000, 100, 0, MINI_IN, MINI_OUT, MINI_CACHED)

    @track(use_case_name="document_chatbot", experience_name="support_chat")
    def answer() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)

    with track_context(user_id="alice"):
        answer()
        answer()
    with track_context("summarize", user_id="bob"):
        with track_context(use_case_step="retrieve"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        with track_context(use_case_step="write"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)

    by_case = {r["use_case"]: r for r in rig.report()}
    assert by_case["document_chatbot"]["runs"] == 2 and by_case["document_chatbot"]["calls"] == 4
    assert by_case["document_chatbot"]["avg_run_cost_usd"] == pytest.approx(2 * per_call)
    assert by_case["summarize"]["runs"] == 1 and by_case["summarize"]["p95_run_cost_usd"] == pytest.approx(
        3 * per_call
    )

    by_user = {r["user_id"]: r for r in rig.report("user")}
    assert by_user["alice"]["cost_usd"] == pytest.approx(4 * per_call)
    assert by_user["bob"]["cost_usd"] == pytest.approx(3 * per_call)

    by_step = {(r["use_case"], r["step"]): r["calls"] for r in rig.report("step")}
    assert by_step == {("summarize", "retrieve"): 1, ("summarize", "write"): 2, ("document_chatbot", None): 4}

    experiences = rig.report("experience")
    chats = [r for r in experiences if r["experience_name"] == "support_chat"]
    assert len(chats) == 2  # each answer() opened its own support_chat instance
    assert all(r["calls"] == 2 and r["cost_usd"] == pytest.approx(2 * per_call) for r in chats)

    runs = rig.report("run", use_case="summarize")
    assert len(runs) == 1 and runs[0]["calls"] == 3


def test_streaming_with_and_without_usage(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=3_000, completion_tokens=700))
    with track_context("stream_case"):
        for _ in client.chat.completions.create(
            model="gpt-4o", messages=MSG, stream=True, stream_options={"include_usage": True}
        ):
            pass
        for _ in client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True):
            pass
    (row,) = rig.report()
    assert row["calls"] == 2
    assert row["no_usage_calls"] == 1  # counted, not silently dropped and not priced at $0
    assert row["cost_usd"] == pytest.approx((3_000 * GPT4O_IN + 700 * GPT4O_OUT) / M, rel=1e-9)


def test_embeddings_are_priced(rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=50_000, completion_tokens=0))
    with track_context("indexing"):
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    (row,) = rig.report()
    assert row["cost_usd"] == pytest.approx(50_000 * EMBED_SMALL_IN / M, rel=1e-9)


def test_unknown_model_is_unpriced_never_zero(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    with caplog.at_level(logging.WARNING):
        with track_context("mystery"):
            for _ in range(3):
                client.chat.completions.create(model="acme-llm-9000", messages=MSG)
        rig.flush()
    (row,) = rig.report()
    assert row["unpriced_calls"] == 3 and row["calls"] == 3
    assert row["input_tokens"] == 3_000  # tokens are kept
    warnings = [r for r in caplog.records if "acme-llm-9000" in r.getMessage()]
    assert len(warnings) == 1  # once per model

    table = _cli(["report", "--store", rig.store_url])
    assert "3 unpriced calls" in table


def test_prices_file_overrides_and_azure_deployment_alias(
    store_url: str, tmp_path: Path, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."acme-llm-9000"]\ninput = 3.0\noutput = 12.0\ncache_read = 0.3\n\n'
        '[aliases]\n"my-gpt4o-prod" = "gpt-4o"\n'
    )
    rig = CostRig(store_url, prices=str(prices))
    try:
        fake_openai.respond(
            usage=FakeUsage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=4_000)
        )
        with track_context("custom_model"):
            client.chat.completions.create(model="acme-llm-9000", messages=MSG)
        with track_context("azure_deployment"):
            client.chat.completions.create(model="my-gpt4o-prod", messages=MSG)
        by_case = {r["use_case"]: r for r in rig.report()}
    finally:
        rig.close()
    assert by_case["custom_model"]["cost_usd"] == pytest.approx(
        (6_000 * 3.0 + 4_000 * 0.3 + 1_000 * 12.0) / M
    )
    assert by_case["azure_deployment"]["cost_usd"] == pytest.approx(
        openai_cost(10_000, 1_000, 4_000, GPT4O_IN, GPT4O_OUT, GPT4O_CACHED)
    )
    assert by_case["azure_deployment"]["unpriced_calls"] == 0


def test_same_batch_exported_twice_counts_once(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=500))
    with track_context("retry_case"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    rig.flush()
    spans = rig.captured.get_finished_spans()
    rig.exporter.export(spans)  # the retry of a batch that was already written
    rig.exporter.export(spans)
    (row,) = rig.report()
    assert row["calls"] == 1
    assert row["cost_usd"] == pytest.approx(openai_cost(1_000, 500, 0, MINI_IN, MINI_OUT, MINI_CACHED))


def test_both_openai_instrumentations_count_each_request_once(
    store_url: str, tmp_path: Path, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    rig = CostRig(store_url, both_instrumentations=True)
    try:
        fake_openai.respond(usage=FakeUsage(prompt_tokens=2_000, completion_tokens=300))
        with track_context("double_instrumented"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            for _ in client.chat.completions.create(
                model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}
            ):
                pass
        (row,) = rig.report()
    finally:
        rig.close()
    llm_spans = [
        s for s in rig.captured.get_finished_spans() if "gen_ai.operation.name" in (s.attributes or {})
    ]
    scopes = {s.instrumentation_scope.name for s in llm_spans if s.instrumentation_scope}
    assert {"opentelemetry.instrumentation.openai.v1", "opentelemetry.instrumentation.openai_v2"} <= scopes
    assert len(llm_spans) == 4
    expected = 2 * openai_cost(2_000, 300, 0, MINI_IN, MINI_OUT, MINI_CACHED)
    assert (row["calls"], row["no_usage_calls"]) == (2, 0)
    assert row["cost_usd"] == pytest.approx(expected)

    # Each span in a batch of its own (a batch boundary between the two spans of one request):
    # the processor's usecase.call.span_id mark still lands them on one ledger row.
    other_store = "sqlite:///" + str(tmp_path / "one_span_batches.db")
    exporter = UseCaseCostExporter(store=other_store)
    for span in llm_spans:
        exporter.export([span])
    exporter.shutdown()
    (alone,) = report_json(other_store)
    assert (alone["calls"], alone["no_usage_calls"]) == (2, 0)
    assert alone["cost_usd"] == pytest.approx(expected)


def test_restart_between_two_calls_of_one_run(
    store_url: str, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=1_000))
    for _ in range(2):  # two process lifetimes of the same exporter configuration
        rig = CostRig(store_url)
        try:
            with track_context("long_running", use_case_id="ticket-4711"):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        finally:
            rig.close()
    (row,) = report_json(store_url, "run")
    assert (row["run_id"], row["calls"]) == ("ticket-4711", 2)
    assert row["cost_usd"] == pytest.approx(2 * openai_cost(1_000, 1_000, 0, MINI_IN, MINI_OUT, MINI_CACHED))


def test_untracked_calls_are_grouped_by_trace(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=100, completion_tokens=10))
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    (row,) = rig.report()
    assert row["use_case"] == "(untracked)" and row["runs"] == 2 and row["calls"] == 2


WRITER = """
import sys, openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from otel_usecase import UseCaseCostExporter, UseCaseSpanProcessor, track_context
store, base_url, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
provider = TracerProvider()
provider.add_span_processor(UseCaseSpanProcessor())
provider.add_span_processor(BatchSpanProcessor(UseCaseCostExporter(store=store), max_export_batch_size=7))
OpenAIInstrumentor().instrument(tracer_provider=provider)
client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
for i in range(n):
    with track_context("shared_file", use_case_id=f"{who}-{i % 5}", user_id=who):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
provider.shutdown()
"""


def test_two_processes_write_to_one_sqlite_file(
    store_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=200, cached_tokens=500))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    n = 40
    procs = [
        subprocess.Popen([sys.executable, str(script), store_url, fake_openai.base_url, who, str(n)])
        for who in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    by_user = {r["user_id"]: r for r in report_json(store_url, "user")}
    per_call = openai_cost(1_000, 200, 500, MINI_IN, MINI_OUT, MINI_CACHED)
    for who in ("p1", "p2"):
        assert by_user[who]["calls"] == n
        assert by_user[who]["runs"] == 5
        assert by_user[who]["cost_usd"] == pytest.approx(n * per_call)


def test_entry_point_under_opentelemetry_instrument(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=4_000, completion_tokens=1_000, cached_tokens=1_000))
    store_url = "sqlite:///" + str(tmp_path / "zero.db")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "usecase",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_USECASE_STORE": store_url,
    }
    app = Path(__file__).parent / "apps" / "zero_code_app.py"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "opentelemetry-instrument"),
            sys.executable,
            str(app),
            fake_openai.base_url,
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = _cli(["report", "--by", "run", "--format", "json", "--store", store_url])
    (row,) = json.loads(out)
    assert row["use_case"] == "zero_code_case" and row["calls"] == 1  # both instrumentations, one call
    assert row["cost_usd"] == pytest.approx(openai_cost(4_000, 1_000, 1_000, MINI_IN, MINI_OUT, MINI_CACHED))


def _cli(argv: list[str]) -> str:
    """Run the real console script."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "otel-usecase"), *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", "--store", "mysql://x/y"]) == 2
    assert "unknown scheme 'mysql'" in capsys.readouterr().err
    bad = tmp_path / "prices.toml"
    bad.write_text('[models."m"]\ninput = 1.0\nouput = 2.0\n')
    assert cli_main(["prices", "m", "--prices", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 3" in err and "ouput" in err
    assert cli_main(["report", "--by", "colour", "--store", "sqlite:///" + str(tmp_path / "x.db")]) == 2
    assert "--by 'colour' is not one of use-case" in capsys.readouterr().err
    assert (
        cli_main(["report", "--since", "yesterday-ish", "--store", "sqlite:///" + str(tmp_path / "x.db")])
        == 2
    )
    assert "--since 'yesterday-ish'" in capsys.readouterr().err


def test_cli_prices_shows_price_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["prices", "gpt-4o-mini", "--provider", "openai"]) == 0
    out = capsys.readouterr().out
    assert "$0.15 per 1M" in out and "$0.6 per 1M" in out and "$0.075 per 1M" in out
    assert "genai-prices" in out
    assert cli_main(["prices", "acme-llm-9000"]) == 1


def test_runs_show_lists_the_calls(rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    with track_context("show_me", use_case_id="run-abc"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        client.chat.completions.create(model="gpt-4o", messages=MSG)
    rig.flush()
    out = _cli(["runs", "show", "run-abc", "--store", rig.store_url])
    assert "gpt-4o-mini" in out and "gpt-4o" in out and "over 2 calls" in out
    calls = json.loads(_cli(["runs", "show", "run-abc", "--format", "json", "--store", rig.store_url]))
    assert [c["model"] for c in calls] == ["gpt-4o-mini", "gpt-4o"]
    assert all(len(c["trace_id"]) == 32 and len(c["span_id"]) == 16 for c in calls)


def test_ledger_columns_are_the_call_fields(store_url: str) -> None:
    """A Call is written as its own row: the table SQLite created has its fields by name, ``tokens`` spread
    into one ``<class>_tokens`` column per token class, and each value lands in its own column."""
    import sqlite3

    from otel_usecase.cost.calls import Call
    from otel_usecase.cost.token_classes import TOKEN_CLASSES
    from otel_usecase.store import open_store

    fields = list(Call._fields)
    at = fields.index("tokens")
    expected = (*fields[:at], *(f"{c.name}_tokens" for c in TOKEN_CLASSES), *fields[at + 1 :])
    store = open_store(store_url)
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(usecase_calls)"))
    assert columns == expected
    assert {"input_audio_tokens", "output_audio_tokens", "cost_source", "unpriced_reason"} <= set(columns)
    # Every field and every class with a value of its own: a shifted column reads back wrong.
    tokens = {c.name: 1_000 + i for i, c in enumerate(TOKEN_CLASSES)}
    call = Call(
        trace_id="t" * 32, span_id="s" * 16, start_ns=1, end_ns=2, service="svc", use_case="uc", run_id="run",
        use_case_version="v", step="st", experience_name="en", experience_id="ei", user_id="u", provider="p",
        model="m", operation="chat", tokens=tokens, cost_usd=0.25, status="priced", cost_source="provider",
        price_source="ps", price_context="service_tier=priority", unpriced_reason="ur", computed_cost_usd=0.5,
        error=1, tags={"tenant": "acme", "team": "search"},
    )  # fmt: skip
    assert store.write([call]) == []
    store.close()
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        (row,) = conn.execute("SELECT * FROM usecase_calls").fetchall()
    for name in fields:
        if name == "tags":
            assert row[name] == '{"team":"search","tenant":"acme"}'
        elif name != "tokens":
            assert row[name] == getattr(call, name), name
    for name, count in tokens.items():
        assert row[f"{name}_tokens"] == count, name


def _ledger(store_url: str) -> list[tuple[object, ...]]:
    """Every ledger row's (status, cost_usd, input_tokens, output_tokens), oldest call first."""
    from otel_usecase.store import open_store

    store = open_store(store_url)
    try:
        return store.query(
            "SELECT status, cost_usd, input_tokens, output_tokens FROM usecase_calls ORDER BY start_ns"
        )
    finally:
        store.close()


def test_partial_usage_is_a_lower_bound_never_priced_as_complete(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_usecase.cost.usage import MAX_TOKEN_COUNT

    with caplog.at_level(logging.WARNING), track_context("partial_case"):
        # The provider reports an impossible prompt count: the real instrumentation copies it.
        fake_openai.respond(usage=FakeUsage(prompt_tokens=2**63, completion_tokens=400))
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        fake_openai.respond(usage=FakeUsage(prompt_tokens=MAX_TOKEN_COUNT + 1, completion_tokens=100))
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        # A careless instrumentation writes the input count as text nobody can read.
        tracer = rig.provider.get_tracer("acme.llm.instrumentation")
        with tracer.start_as_current_span(
            "chat gpt-4o-mini", attributes={"gen_ai.operation.name": "chat"}
        ) as span:
            span.set_attributes(
                {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": "n/a",
                    "gen_ai.usage.output_tokens": "250",
                }
            )
        rig.flush()
    rows = _ledger(rig.store_url)
    assert [r[0] for r in rows] == ["partial", "partial", "priced", "partial"]
    assert [(r[2], r[3]) for r in rows] == [(None, 400), (None, 100), (1_000, 100), (None, 250)]
    assert [r[1] for r in rows] == pytest.approx(
        [400 * MINI_OUT / M, 100 * MINI_OUT / M, (1_000 * MINI_IN + 100 * MINI_OUT) / M, 250 * MINI_OUT / M]
    )
    warned = [r.getMessage() for r in caplog.records if "gen_ai.usage.input_tokens" in r.getMessage()]
    assert warned and str(2**63) in warned[0]
