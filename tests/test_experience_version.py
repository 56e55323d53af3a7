"""Experience versions: ``track_context(experience_version="v2")`` travels as baggage ``experience.version``,
is stamped on LLM spans, stored in the ledger's ``experience_version`` column and reported
(``report --by experience-version``, the dashboard's ``/experience-versions`` page, ``runs show``).

Costs are computed here from published prices (tests/expect.py): each gpt-4o-mini call FakeOpenAI answers
costs 10 * $0.15/M + 5 * $0.60/M.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.textmap import TextMapPropagator

from otel_usecase import UseCaseWarning, current_scope, track, track_context
from otel_usecase.report import views
from otel_usecase.report.queries import report_rows
from otel_usecase.scope.propagation import UseCaseBaggagePropagator, parse_keys
from otel_usecase.scope.validation import normalised_id
from otel_usecase.store import open_store
from otel_usecase.store.base import ReportFilter

from .builders import a_call
from .conftest import Traced
from .expect import mini_cost
from .rigs import CostRig
from .servers import ServeProcess, UIProcess
from .test_tags import Downstream, _otlp_span, downstream, sending_with  # noqa: F401 (fixtures)

COST = mini_cost(10, 5)
MSG = [{"role": "user", "content": "hello"}]
BIN = Path(sys.executable).parent


def _cli(store_url: str, *args: str) -> str:
    return subprocess.run(
        [str(BIN / "otel-usecase"), *args, "--store", store_url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def _by_version(store_url: str, *args: str) -> dict[tuple[Any, Any], tuple[int, int, Any]]:
    """``report --by experience-version --format json`` (a real CLI process): (calls, runs, cost) per
    (experience, version)."""
    rows = json.loads(_cli(store_url, "report", "--by", "experience-version", "--format", "json", *args))
    return {
        (r["experience_name"], r["experience_version"]): (r["calls"], r["runs"], r["cost_usd"]) for r in rows
    }


# --- scopes ------------------------------------------------------------------------------------------


def test_the_version_belongs_to_the_experience_inner_scopes_inherit_it_only_for_the_same_experience() -> None:
    with track_context("support", experience_name="support_chat", experience_version="v2") as outer:
        assert outer.experience_version == "v2"
        assert outer.attributes()["experience.version"] == "v2"
        with track_context(use_case_step="retrieve") as inner:  # no experience named: the same one
            assert (inner.experience_name, inner.experience_version) == ("support_chat", "v2")
        with track_context("refund", experience_name="support_chat") as same:  # the same experience, named
            assert same.experience_version == "v2" and same.experience_id == outer.experience_id
        with track_context(experience_name="onboarding") as other:  # another experience: not its version
            assert other.experience_version is None and "experience.version" not in other.attributes()
        with track_context(experience_name="onboarding", experience_version="v7") as versioned:
            assert versioned.experience_version == "v7"
        with track_context(experience_version="v3") as newer:  # the same experience, a new version
            assert (newer.experience_name, newer.experience_version) == ("support_chat", "v3")
        scope = current_scope()
        assert scope is not None and scope.experience_version == "v2"
    assert current_scope() is None


def test_a_bad_version_follows_the_rules_of_a_use_case_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id, like ``use_case_version``: never raises on its content, a wrong type is a bug (TypeError)."""
    bad = "v2\nbeta"
    with pytest.warns(UseCaseWarning, match=r"experience_version='v2\\nbeta' breaks the id rule"):
        manager = track_context(experience_name="chat", experience_version=bad)
    with manager as scope:
        assert scope.experience_version == normalised_id(bad)
    with pytest.warns(UseCaseWarning, match="use_case_version='v2\\\\nbeta' breaks the id rule"):
        track_context("chat", use_case_version=bad)  # the same rule, the same message
    with track_context(experience_name="chat", experience_version=3) as numbered:  # type: ignore[arg-type]
        assert numbered.experience_version == "3"
    with pytest.raises(TypeError, match=r"experience_version=2\.5 is not a valid id"):
        track_context(experience_version=2.5)  # type: ignore[arg-type]
    with pytest.warns(UseCaseWarning, match="experience_version='' breaks the id rule.*treated as no id"):
        empty = track_context(experience_name="chat", experience_version="")
    with empty as scope:
        assert scope.experience_version is None
    monkeypatch.setenv("OTEL_USECASE_STRICT", "true")
    with pytest.raises(ValueError, match=r"experience_version='v2\\nbeta' is not a valid id"):
        track_context(experience_version=bad)


def test_track_decorator_takes_the_version(rig: CostRig, client: openai.OpenAI) -> None:
    @track("summarize", experience_name="digest", experience_version="2025-06")
    def summarize() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]

    summarize()
    (row,) = rig.report("experience-version")
    assert (row["experience_name"], row["experience_version"], row["calls"]) == ("digest", "2025-06", 1)
    assert row["cost_usd"] == pytest.approx(COST)


