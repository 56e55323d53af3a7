"""Tags: ``track_context(tags={"tenant": "acme"})`` stamped, stored, filtered and grouped.

Costs are computed here from published prices (tests/expect.py): each gpt-4o-mini call of these tests
costs 10 * $0.15/M + 5 * $0.60/M unless a test says otherwise.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import context, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_usecase import (
    BudgetExceeded,
    Scope,
    UseCaseSpanProcessor,
    UseCaseWarning,
    check_budget,
    current_scope,
    track,
    track_context,
)
from otel_usecase.budgets import budget_status
from otel_usecase.budgets import registry as budget_registry
from otel_usecase.metrics import CostMetrics
from otel_usecase.scope.propagation import UseCaseBaggagePropagator
from otel_usecase.scope.validation import normalised_id
from otel_usecase.store import open_store
from otel_usecase.store.base import ReportFilter
from otel_usecase.testing import FakeOpenAI

from .builders import a_call
from .conftest import Traced
from .expect import mini_cost
from .rigs import CostRig
from .servers import LoopbackHTTPServer, ServeProcess

COST = mini_cost(10, 5)
MSG = [{"role": "user", "content": "hello"}]
BIN = Path(sys.executable).parent


def _stored(store_url: str, calls: list[Any]) -> None:
    store = open_store(store_url)
    try:
        assert store.write(calls) == []
    finally:
        store.close()


def _calls_by_tags() -> list[Any]:
    """Four calls in three runs: acme/search (2 calls), acme/billing, globex/search; and one without tags."""
    return [
        a_call(span_id="1" * 16, run_id="r1", cost_usd=COST, tags={"tenant": "acme", "team": "search"}),
        a_call(span_id="2" * 16, run_id="r1", cost_usd=COST, tags={"tenant": "acme", "team": "search"}),
        a_call(span_id="3" * 16, run_id="r2", cost_usd=COST, tags={"tenant": "acme", "team": "billing"}),
        a_call(span_id="4" * 16, run_id="r3", cost_usd=COST, tags={"tenant": "globex", "team": "search"}),
        a_call(span_id="5" * 16, run_id="r4", cost_usd=COST),
    ]


def _filtered(store_url: str, *tags: tuple[str, str]) -> tuple[int, float]:
    """(calls, cost) of the use-case groups a report with the tag filters ``tags`` reads."""
    store = open_store(store_url, create=False)
    try:
        rows = store.group_totals(["use_case"], ReportFilter(tags=tags))
    finally:
        store.close()
    at_calls = 1 + 1  # the key, then runs, then calls
    return sum(row[at_calls] for row in rows), sum(row[-5] or 0 for row in rows)


def test_tags_are_stored_as_one_canonical_json_column_and_read_back(sqlite_or_postgres: str) -> None:
    tags = {"tenant": "acmé", "team": "search"}  # non-ASCII kept as is, keys sorted
    _stored(sqlite_or_postgres, [a_call(tags=tags), a_call(span_id="f" * 16, run_id="r")])
    store = open_store(sqlite_or_postgres, create=False)
    try:
        stored = store.query("SELECT span_id, tags FROM usecase_calls ORDER BY span_id")
        assert stored == [("0" * 15 + "1", '{"team":"search","tenant":"acmé"}'), ("f" * 16, None)]
        first, second = store.run_calls("r")
    finally:
        store.close()
    assert dict(first.tags) == tags
    assert dict(second.tags) == {}


def test_report_filters_by_every_tag_given_in_both_stores(sqlite_or_postgres: str) -> None:
    _stored(sqlite_or_postgres, _calls_by_tags())
    assert _filtered(sqlite_or_postgres) == (5, pytest.approx(5 * COST))
    assert _filtered(sqlite_or_postgres, ("tenant", "acme")) == (3, pytest.approx(3 * COST))
    assert _filtered(sqlite_or_postgres, ("team", "search")) == (3, pytest.approx(3 * COST))
    assert _filtered(sqlite_or_postgres, ("tenant", "acme"), ("team", "search")) == (
        2,
        pytest.approx(2 * COST),
    )
    assert _filtered(sqlite_or_postgres, ("tenant", "initech")) == (0, 0)
    assert _filtered(sqlite_or_postgres, ("region", "eu")) == (0, 0)
    # --by run --format json is the store's own SQL: the same filter applies there
    store = open_store(sqlite_or_postgres, create=False)
    try:
        runs = store.runs_json(ReportFilter(tags=(("tenant", "acme"),)))
        per_run = store.run_totals(["use_case"], ReportFilter(tags=(("team", "billing"),)))
    finally:
        store.close()
    assert runs is not None and '"run_id":"r1"' in runs and '"run_id":"r2"' in runs and "r3" not in runs
    assert [row[1] for row in per_run] == [1]  # r2's one call


def test_a_tag_filter_key_that_breaks_the_name_rule_is_refused_by_name(store_url: str) -> None:
    _stored(store_url, _calls_by_tags())
    store = open_store(store_url, create=False)
    try:
        with pytest.raises(ValueError, match=r"tag key='a\"b' is not a valid name"):
            store.group_totals(["use_case"], ReportFilter(tags=(('a"b', "x"),)))
    finally:
        store.close()


def test_a_schema_3_ledger_gains_the_tags_column_and_its_calls_read_as_untagged(store_url: str) -> None:
    _stored(store_url, [a_call(span_id="1" * 16)])
    path = store_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # what an otel-usecase of schema 3 left
        for name in ("insert", "update"):  # (no rollups either: schema 5)
            conn.execute(f"DROP TRIGGER usecase_calls_rollup_{name}")
        conn.execute("ALTER TABLE usecase_calls DROP COLUMN tags")
        conn.execute("UPDATE otel_usecase_meta SET value = '3' WHERE key = 'schema_version'")
    reader = open_store(store_url, create=False)  # a report never upgrades: the tag filter matches nothing
    try:
        assert reader.group_totals(["use_case"], ReportFilter(tags=(("tenant", "acme"),))) == []
        assert [dict(c.tags) for c in reader.run_calls("r")] == [{}]
    finally:
        reader.close()
    _stored(store_url, [a_call(span_id="2" * 16, tags={"tenant": "acme"})])  # a writer upgrades
    assert _filtered(store_url, ("tenant", "acme"))[0] == 1
    assert _filtered(store_url)[0] == 2


# --- scopes: track_context / @track --------------------------------------------------------------


def test_scope_tags_are_inherited_overridden_and_checked() -> None:
    with track_context("support", tags={"tenant": "acme", "team": "search"}) as outer:
        assert dict(outer.tags) == {"tenant": "acme", "team": "search"}
        with pytest.raises(TypeError):  # a scope is frozen, its tags too
            outer.tags["tenant"] = "globex"  # type: ignore[index]
        with track_context(use_case_step="answer", tags={"team": "billing", "flag": "beta"}) as inner:
            assert dict(inner.tags) == {"tenant": "acme", "team": "billing", "flag": "beta"}
        with track_context("other_use_case") as other:  # a new run still carries the tenant
            assert dict(other.tags) == {"tenant": "acme", "team": "search"}
    with track_context("support", tags={"ticket": 42}) as converted:  # int ids are converted, as ids are
        assert dict(converted.tags) == {"ticket": "42"}


def test_a_bad_tag_key_raises_naming_it_and_the_rule() -> None:
    with pytest.raises(ValueError, match=r"tag key='tenant id' is not a valid name: use only letters"):
        track_context("support", tags={"tenant id": "acme"})
    with pytest.raises(ValueError, match=r"tag key='x{65}' is not a valid name"):
        track_context("support", tags={"x" * 65: "acme"})
    with pytest.raises(TypeError, match=r"tags=\['tenant'\] is not a mapping"):
        track_context("support", tags=["tenant"])  # type: ignore[arg-type]


def test_a_bad_tag_value_is_normalised_with_a_warning_never_raised() -> None:
    with pytest.warns(UseCaseWarning, match=r"tags\['tenant'\]='acme\\nx' breaks the id rule"):
        manager = track_context("support", tags={"tenant": "acme\nx"})
    with manager as scope:
        assert scope.tags["tenant"] == normalised_id("acme\nx") != "acme\nx"


def test_more_than_ten_tags_after_merging_are_dropped_with_a_warning_naming_them() -> None:
    outer = track_context("support", tags={f"k{i}": "v" for i in range(8)})
    inner = track_context(tags={"k0": "new", "extra1": "a", "extra2": "b", "extra3": "c", "extra4": "d"})
    with outer:
        with pytest.warns(UseCaseWarning, match=r"tags 'extra3', 'extra4' dropped: a scope holds at most 10"):
            scope = inner.__enter__()
        inner.__exit__(None, None, None)
    assert len(scope.tags) == 10
    assert scope.tags["k0"] == "new" and "extra2" in scope.tags and "extra3" not in scope.tags


def test_track_decorator_takes_tags(rig: CostRig, client: openai.OpenAI) -> None:
    @track("summarize", tags={"tenant": "acme"})
    def summarize() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]

    summarize()
    (row,) = rig.report("tag:tenant")
    assert (row["tag:tenant"], row["calls"], row["cost_usd"]) == ("acme", 1, pytest.approx(COST))


# --- through real calls: stamped, stored, filtered and grouped ---------------------------------------


def _spend_tagged(rig: CostRig, client: openai.OpenAI) -> None:
    """acme/search: 2 calls, acme/billing: 1 call (an inner scope overriding the team), globex: 1, none: 1."""

    def ask() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]

    with track_context("support", tags={"tenant": "acme", "team": "search"}):
        ask()
        ask()
        with track_context(use_case_step="refund", tags={"team": "billing"}):
            ask()
    with track_context("support", tags={"tenant": "globex"}):
        ask()
    with track_context("support"):
        ask()
    rig.flush()


def _cli_report(store_url: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "otel-usecase"), "report", "--store", store_url, "--format", "json", *args],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_tags_are_stamped_stored_and_reported_by_the_cli_in_both_stores(
    sqlite_or_postgres: str, client: openai.OpenAI
) -> None:
    rig = CostRig(sqlite_or_postgres)
    try:
        _spend_tagged(rig, client)
        stamped = [
            s.attributes or {} for s in rig.captured.get_finished_spans() if s.name.startswith("openai")
        ]
    finally:
        rig.close()
    assert sorted(
        (a.get("usecase.tag.tenant", ""), a.get("usecase.tag.team", ""), a.get("usecase.tags", ""))
        for a in stamped
    ) == [
        ("", "", ""),
        ("acme", "billing", "team,tenant"),
        ("acme", "search", "team,tenant"),
        ("acme", "search", "team,tenant"),
        ("globex", "", "tenant"),
    ]
    by_tenant = {
        r["tag:tenant"]: (r["calls"], r["cost_usd"])
        for r in _cli_report(sqlite_or_postgres, "--by", "tag:tenant")
    }
    assert by_tenant == {
        "acme": (3, pytest.approx(3 * COST)),
        "globex": (1, pytest.approx(COST)),
        None: (1, pytest.approx(COST)),  # calls without the tag: one row, no value
    }
    rows = _cli_report(sqlite_or_postgres, "--tag", "tenant=acme", "--tag", "team=search")
    assert [(r["calls"], r["cost_usd"]) for r in rows] == [(2, pytest.approx(2 * COST))]
    by_team = {
        r["tag:team"]: r["calls"]
        for r in _cli_report(sqlite_or_postgres, "--by", "tag:team", "--tag", "tenant=acme")
    }
    assert by_team == {"search": 2, "billing": 1}
    runs = _cli_report(sqlite_or_postgres, "--by", "run", "--tag", "tenant=globex")  # the store's own JSON
    assert [(r["calls"], r["cost_usd"]) for r in runs] == [(1, pytest.approx(COST))]


def test_report_table_groups_by_a_tag_and_bad_options_are_usage_errors(
    rig: CostRig, client: openai.OpenAI
) -> None:
    _spend_tagged(rig, client)
    table = subprocess.run(
        [str(BIN / "otel-usecase"), "report", "--store", rig.store_url, "--by", "tag:tenant"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "tag:tenant" in table and "acme" in table and "globex" in table
    for args, message in (
        (["--tag", "tenant"], "--tag 'tenant' is not KEY=VALUE"),
        (["--tag", "ten ant=acme"], "--tag 'ten ant=acme' is not KEY=VALUE"),
        (["--by", "tag:ten ant"], "the tag key 'ten ant' is not a valid name"),
        (["--by", "tenant"], "--by 'tenant' is not one of use-case"),
    ):
        done = subprocess.run(
            [str(BIN / "otel-usecase"), "report", "--store", rig.store_url, *args],
            check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


# --- across services: baggage and the trust rules --------------------------------------------------


class Downstream(LoopbackHTTPServer):
    """Service B: extracts each request's context with its own propagator, then calls the LLM (no scope)."""

    def __init__(self, llm: openai.OpenAI) -> None:
        self.extractor: TextMapPropagator = UseCaseBaggagePropagator()
        self.scopes: list[Scope | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                token = context.attach(
                    outer.extractor.extract(headers, TraceContextTextMapPropagator().extract(headers))
                )
                try:
                    outer.scopes.append(current_scope())
                    llm.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
                finally:
                    context.detach(token)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        super().__init__(Handler, "/answer")


@pytest.fixture
def downstream(client: openai.OpenAI) -> Iterator[Downstream]:
    with Downstream(client) as service:
        yield service


@pytest.fixture
def sending_with() -> Iterator[Callable[[TextMapPropagator], None]]:
    """Service A's global propagator: ``tracecontext`` + the given baggage propagator (restored after)."""
    previous = propagate.get_global_textmap()

    def install(baggage_propagator: TextMapPropagator) -> None:
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), baggage_propagator])
        )

    try:
        yield install
    finally:
        propagate.set_global_textmap(previous)


