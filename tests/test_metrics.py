"""Cost as OpenTelemetry metrics, read back the way a team would: from a real Prometheus server.

Real parts: the real openai client through the real Traceloop (and contrib ``-openai-v2``)
instrumentations against FakeOpenAI, the real exporter writing a real SQLite ledger, the
real ``opentelemetry-exporter-prometheus`` endpoint on 127.0.0.1, scraped every second by
Debian's ``prometheus`` binary (tests/prom.py), queried through its HTTP API; the
zero-code case under a real ``opentelemetry-instrument``. Expected figures come from
published prices (tests/expect.py), never from the code under test. The in-process
tests read the SDK's ``InMemoryMetricReader``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan

from otel_usecase import UseCaseCostExporter
from otel_usecase.cost.usage import OUTPUT_KEYS
from otel_usecase.metrics import CostMetrics
from otel_usecase.testing import FakeOpenAI, FakeUsage

from . import prom
from .builders import a_call
from .expect import GPT4O_CACHED, GPT4O_IN, GPT4O_OUT, mini_cost, openai_cost, report_json
from .rigs import Recorded, without_keys
from .servers import LoopbackHTTPServer, ServeProcess, free_port, wait_for_port
from .test_sink import CostMetric, without_usage

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "grafana-llm-cost.json"
RULES = ROOT / "dashboards" / "prometheus-rules.yml"
APP = Path(__file__).parent / "apps" / "metrics_app.py"
BIN = Path(sys.executable).parent

# tests/apps/metrics_app.py's PLAN, each call answered with this usage:
PROMPT, COMPLETION, CACHED = 1_000, 200, 400
MINI_CALLS, GPT4O_CALLS, UNKNOWN_CALLS = 5, 2, 1
CALLS = MINI_CALLS + GPT4O_CALLS + UNKNOWN_CALLS
SUMMARIZE_COST = MINI_CALLS * mini_cost(PROMPT, COMPLETION, CACHED)
CHAT_COST = GPT4O_CALLS * openai_cost(PROMPT, COMPLETION, CACHED, GPT4O_IN, GPT4O_OUT, GPT4O_CACHED)

needs_prometheus = pytest.mark.skipif(
    not prom.available(), reason="no prometheus binary (.ci/run installs it)"
)


# --- fixtures: the app, scraped by a real Prometheus -------------------------------------------------


class App:
    """tests/apps/metrics_app.py as a subprocess; it serves its metrics until :meth:`close`."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.stderr = ""
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the app flushes its calls into the ledger first
        if line.strip() != "READY":
            self.close()
            raise AssertionError(f"the app did not get ready: {line!r} {self.stderr}")

    def close(self) -> int:
        """Close its stdin (it exits, flushing as a process does) and wait; killed after 60 s."""
        try:
            _, self.stderr = self.proc.communicate("", timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate(timeout=10)
        return self.proc.wait(10)


def app_env(store_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "OTEL_USECASE_STORE": store_url, "OTEL_BSP_SCHEDULE_DELAY": "200", **extra}


class Scraped:
    def __init__(self, prometheus: prom.PrometheusServer, store_url: str) -> None:
        self.prometheus = prometheus
        self.store_url = store_url


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """The app (its own MeterProvider, the documented way) made its calls; Prometheus scraped them."""
    if not prom.available():
        pytest.skip("no prometheus binary (.ci/run installs it)")
    workdir = tmp_path_factory.mktemp("scraped")
    store_url = "sqlite:///" + str(workdir / "costs.db")
    port = free_port()
    with FakeOpenAI(
        usage=FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION, cached_tokens=CACHED)
    ) as fake:
        app = App([sys.executable, str(APP), fake.base_url, "code", str(port)], app_env(store_url))
        try:
            with prom.PrometheusServer(workdir / "prometheus", [f"127.0.0.1:{port}"], [RULES]) as prometheus:
                calls = prometheus.wait_for("sum(usecase_calls_total)", lambda v: v == CALLS)
                assert calls == CALLS, prometheus.log_text()
                yield Scraped(prometheus, store_url)
        finally:
            assert app.close() == 0, app.stderr


def by_label(prometheus: prom.PrometheusServer, expr: str, label: str) -> dict[str, float]:
    answer = prometheus.query(expr)
    assert answer["status"] == "success", answer
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in answer["data"]["result"]}