# --- through real calls: stamped, stored, reported -------------------------------------------------------


def _spend(rig: CostRig, client: openai.OpenAI) -> dict[str, str]:
    """support_chat v1: 2 calls in one run; v2: 3 calls in two runs (one with a step inside); onboarding (an
    inner scope of another experience, so without a version): 1 call; no experience: 1 call. The run ids."""

    def ask() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]

    runs = {}
    with track_context("support", experience_name="support_chat", experience_version="v1") as s:
        ask()
        ask()
        runs["v1"] = s.use_case_id or ""
    with track_context("support", experience_name="support_chat", experience_version="v2") as s:
        ask()
        with track_context(use_case_step="refund"):
            ask()
        runs["v2"] = s.use_case_id or ""
        with track_context("welcome", experience_name="onboarding"):
            ask()
    with track_context("support", experience_name="support_chat", experience_version="v2"):
        ask()
    with track_context("support"):
        ask()
    rig.flush()
    return runs


EXPECTED: dict[tuple[Any, Any], tuple[int, int, Any]] = {
    ("support_chat", "v1"): (2, 1, pytest.approx(2 * COST)),
    ("support_chat", "v2"): (3, 2, pytest.approx(3 * COST)),
    ("onboarding", None): (1, 1, pytest.approx(COST)),
    (None, None): (1, 1, pytest.approx(COST)),
}


def test_versions_are_stamped_stored_and_reported_in_both_stores(
    sqlite_or_postgres: str, client: openai.OpenAI
) -> None:
    rig = CostRig(sqlite_or_postgres)
    try:
        runs = _spend(rig, client)
        stamped = sorted(
            (str(a.get("experience.name", "")), str(a.get("experience.version", "")))
            for a in (s.attributes or {} for s in rig.captured.get_finished_spans())
            if "gen_ai.usage.input_tokens" in a
        )
    finally:
        rig.close()
    assert stamped == [
        ("", ""),
        ("onboarding", ""),
        ("support_chat", "v1"),
        ("support_chat", "v1"),
        ("support_chat", "v2"),
        ("support_chat", "v2"),
        ("support_chat", "v2"),
    ]
    assert _by_version(sqlite_or_postgres) == EXPECTED
    assert _by_version(sqlite_or_postgres, "--experience", "support_chat") == {
        k: v for k, v in EXPECTED.items() if k[0] == "support_chat"
    }
    table = _cli(sqlite_or_postgres, "report", "--by", "experience-version")
    assert "experience_version" in table and "v1" in table and "v2" in table

    store = open_store(sqlite_or_postgres, create=False)
    try:
        stored = store.query(
            "SELECT experience_version, COUNT(*) FROM usecase_calls GROUP BY experience_version"
        )
        everything, windowed = ReportFilter(), ReportFilter(since_ns=1, until_ns=2**62 + 123)  # mid-hour ends
        for filters in (everything, windowed):  # the dashboard's query and the report's give the same rows
            top = views.top(store, filters, "experience-version", 10)
            rows = report_rows(store, "experience-version", filters)
            assert [(r.key, r.calls, r.cost_usd) for r in top] == [(r.key, r.calls, r.cost_usd) for r in rows]
            found = {
                (r.key["experience_name"], r.key["experience_version"]): (r.calls, r.runs, r.cost_usd)
                for r in top
            }
            assert found == EXPECTED
        (first,) = views.top(store, everything, "experience-version", 1)  # the dearest
        assert first.key == {"experience_name": "support_chat", "experience_version": "v2"}
    finally:
        store.close()
    assert sorted(stored, key=lambda r: (r[0] is None, r[0] or "")) == [("v1", 2), ("v2", 3), (None, 2)]

    shown = json.loads(_cli(sqlite_or_postgres, "runs", "show", runs["v2"], "--format", "json"))
    assert [c["experience_version"] for c in shown] == ["v2", "v2"]
    assert re.search(r"experience version v1\b", _cli(sqlite_or_postgres, "runs", "show", runs["v1"]))