def _tags_on_llm_spans(traced: Traced) -> list[dict[str, str]]:
    """The ``usecase.tag.<key>`` attributes (by key) and the ``usecase.tags`` list (``*``) of each LLM span."""
    tags = []
    for span in traced.llm_spans():
        attributes = span.attributes or {}
        found = {
            k.removeprefix("usecase.tag."): str(v)
            for k, v in attributes.items()
            if k.startswith("usecase.tag.")
        }
        if "usecase.tags" in attributes:
            found["*"] = str(attributes["usecase.tags"])
        tags.append(found)
    traced.exporter.clear()
    return tags


def test_tags_travel_as_baggage_and_are_accepted_only_where_the_trust_rules_allow(
    traced: Traced,
    downstream: Downstream,
    instrumented_httpx: None,
    sending_with: Callable[[TextMapPropagator], None],
) -> None:
    sending_with(UseCaseBaggagePropagator())  # A sends all our keys but user.id: tags included by default
    with track_context("support", tags={"tenant": "acme", "team": "search"}) as scope:
        downstream.extractor = UseCaseBaggagePropagator(
            accept_inbound="usecase.name,usecase.id,usecase.tag.*"
        )
        httpx.post(downstream.url, json={})
        downstream.extractor = UseCaseBaggagePropagator(accept_inbound="usecase.name,usecase.id")
        httpx.post(downstream.url, json={})
        downstream.extractor = UseCaseBaggagePropagator()  # an edge: accepts none of our keys
        httpx.post(downstream.url, json={})
        downstream.extractor = W3CBaggagePropagator()  # an internal service with the standard propagator
        httpx.post(downstream.url, json={})
    trusted, without_tags, edge, internal = downstream.scopes
    assert internal is not None and dict(internal.tags) == {"tenant": "acme", "team": "search"}
    assert trusted is not None and trusted.use_case_id == scope.use_case_id
    assert dict(trusted.tags) == {"tenant": "acme", "team": "search"}
    assert without_tags is not None and dict(without_tags.tags) == {}
    assert edge is None
    both = {"tenant": "acme", "team": "search", "*": "team,tenant"}
    assert _tags_on_llm_spans(traced) == [both, {}, {}, both]

    sending_with(UseCaseBaggagePropagator(send_outbound="usecase.name,usecase.id"))  # A keeps its tags home
    downstream.extractor = UseCaseBaggagePropagator(accept_inbound="all")
    with track_context("support", tags={"tenant": "acme"}):
        httpx.post(downstream.url, json={})
    assert downstream.scopes[-1] is not None and dict(downstream.scopes[-1].tags) == {}


