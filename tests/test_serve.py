"""``otel-usecase serve``: real OTLP over HTTP and gRPC, from real OTel exporters and a real collector."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_usecase import UseCaseSpanProcessor, track_context
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost, report_json
from .servers import BIN, RotelProcess, ServeProcess

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "served.db")


@pytest.fixture
def served(store_url: str) -> Iterator[ServeProcess]:
    with ServeProcess(store_url) as server:
        yield server


def app_sending_to(exporter: SpanExporter, fake: FakeOpenAI, calls: list[tuple[str, str, int]]) -> None:
    """An app with the processor and an OTLP exporter: (use case, user, n calls) each in its own run."""
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-test-app"}))
    provider.add_span_processor(UseCaseSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        for use_case, user, n in calls:
            with track_context(use_case, user_id=user):
                for _ in range(n):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def test_otlp_http_protobuf_from_the_sdk_exporter(served: ServeProcess, fake_openai: FakeOpenAI) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    fake_openai.respond(usage=FakeUsage(prompt_tokens=5_000, completion_tokens=400, cached_tokens=2_000))
    app_sending_to(
        OTLPSpanExporter(endpoint=served.http_url),
        fake_openai,
        [("summarize", "alice", 3), ("chat", "bob", 2)],
    )
    by_case = {r["use_case"]: r for r in report_json(served.store_url)}
    assert by_case["summarize"]["calls"] == 3 and by_case["chat"]["calls"] == 2
    assert by_case["summarize"]["cost_usd"] == pytest.approx(3 * mini_cost(5_000, 400, 2_000))
    assert by_case["chat"]["cost_usd"] == pytest.approx(2 * mini_cost(5_000, 400, 2_000))
    assert served.healthz()["calls_written"] == 5


def test_otlp_grpc_from_the_sdk_exporter(served: ServeProcess, fake_openai: FakeOpenAI) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=1_000))
    app_sending_to(
        OTLPSpanExporter(endpoint=served.grpc_endpoint, insecure=True), fake_openai, [("grpc_case", "u", 4)]
    )
    (row,) = report_json(served.store_url)
    assert (row["use_case"], row["calls"]) == ("grpc_case", 4)
    assert row["cost_usd"] == pytest.approx(4 * mini_cost(1_000, 1_000))


def otlp_json(spans: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
                "scopeSpans": [
                    {"scope": {"name": "opentelemetry.instrumentation.openai.v1"}, "spans": spans}
                ],
                **extra,
            }
        ]
    }


def llm_span_json(trace_id: str, span_id: str, run: str, prompt: Any, completion: Any) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "openai.chat",
        "kind": 3,
        "startTimeUnixNano": str(time.time_ns()),
        "endTimeUnixNano": str(time.time_ns()),
        "someFutureField": {"ignored": True},
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.response.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(prompt)}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": str(completion)}},
            {"key": "usecase.name", "value": {"stringValue": "json_case"}},
            {"key": "usecase.id", "value": {"stringValue": run}},
        ],
    }


def test_otlp_json_with_gzip_hex_ids_and_string_int64(served: ServeProcess) -> None:
    body = otlp_json(
        [
            llm_span_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "run-j", 10_000, 2_000),
            llm_span_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b175", "run-j", 20_000, 0),
        ]
    )
    response = httpx.post(
        served.http_url,
        content=gzip.compress(json.dumps(body).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    (row,) = report_json(served.store_url, "run")
    assert (row["run_id"], row["calls"], row["input_tokens"]) == ("run-j", 2, 30_000)
    assert row["cost_usd"] == pytest.approx(mini_cost(30_000, 2_000))
    # resending the same request (a sender's retry) changes nothing
    httpx.post(served.http_url, json=body)
    assert report_json(served.store_url, "run")[0]["calls"] == 2


def test_partial_success_for_spans_with_bad_ids(served: ServeProcess) -> None:
    body = otlp_json(
        [
            llm_span_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "run-p", 100, 10),
            llm_span_json("5b8efff798038103d269b633813fc60c", "eee19b", "run-p", 100, 10),
        ]
    )
    response = httpx.post(served.http_url, json=body)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert report_json(served.store_url, "run")[0]["calls"] == 1


def test_protocol_errors(served: ServeProcess) -> None:
    bad = httpx.post(
        served.http_url, content=b"\xff\x00garbage", headers={"content-type": "application/x-protobuf"}
    )
    assert bad.status_code == 400
    status = status_pb2.Status.FromString(bad.content)
    assert status.code == 3 and "protobuf" in status.message

    assert (
        httpx.post(served.http_url, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    )
    assert httpx.get(served.http_url).status_code == 405
    assert httpx.post(served.http_url.replace("/v1/traces", "/v1/metrics"), content=b"").status_code == 404

    bomb = gzip.compress(b"\x00" * (40 * 1024 * 1024))  # 40 MiB of zeros in ~40 KiB
    assert len(bomb) < 100_000
    response = httpx.post(
        served.http_url,
        content=bomb,
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
    )
    assert response.status_code == 413
    # the server is still fine afterwards
    ok = httpx.post(served.http_url, content=b"", headers={"content-type": "application/x-protobuf"})
    assert ok.status_code == 200


def test_bearer_token(store_url: str) -> None:
    with ServeProcess(store_url, env={"OTEL_USECASE_TOKEN": "s3cret-token"}) as server:
        body = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
        headers = {"content-type": "application/x-protobuf"}
        assert httpx.post(server.http_url, content=body, headers=headers).status_code == 401
        wrong = {**headers, "authorization": "Bearer nope"}
        assert httpx.post(server.http_url, content=body, headers=wrong).status_code == 401
        right = {**headers, "authorization": "Bearer s3cret-token"}
        assert httpx.post(server.http_url, content=body, headers=right).status_code == 200

        with grpc.insecure_channel(server.grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Export(
                trace_service_pb2.ExportTraceServiceRequest(),
                metadata=[("authorization", "Bearer s3cret-token")],
                timeout=10,
            )
        code, err = server.terminate()
    assert code == 0
    assert "s3cret-token" not in err


def test_store_unavailable_answers_503_with_retry_after(served: ServeProcess, store_url: str) -> None:
    path = store_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    body = otlp_json(
        [llm_span_json("5b8efff798038103d269b633813fc60d", "eee19b7ec3c1b174", "run-503", 100, 10)]
    )
    try:
        response = httpx.post(served.http_url, json=body, timeout=30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    # the sender retries and the call lands
    assert httpx.post(served.http_url, json=body).status_code == 200
    assert report_json(store_url, "run")[0]["calls"] == 1


def test_sigterm_finishes_in_flight_requests_and_exits_0(store_url: str) -> None:
    server = ServeProcess(store_url).start()
    spans = [
        llm_span_json("6b8efff798038103d269b633813fc60c", f"{i:016x}", "run-term", 100, 10)
        for i in range(1, 10_001)
    ]
    payload = json.dumps(otlp_json(spans)).encode()
    results: list[int] = []

    def send() -> None:
        results.append(
            httpx.post(
                server.http_url, content=payload, headers={"content-type": "application/json"}, timeout=60
            ).status_code
        )

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.4)  # the 10k-span request (about 2 s of work) is in flight
    code, _ = server.terminate()
    sender.join(60)
    assert code == 0
    assert results == [200]  # finished, not cut off
    assert report_json(store_url, "run")[0]["calls"] == 10_000  # and committed


def test_collector_pipeline_with_rotel(tmp_path: Path, served: ServeProcess, fake_openai: FakeOpenAI) -> None:
    """App under opentelemetry-instrument -> rotel (OTLP collector) -> otel-usecase serve -> report."""
    fake_openai.respond(usage=FakeUsage(prompt_tokens=3_000, completion_tokens=500, cached_tokens=1_000))
    with RotelProcess(f"http://127.0.0.1:{served.http_port}", tmp_path) as rotel:
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": "rotel-app",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rotel.http_port}",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        app = Path(__file__).parent / "apps" / "zero_code_app.py"
        subprocess.run(
            [str(BIN / "opentelemetry-instrument"), sys.executable, str(app), fake_openai.base_url],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 30
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = report_json(served.store_url, "run")
            if rows:
                break
            time.sleep(0.2)
    assert rows, (tmp_path / "rotel.log").read_text()[-2000:]
    (row,) = rows
    assert row["use_case"] == "zero_code_case"
    assert row["calls"] == 1  # two instrumentations, one request
    assert row["cost_usd"] == pytest.approx(mini_cost(3_000, 500, 1_000))