# --- the figures in Prometheus ------------------------------------------------------------------------


def test_prometheus_cost_equals_the_ledger_and_published_prices(scraped: Scraped) -> None:
    prometheus = scraped.prometheus
    ledger = sum(row["cost_usd"] or 0.0 for row in report_json(scraped.store_url))
    total = prometheus.value("sum(usecase_cost_USD_total)")
    assert total == pytest.approx(SUMMARIZE_COST + CHAT_COST, rel=1e-9)
    assert total == pytest.approx(ledger, rel=1e-9)
    by_use_case = by_label(prometheus, "sum by (usecase_name) (usecase_cost_USD_total)", "usecase_name")
    assert by_use_case == {"summarize": pytest.approx(SUMMARIZE_COST), "chat": pytest.approx(CHAT_COST)}
    by_step = by_label(
        prometheus, 'sum by (usecase_step) (usecase_calls_total{usecase_name="summarize"})', "usecase_step"
    )
    assert by_step == {"draft": 3, "review": 2}


def test_prometheus_tokens_per_type_and_unpriced_and_dropped_calls(scraped: Scraped) -> None:
    prometheus = scraped.prometheus
    tokens = by_label(prometheus, "sum by (gen_ai_token_type) (usecase_tokens_total)", "gen_ai_token_type")
    assert tokens == {"input": CALLS * PROMPT, "output": CALLS * COMPLETION, "cache_read": CALLS * CACHED}
    unpriced = prometheus.query("usecase_calls_unpriced_total")["data"]["result"]
    assert [
        (r["metric"]["gen_ai_response_model"], r["metric"]["usecase_unpriced_reason"], r["value"][1])
        for r in unpriced
    ] == [("acme-unknown-1", "unknown model", "1")]
    assert by_label(prometheus, "usecase_calls_dropped_total", "usecase_drop_reason") == {
        "buffer": 0,
        "refused": 0,
    }