def test_hostile_inbound_tags_are_checked_like_a_local_scope(downstream: Downstream, traced: Traced) -> None:
    downstream.extractor = UseCaseBaggagePropagator(accept_inbound="all")
    many = ",".join(f"usecase.tag.k{i:02d}=v" for i in range(12))
    header = f"usecase.name=support,usecase.tag.tenant=acme%0Acorp,usecase.tag.a+b=x,{many}"
    response = httpx.post(downstream.url, json={}, headers={"baggage": header})
    assert response.status_code == 200
    (scope,) = downstream.scopes
    assert scope is not None
    assert scope.tags["tenant"] == normalised_id("acme\ncorp")  # normalised as an id, never raised
    assert "a+b" not in scope.tags  # not a name: dropped
    assert len(scope.tags) == 10  # bounded: the rest dropped
    (stamped,) = _tags_on_llm_spans(traced)
    assert stamped["tenant"] == normalised_id("acme\ncorp") and len(stamped) == 11  # 10 tags and the list


# --- serve: the OTLP path ------------------------------------------------------------------------------


def _otlp_span(span_id: str, attributes: dict[str, str]) -> dict[str, Any]:
    """One gpt-4o-mini chat span as OTLP/JSON (10 input, 5 output tokens), with string ``attributes``."""
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "openai.chat",
        "startTimeUnixNano": str(1_760_000_000_000_000_000),
        "endTimeUnixNano": str(1_760_000_001_000_000_000),
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.response.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "5"}},
            *({"key": k, "value": {"stringValue": v}} for k, v in attributes.items()),
        ],
    }


