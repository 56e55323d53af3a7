"""Bad input to the OTLP receiver: it answers with a clear status, stays up, and keeps counting right."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from .expect import mini_cost, report_json
from .servers import ServeProcess

PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    store = "sqlite:///" + str(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    with ServeProcess(store, "--max-body-bytes", str(8 * 1024 * 1024)) as server:
        yield server


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def request_with(spans: list[Span]) -> bytes:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()


def llm_span(trace: int, span: int, run: str, inp: Any = 1_000, out: Any = 100, **extra: Any) -> Span:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-4o-mini",
        "usecase.name": "fuzz",
        "usecase.id": run,
        **extra,
    }
    if inp is not None:
        attrs["gen_ai.usage.input_tokens"] = inp
    if out is not None:
        attrs["gen_ai.usage.output_tokens"] = out
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span.to_bytes(8, "big"),
        name="openai.chat",
        start_time_unix_nano=1_790_000_000_000_000_000,
        end_time_unix_nano=1_790_000_000_100_000_000,
        attributes=[kv(k, v) for k, v in attrs.items()],
    )


def still_fine(served: ServeProcess) -> None:
    response = httpx.post(served.http_url, content=request_with([]), headers=PROTOBUF, timeout=30)
    assert response.status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=4096))
def test_random_bytes(served: ServeProcess, body: bytes) -> None:
    response = httpx.post(served.http_url, content=body, headers=PROTOBUF, timeout=30)
    assert response.status_code in (200, 400)
    still_fine(served)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=2048))
def test_random_json_text(served: ServeProcess, text: str) -> None:
    response = httpx.post(
        served.http_url,
        content=text.encode("utf-8", "surrogatepass"),
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert "message" in response.json()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(cut=st.integers(min_value=1, max_value=400))
def test_truncated_protobuf(served: ServeProcess, cut: int) -> None:
    full = request_with([llm_span(7, 7, "trunc")])
    response = httpx.post(served.http_url, content=full[: max(len(full) - cut, 0)], headers=PROTOBUF)
    assert response.status_code in (200, 400)
    still_fine(served)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    content_type=st.text(max_size=40).filter(
        lambda t: t.split(";")[0].strip().lower() not in ("application/json", "application/x-protobuf")
    )
)
def test_wrong_content_types(served: ServeProcess, content_type: str) -> None:
    try:
        response = httpx.post(served.http_url, content=b"{}", headers={"content-type": content_type})
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself refuses to send such a header
    assert response.status_code == 415


def test_gzip_bomb_and_bad_gzip(served: ServeProcess) -> None:
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))
    headers = {**PROTOBUF, "content-encoding": "gzip"}
    assert httpx.post(served.http_url, content=bomb, headers=headers).status_code == 413
    assert httpx.post(served.http_url, content=b"not gzip", headers=headers).status_code == 400
    assert httpx.post(served.http_url, content=gzip.compress(b"abc")[:-4], headers=headers).status_code == 400
    still_fine(served)


def test_hostile_values_and_volume(served: ServeProcess) -> None:
    trace = 0xABC
    spans = [
        llm_span(trace, 1, "fuzz-run", 1_000, 100),  # the one good call
        llm_span(trace, 2, "fuzz-run", None, None),  # no usage: counted, not priced
        llm_span(trace, 3, "fuzz-run", "many", "lots"),  # non-numeric: no usage
        llm_span(trace, 4, "fuzz-run", -5, -1),  # negative: no usage
        llm_span(trace, 5, "fuzz-run", 1_000, 100, huge="x" * 1_000_000),  # a 1 MB attribute
    ]
    response = httpx.post(served.http_url, content=request_with(spans), headers=PROTOBUF, timeout=60)
    assert response.status_code == 200
    (row,) = [r for r in report_json(served.store_url, "run") if r["run_id"] == "fuzz-run"]
    assert row["calls"] == 5
    assert row["no_usage_calls"] == 3
    assert row["cost_usd"] == pytest.approx(2 * mini_cost(1_000, 100))

    # 100k (non-LLM) spans in one request
    many = [
        Span(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"), name="db.query")
        for i in range(100_000)
    ]
    body = request_with(many)
    assert len(body) < 8 * 1024 * 1024
    response = httpx.post(served.http_url, content=body, headers=PROTOBUF, timeout=120)
    assert response.status_code == 200
    still_fine(served)


def test_json_with_garbage_ids_is_refused_by_name(served: ServeProcess) -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz-not-hex", "spanId": "00"}]}]}]}
    response = httpx.post(
        served.http_url, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "traceId 'zz-not-hex' is not a hex string" in partial["errorMessage"]


def test_healthz_after_all_that(served: ServeProcess) -> None:
    assert served.healthz()["status"] == "ok"