def test_high_cardinality_labels_are_not_in_prometheus_by_default(scraped: Scraped) -> None:
    """Every call had its own user id; by default no series carries it (one series per user otherwise)."""
    answer = scraped.prometheus.api("series", **{"match[]": '{__name__=~"usecase_.*"}'})
    labels = {name for series in answer["data"] for name in series}
    assert {
        "usecase_name",
        "usecase_version",
        "usecase_step",
        "gen_ai_provider_name",
        "gen_ai_response_model",
    } <= labels
    assert not labels & {"user_id", "experience_name", "experience_id", "usecase_id"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    return exprs


def grafana_substituted(expr: str) -> str:
    """What Grafana sends for the dashboard's variables (all use cases, a 1 minute step)."""
    for variable, value in (("$use_case", ".*"), ("$__rate_interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_and_rule_expression_evaluates_with_data(scraped: Scraped) -> None:
    prometheus = scraped.prometheus
    # rate() needs two samples of each series: wait for a few scrapes
    assert prometheus.wait_for("min(count_over_time(usecase_calls_total[1m]))", lambda v: (v or 0) >= 3) >= 3
    for expr in dashboard_queries():
        answer = prometheus.query(grafana_substituted(expr))
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["result"], f"no data for the dashboard's {expr}"
    variable = json.loads(DASHBOARD.read_text())["templating"]["list"][0]["definition"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable).groups()  # type: ignore[union-attr]
    values = prometheus.api(f"label/{label}/values", **{"match[]": metric})["data"]
    assert set(values) == {"summarize", "chat"}

    if Path(prom.PROMTOOL).is_file():
        check = subprocess.run(
            [prom.PROMTOOL, "check", "rules", str(RULES)], check=False, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
    records = [
        m.group(1) for m in re.finditer(r"^\s*- record: (\S+)$", RULES.read_text(), flags=re.MULTILINE)
    ]
    assert len(records) >= 8
    for record in records:
        value = prometheus.wait_for(f"count({record})", lambda v: v is not None)
        assert value, f"recording rule {record} produced nothing: {prometheus.api('rules')}"
    rules = [r for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == set(records)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    cost_rate = by_label(prometheus, "usecase_name:usecase_cost_USD:rate5m", "usecase_name")
    assert set(cost_rate) == {"summarize", "chat"}


@needs_prometheus
def test_zero_code_under_opentelemetry_instrument_with_the_prometheus_exporter(tmp_path: Path) -> None:
    """No OpenTelemetry code in the app: the env of opentelemetry-instrument is all it takes.

    Both OpenAI instrumentations are installed, so each request has two spans: counted once.
    """
    store_url = "sqlite:///" + str(tmp_path / "costs.db")
    port = free_port()
    env = app_env(
        store_url,
        OTEL_TRACES_EXPORTER="usecase",
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="zero-code-metrics",
    )
    usage = FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION, cached_tokens=CACHED)
    with FakeOpenAI(usage=usage) as fake:
        app = App(
            [str(BIN / "opentelemetry-instrument"), sys.executable, str(APP), fake.base_url, "zero"], env
        )
        try:
            with prom.PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prometheus:
                calls = prometheus.wait_for("sum(usecase_calls_total)", lambda v: v == CALLS)
                cost = prometheus.value("sum(usecase_cost_USD_total)")
        finally:
            assert app.close() == 0, app.stderr
    assert len(fake.requests) == CALLS
    assert calls == CALLS  # two spans per request, each request once
    assert cost == pytest.approx(SUMMARIZE_COST + CHAT_COST, rel=1e-9)
    ledger = sum(row["cost_usd"] or 0.0 for row in report_json(store_url))
    assert cost == pytest.approx(ledger, rel=1e-9)


class OTLPMetricsReceiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP metrics endpoint on loopback: keeps every decoded request."""

    requests: ClassVar[list[ExportMetricsServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        type(self).requests.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def last_cumulative(requests: list[ExportMetricsServiceRequest], name: str, by: str) -> dict[str, float]:
    """The latest value of each series of a cumulative sum ``name``, summed by the attribute ``by``."""
    latest: dict[tuple[tuple[str, str], ...], tuple[int, float]] = {}
    for request in requests:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    assert metric.sum.is_monotonic and metric.sum.aggregation_temporality == 2  # CUMULATIVE
                    for point in metric.sum.data_points:
                        attributes = tuple(sorted((a.key, a.value.string_value) for a in point.attributes))
                        value = point.as_double if point.HasField("as_double") else float(point.as_int)
                        if point.time_unix_nano >= latest.get(attributes, (0, 0.0))[0]:
                            latest[attributes] = (point.time_unix_nano, value)
    totals: dict[str, float] = {}
    for attributes, (_, value) in latest.items():
        key = dict(attributes).get(by, "")
        totals[key] = totals.get(key, 0.0) + value
    return totals


def test_zero_code_under_opentelemetry_instrument_with_the_otlp_metric_exporter(tmp_path: Path) -> None:
    """``OTEL_METRICS_EXPORTER=otlp``: the figures reach an OTLP/HTTP endpoint (a Collector's, a vendor's)."""
    store_url = "sqlite:///" + str(tmp_path / "costs.db")
    OTLPMetricsReceiver.requests = []
    with LoopbackHTTPServer(OTLPMetricsReceiver, "/v1/metrics") as receiver:
        env = app_env(
            store_url,
            OTEL_TRACES_EXPORTER="usecase",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=receiver.url,
            OTEL_METRIC_EXPORT_INTERVAL="500",
            OTEL_LOGS_EXPORTER="none",
        )
        usage = FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION, cached_tokens=CACHED)
        with FakeOpenAI(usage=usage) as fake:
            app = App(
                [str(BIN / "opentelemetry-instrument"), sys.executable, str(APP), fake.base_url, "zero"], env
            )
            assert app.close() == 0, app.stderr  # the SDK's shutdown exports the last figures
    requests = OTLPMetricsReceiver.requests
    assert requests
    by_use_case = last_cumulative(requests, "usecase.cost", "usecase.name")
    assert by_use_case == {"summarize": pytest.approx(SUMMARIZE_COST), "chat": pytest.approx(CHAT_COST)}
    assert sum(last_cumulative(requests, "usecase.calls", "usecase.name").values()) == CALLS
    tokens = last_cumulative(requests, "usecase.tokens", "gen_ai.token.type")
    assert tokens == {"input": CALLS * PROMPT, "output": CALLS * COMPLETION, "cache_read": CALLS * CACHED}
    ledger = {row["use_case"]: row["cost_usd"] for row in report_json(store_url)}
    assert ledger == {"summarize": pytest.approx(SUMMARIZE_COST), "chat": pytest.approx(CHAT_COST)}


@needs_prometheus
def test_serve_emits_the_same_metrics_as_the_exporter(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """Spans sent over OTLP to ``serve`` are counted by ``serve``'s own metrics pipeline."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from .test_serve import app_sending_to

    store_url = "sqlite:///" + str(tmp_path / "served.db")
    port = free_port()
    env = {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "OTEL_LOGS_EXPORTER": "none",
    }
    fake_openai.respond(
        usage=FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION, cached_tokens=CACHED)
    )
    with ServeProcess(store_url, env=env, instrumented=True) as served:
        wait_for_port(port, timeout=60, proc=served.proc)
        app_sending_to(
            OTLPSpanExporter(endpoint=served.http_url), fake_openai, [("summarize", "a", 3), ("chat", "b", 2)]
        )
        with prom.PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prometheus:
            calls = prometheus.wait_for("sum(usecase_calls_total)", lambda v: v == 5)
            by_use_case = by_label(
                prometheus, "sum by (usecase_name) (usecase_cost_USD_total)", "usecase_name"
            )
            dropped = by_label(prometheus, "usecase_calls_dropped_total", "usecase_drop_reason")
    assert calls == 5
    assert by_use_case == {
        "summarize": pytest.approx(3 * mini_cost(PROMPT, COMPLETION, CACHED)),
        "chat": pytest.approx(2 * mini_cost(PROMPT, COMPLETION, CACHED)),
    }
    assert dropped == {"buffer": 0, "refused": 0}
    ledger = {row["use_case"]: row["cost_usd"] for row in report_json(store_url)}
    assert ledger == by_use_case


# --- in process: the SDK's in-memory reader ------------------------------------------------------------


class Points:
    """The data points an ``InMemoryMetricReader`` holds: (name, attributes) -> value."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.points: dict[str, list[tuple[dict[str, Any], float]]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        self.points.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), point.value)
                        )  # type: ignore[union-attr]

    def total(self, name: str, **match: Any) -> float:
        return sum(
            v for attrs, v in self.points.get(name, []) if all(attrs.get(k) == m for k, m in match.items())
        )

    def keys(self, name: str) -> set[str]:
        return {k for attrs, _ in self.points.get(name, []) for k in attrs}


@pytest.fixture
def metered() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def without_output(span: ReadableSpan) -> ReadableSpan:
    """The span as an instrumentation that read the prompt's count but not the completion's records it."""
    return without_keys(span, OUTPUT_KEYS)


@pytest.mark.parametrize("first_copy", ["without usage", "without output tokens"])
def test_a_better_copy_in_a_later_batch_adds_only_its_difference(
    recorded: Recorded,
    exporter: UseCaseCostExporter,
    store_url: str,
    metered: tuple[MeterProvider, InMemoryMetricReader],
    first_copy: str,
) -> None:
    """Two instrumentations on one request, the less complete copy exported first: one call, its cost once."""
    provider, reader = metered
    metrics = CostMetrics(provider)
    exporter.sink.subscribe(metrics)
    seen = CostMetric()
    exporter.sink.subscribe(seen)
    inner, outer = recorded.ask("two-batches")
    worse = without_usage(inner) if first_copy == "without usage" else without_output(inner)
    assert exporter.export([worse]).name == "SUCCESS"
    assert exporter.export([outer]).name == "SUCCESS"
    assert exporter.force_flush(30_000)
    assert seen.kinds == ["new", "replaces"]  # the premise: the second copy replaced the first
    points = Points(reader)
    assert points.total("usecase.calls") == 1
    assert points.total("usecase.cost") == pytest.approx(mini_cost(1_000, 100))
    assert points.total("usecase.tokens", **{"gen_ai.token.type": "input"}) == 1_000
    assert points.total("usecase.tokens", **{"gen_ai.token.type": "output"}) == 100
    # A counter never goes down: a call first seen without usage stays counted as such (documented).
    assert points.total("usecase.calls.unpriced") == (1 if first_copy == "without usage" else 0)
    (row,) = report_json(store_url)
    assert (row["calls"], row["cost_usd"]) == (1, pytest.approx(points.total("usecase.cost")))


def test_two_instrumentations_in_one_batch_count_once(
    recorded: Recorded, exporter: UseCaseCostExporter, metered: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metered
    exporter.sink.subscribe(CostMetrics(provider))
    spans = recorded.ask("one-batch", times=3)
    assert len(spans) == 6
    assert exporter.export(spans).name == "SUCCESS"
    points = Points(reader)
    assert points.total("usecase.calls") == 3
    assert points.total("usecase.cost") == pytest.approx(3 * mini_cost(1_000, 100))
    assert points.total("usecase.calls.unpriced") == 0


def test_high_cardinality_attributes_only_when_listed(
    recorded: Recorded,
    exporter: UseCaseCostExporter,
    metered: tuple[MeterProvider, InMemoryMetricReader],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otel_usecase import track_context

    provider, reader = metered
    default = CostMetrics(provider)
    monkeypatch.setenv("OTEL_USECASE_METRIC_ATTRIBUTES", "user.id, experience.name")
    listed_reader = InMemoryMetricReader()
    listed_provider = MeterProvider(metric_readers=[listed_reader])
    listed = CostMetrics(listed_provider)
    exporter.sink.subscribe(default)
    exporter.sink.subscribe(listed)
    recorded.memory.clear()
    with track_context("support", user_id="u-42", experience_name="help_center"):
        recorded.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    spans = [
        s for s in recorded.memory.get_finished_spans() if (s.attributes or {}).get("gen_ai.operation.name")
    ]
    assert exporter.export(spans).name == "SUCCESS"
    assert not Points(reader).keys("usecase.cost") & {"user.id", "experience.name"}
    points = Points(listed_reader)
    listed_provider.shutdown()
    assert points.keys("usecase.cost") >= {"user.id", "experience.name"}
    assert points.total(
        "usecase.cost", **{"user.id": "u-42", "experience.name": "help_center"}
    ) == pytest.approx(mini_cost(1_000, 100))


def test_a_bad_metric_attributes_value_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, metered: tuple[MeterProvider, Any]
) -> None:
    monkeypatch.setenv("OTEL_USECASE_METRIC_ATTRIBUTES", "user.id,email")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        metrics = CostMetrics(metered[0])
    assert "OTEL_USECASE_METRIC_ATTRIBUTES='user.id,email' is not accepted" in caplog.text
    assert "'email' is not one of user.id" in caplog.text
    assert "user.id" not in metrics.attribute_keys  # the default: bounded attributes only
    with pytest.raises(ValueError, match="'email' is not one of"):
        CostMetrics(metered[0], attributes=["email"])


def test_dropped_calls_are_counted(
    recorded: Recorded, store_url: str, metered: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """A full buffer (here: no room at all) loses the calls from the ledger; the metric shows how many."""
    provider, reader = metered
    exporter = UseCaseCostExporter(store=store_url, max_buffered_calls=0)
    try:
        metrics = CostMetrics(provider)
        metrics.watch_drops(exporter)
        exporter.sink.subscribe(metrics)
        spans = recorded.ask("dropped", times=2)
        exporter.export(spans)
        assert exporter.dropped_calls == 2
        points = Points(reader)
        assert points.total("usecase.calls.dropped", **{"usecase.drop.reason": "buffer"}) == 2
        assert points.total("usecase.calls") == 2  # priced, counted, and missing from the ledger
    finally:
        exporter.shutdown()


NO_PROVIDER_YET = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_usecase.cost.call import Call
from otel_usecase.cost.sink import CallEvent
from otel_usecase.metrics import CostMetrics, _totals_for, meter_provider_set

def call(span_id):
    return Call(trace_id="t", span_id=span_id, start_ns=0, end_ns=1, service=None, use_case="case",
                run_id="run", use_case_version=None, step=None, experience_name=None, experience_id=None,
                user_id=None, provider="openai", model="gpt-4o-mini", operation="chat",
                tokens={"input": 10, "output": 1}, cost_usd=0.5, status="priced", cost_source="genai-prices")

recorder = CostMetrics()  # the global provider, as the exporter under opentelemetry-instrument
assert not meter_provider_set()
recorder([CallEvent(call("a"))])
assert not _totals_for(None).entries_for(recorder.attribute_keys)  # nothing summed, nothing kept
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
assert meter_provider_set()
recorder([CallEvent(call("b"))])
points = {m.name: [p.value for p in m.data.data_points]
          for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
assert points["usecase.calls"] == [1] and points["usecase.cost"] == [0.5], points
"""


def test_no_meter_provider_no_work_and_the_api_read_still_works() -> None:
    """Before a global MeterProvider is set nothing is summed; once set (after the exporter), it gets the figures.

    ``meter_provider_set`` reads the API's private global: this fails loudly if the API renames it.
    """
    subprocess.run([sys.executable, "-c", NO_PROVIDER_YET], check=True, timeout=60)


def test_two_exporters_of_one_process_add_up(
    recorded: Recorded, tmp_path: Path, metered: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """The SDK keeps one callback per instrument: both exporters' calls must still be in the one total."""
    provider, reader = metered
    exporters = [UseCaseCostExporter(store="sqlite:///" + str(tmp_path / f"{i}.db")) for i in range(2)]
    try:
        for i, exporter in enumerate(exporters):
            exporter.sink.subscribe(CostMetrics(provider))
            spans = recorded.ask(f"exporter-{i}", times=i + 1)
            assert exporter.export(spans).name == "SUCCESS"
    finally:
        for exporter in exporters:
            exporter.shutdown()
    points = Points(reader)
    assert points.total("usecase.calls", **{"usecase.name": "exporter-0"}) == 1
    assert points.total("usecase.calls", **{"usecase.name": "exporter-1"}) == 2
    assert points.total("usecase.cost") == pytest.approx(3 * mini_cost(1_000, 100))


def test_attribute_sets_past_the_limit_are_summed_as_overflow(
    monkeypatch: pytest.MonkeyPatch, metered: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """Memory stays bounded whatever the attribute values; no call is lost from the totals."""
    import otel_usecase.metrics as metrics_module
    from otel_usecase.cost.sink import CallEvent

    monkeypatch.setattr(metrics_module, "MAX_ATTRIBUTE_SETS", 2)
    provider, reader = metered
    recorder = CostMetrics(provider)
    cost = mini_cost(1_000, 100)
    calls = [
        a_call(
            span_id=f"s{i}",
            use_case=f"case-{i}",
            tokens={"input": 1_000, "output": 100},
            cost_usd=cost,
            cost_source="genai-prices",
        )
        for i in range(5)
    ]
    recorder([CallEvent(call) for call in calls])
    points = Points(reader)
    assert points.total("usecase.calls", **{"usecase.name": "case-0"}) == 1
    assert points.total("usecase.calls", **{"usecase.name": "case-1"}) == 1
    assert points.total("usecase.calls", **{"otel.metric.overflow": True}) == 3
    assert points.total("usecase.cost") == pytest.approx(5 * cost)


def test_a_forked_child_counts_its_own_calls_even_if_a_collection_held_the_lock(
    recorded: Recorded, exporter: UseCaseCostExporter, metered: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """gunicorn/multiprocessing: the child starts from zero (no call counted in two processes) and never hangs."""
    import signal
    import threading

    import otel_usecase.metrics as metrics_module

    provider, reader = metered
    metrics = CostMetrics(provider)
    exporter.sink.subscribe(metrics)
    assert exporter.export(recorded.ask("before-fork")).name == "SUCCESS"
    totals = metrics_module._totals_for(provider)
    held, release = threading.Event(), threading.Event()

    def collect_forever() -> None:  # a collection in progress on another thread at fork()
        with totals.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=collect_forever)
    holder.start()
    assert held.wait(30)
    spans = recorded.ask("in-the-child", times=2)
    pid = os.fork()
    if pid == 0:  # the child: must not hang on the inherited lock, must count only its own calls
        signal.alarm(20)
        status = 1
        try:
            exporter.export(spans)
            points = Points(reader)
            if (
                points.total("usecase.calls") == 2
                and points.total("usecase.calls", **{"usecase.name": "before-fork"}) == 0
            ):
                status = 0
        finally:
            os._exit(status)
    release.set()
    holder.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert Points(reader).total("usecase.calls") == 1  # the parent's own