def test_an_older_ledger_gains_the_column_and_its_calls_read_without_a_version(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.write([a_call(span_id="1" * 16, experience_name="chat", cost_usd=COST)]) == []
    finally:
        store.close()
    path = store_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # what an otel-usecase of schema 6 left (no definitions either)
        for trigger in ("insert", "update"):  # (its triggers did not name the column; the migration makes them anew)
            conn.execute(f"DROP TRIGGER usecase_calls_rollup_{trigger}")
        conn.execute("ALTER TABLE usecase_calls DROP COLUMN experience_version")
        conn.execute("UPDATE otel_usecase_meta SET value = '6' WHERE key = 'schema_version'")
    reader = open_store(store_url, create=False)  # a report never upgrades: every call without a version
    try:
        assert [c.experience_version for c in reader.run_calls("r")] == [None]
        (row,) = report_rows(reader, "experience-version", ReportFilter())
        assert (row.key, row.calls) == ({"experience_name": "chat", "experience_version": None}, 1)
    finally:
        reader.close()
    writer = open_store(store_url)  # a writer adds the column
    try:
        assert writer.write([a_call(span_id="2" * 16, experience_name="chat", experience_version="v2")]) == []
    finally:
        writer.close()
    assert _by_version(store_url) == {
        ("chat", None): (1, 1, pytest.approx(COST)),
        ("chat", "v2"): (1, 1, pytest.approx(0.001)),
    }


# --- across services: baggage and the trust rules -------------------------------------------------------


def test_the_version_travels_as_baggage_where_the_trust_rules_allow(
    traced: Traced,
    downstream: Downstream,  # noqa: F811
    instrumented_httpx: None,
    sending_with: Callable[[TextMapPropagator], None],  # noqa: F811
) -> None:
    assert "experience.version" in parse_keys("all")
    assert parse_keys("experience.name, Experience.Version") == {"experience.name", "experience.version"}
    sending_with(UseCaseBaggagePropagator())  # sends every key but user.id by default: the version too
    with track_context("support", experience_name="support_chat", experience_version="v2"):
        downstream.extractor = UseCaseBaggagePropagator(accept_inbound="experience.name,experience.version")
        httpx.post(downstream.url, json={})
        downstream.extractor = UseCaseBaggagePropagator(accept_inbound="experience.name")
        httpx.post(downstream.url, json={})
        downstream.extractor = W3CBaggagePropagator()  # an internal service with the standard propagator
        httpx.post(downstream.url, json={})
    trusted, name_only, internal = downstream.scopes
    assert trusted is not None and (trusted.experience_name, trusted.experience_version) == (
        "support_chat",
        "v2",
    )
    assert name_only is not None and (name_only.experience_name, name_only.experience_version) == (
        "support_chat",
        None,
    )
    assert internal is not None and internal.experience_version == "v2"
    stamped = [(s.attributes or {}).get("experience.version") for s in traced.llm_spans()]
    assert stamped == ["v2", None, "v2"]

    sending_with(UseCaseBaggagePropagator(send_outbound="experience.name"))  # A keeps its version home
    downstream.extractor = UseCaseBaggagePropagator(accept_inbound="all")
    with track_context(experience_name="support_chat", experience_version="v3"):
        httpx.post(downstream.url, json={})
    last = downstream.scopes[-1]
    assert last is not None and (last.experience_name, last.experience_version) == ("support_chat", None)

    header = "experience.name=chat,experience.version=v9%0Abeta"  # hostile: normalised as an id, never raised
    assert httpx.post(downstream.url, json={}, headers={"baggage": header}).status_code == 200
    hostile = downstream.scopes[-1]
    assert hostile is not None and hostile.experience_version == normalised_id("v9\nbeta")


def test_serve_stores_the_version_of_spans_from_any_sender(store_url: str) -> None:
    with ServeProcess(store_url) as served:
        spans = [
            _otlp_span("eee19b7ec3c1b174", {"experience.name": "chat", "experience.version": "v2"}),
            _otlp_span("eee19b7ec3c1b175", {"experience.name": "chat"}),
        ]
        body = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "go-app"}, "spans": spans}]}]}
        response = httpx.post(served.http_url, json=body, timeout=30)
        assert response.status_code == 200 and response.json() == {}, response.text
        assert served.healthz()["calls_written"] == 2
    assert _by_version(store_url) == {
        ("chat", "v2"): (1, 1, pytest.approx(COST)),
        ("chat", None): (1, 1, pytest.approx(COST)),
    }


# --- the dashboard -----------------------------------------------------------------------------------------


def _page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200
        body: bytes = response.read()
    return body.decode()


def test_the_dashboard_shows_the_cost_per_experience_version_and_the_run_page_the_version(
    rig: CostRig, client: openai.OpenAI
) -> None:
    runs = _spend(rig, client)
    with UIProcess(rig.store_url) as ui:
        overview = _page(ui.url + "/")
        page = _page(ui.url + "/experience-versions")
        run_page = _page(ui.url + "/run?id=" + runs["v1"])
        download = json.loads(_page(ui.url + "/api/report?by=experience-version&format=json"))
    assert 'href="/experience-versions"' in overview
    cells = [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
        for row in re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL)
    ]
    by_key = {(row[0], row[1]): row for row in cells if len(row) > 2}
    assert set(by_key) == {("support_chat", "v2"), ("support_chat", "v1"), ("onboarding", "-"), ("-", "-")}
    dollars = f"${3 * COST:.6f}".rstrip("0")
    assert any(cell.startswith(dollars) for cell in by_key[("support_chat", "v2")]), by_key
    assert "experience version" in run_page and ">v1<" in run_page
    assert {(r["experience_name"], r["experience_version"]): r["calls"] for r in download} == {
        k: v[0] for k, v in EXPECTED.items()
    }
    assert uuid.UUID(runs["v1"])  # the run page was of a real run id