def test_serve_stores_the_tags_of_spans_from_any_sender(store_url: str, fake_openai: FakeOpenAI) -> None:
    """From this package's processor (through the SDK's OTLP exporter) and from a sender without it (OTLP/JSON
    with only ``usecase.tag.<key>`` attributes, or a ``usecase.tags`` list that does not match them)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    with ServeProcess(store_url) as served:
        provider = TracerProvider()
        provider.add_span_processor(UseCaseSpanProcessor())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=served.http_url)))
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            llm = openai.OpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0)
            with track_context("sdk_app", tags={"tenant": "acme"}):
                llm.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
        spans = [
            _otlp_span("eee19b7ec3c1b174", {"usecase.name": "json_app", "usecase.tag.tenant": "globex"}),
            _otlp_span(
                "eee19b7ec3c1b175",
                {"usecase.name": "json_app", "usecase.tags": "tenant,ghost", "usecase.tag.team": "ops\u0007"},
            ),
        ]
        body = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "go-app"}, "spans": spans}]}]}
        response = httpx.post(served.http_url, json=body, timeout=30)
        assert response.status_code == 200 and response.json() == {}, response.text
        assert served.healthz()["calls_written"] == 3
    store = open_store(store_url, create=False)
    try:
        stored = [row[0] for row in store.query("SELECT tags FROM usecase_calls")]
    finally:
        store.close()
    assert sorted(stored) == [
        '{"team":"' + normalised_id("ops\u0007") + '"}',  # the tags it has, whatever list came with it
        '{"tenant":"acme"}',
        '{"tenant":"globex"}',
    ]
    by_tenant = {
        r["tag:tenant"]: (r["calls"], r["cost_usd"]) for r in _cli_report(store_url, "--by", "tag:tenant")
    }
    assert by_tenant == {
        "acme": (1, pytest.approx(COST)),
        "globex": (1, pytest.approx(COST)),
        None: (1, pytest.approx(COST)),
    }


# --- budgets: the tag selector ---------------------------------------------------------------------


@pytest.fixture
def budgets_refresh_fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Trackers refresh every 0.3 s (5 s by default), and none outlives the test."""
    monkeypatch.setenv("OTEL_USECASE_BUDGET_REFRESH_S", "0.3")
    budget_registry.reset()
    yield
    budget_registry.reset()


def _wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_a_block_budget_on_a_tag_blocks_that_tenant_only_in_both_stores(
    sqlite_or_postgres: str, client: openai.OpenAI, budgets_refresh_fast: None
) -> None:
    done = subprocess.run(
        [str(BIN / "otel-usecase"), "budgets", "set", "acme-cap", "--use-case", "support", "--tag", "tenant=acme",
         "--amount", str(1.5 * COST), "--mode", "block", "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "budget 'acme-cap' set" in done.stdout
    rig = CostRig(sqlite_or_postgres)
    try:
        tracker = budget_registry.tracker_for(sqlite_or_postgres)
        _wait_until(
            lambda: any(v.budget.name == "acme-cap" for v in tracker.view()), "the tracker to read it"
        )
        for tenant in ("acme", "acme", "globex"):
            with track_context("support", tags={"tenant": tenant, "team": "search"}):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
        rig.flush()
        with pytest.raises(BudgetExceeded) as info, track_context("support", tags={"tenant": "acme"}):
            pytest.fail("the scope was entered")
        assert info.value.spent_usd == pytest.approx(2 * COST)  # globex's call is not acme's
        with track_context("support", tags={"tenant": "globex"}):
            assert check_budget() is None
        with track_context("support"):  # no tenant: not selected either
            assert check_budget() is None
    finally:
        rig.close()
    [status] = budget_status(sqlite_or_postgres)  # the store's own SQL agrees
    assert status.spent_usd == pytest.approx(2 * COST)
    listed = subprocess.run(
        [str(BIN / "otel-usecase"), "budgets", "list", "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "use_case=support tag:tenant=acme" in listed
    bad = subprocess.run(
        [str(BIN / "otel-usecase"), "budgets", "set", "x", "--use-case", "support", "--tag", "ten ant=acme",
         "--amount", "1", "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "tag key='ten ant' is not a valid name" in bad.stderr


# --- metrics: tag.<key> opt-in -----------------------------------------------------------------------


def _cost_points(reader: InMemoryMetricReader) -> list[tuple[dict[str, Any], float]]:
    """The ``usecase.cost`` data points as (attributes, value)."""
    data = reader.get_metrics_data()
    return [
        (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "usecase.cost"
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def test_a_tag_is_a_metric_attribute_only_when_listed(
    rig: CostRig, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    default_reader, listed_reader = InMemoryMetricReader(), InMemoryMetricReader()
    default_provider = MeterProvider(metric_readers=[default_reader])
    listed_provider = MeterProvider(metric_readers=[listed_reader])
    try:
        rig.exporter.sink.subscribe(CostMetrics(default_provider))
        monkeypatch.setenv("OTEL_USECASE_METRIC_ATTRIBUTES", "tag.tenant")
        rig.exporter.sink.subscribe(CostMetrics(listed_provider))
        _spend_tagged(rig, client)
        by_tenant: dict[object, float] = {}
        for attributes, value in _cost_points(listed_reader):
            tenant = attributes.get("usecase.tag.tenant")
            by_tenant[tenant] = by_tenant.get(tenant, 0.0) + value
        assert by_tenant == {
            "acme": pytest.approx(3 * COST),
            "globex": pytest.approx(COST),
            None: pytest.approx(COST),
        }
        assert not any("usecase.tag.tenant" in a for a, _ in _cost_points(default_reader))
        assert not any(
            "usecase.tag.team" in a for a, _ in _cost_points(listed_reader)
        )  # only the tags listed
    finally:
        default_provider.shutdown()
        listed_provider.shutdown()
    with pytest.raises(ValueError, match=r"'tag.ten ant' is not one of user.id.* or tag.<key>"):
        CostMetrics(listed_provider, attributes=["tag.ten ant"])
