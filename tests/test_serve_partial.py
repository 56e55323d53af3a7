"""``serve`` stores every span it can and refuses the others one by one (OTLP ``partial_success``).

One bad span must not cost the 99 good ones around it: a 500 / INTERNAL makes
the Collector drop the whole batch. Driven over real OTLP/HTTP (protobuf and
JSON) and OTLP/gRPC into a real ``otel-usecase serve``, and into the real SQLite
and PostgreSQL stores; a store outage (including a PostgreSQL turned read-only,
as after a failover) still answers 503 + Retry-After / UNAVAILABLE.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_usecase.cost.prices import PriceBook
from otel_usecase.serve.ingest import Ingest
from otel_usecase.serve.otlp import Decoded, Rejections, decode_protobuf

from .expect import mini_cost, report_json
from .pg import PostgresServer
from .servers import ServeProcess
from .test_fuzz_receiver import llm_span, request_with

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GOOD = 99


@pytest.fixture
def sqlite_served(tmp_path: Path) -> Iterator[ServeProcess]:
    with ServeProcess("sqlite:///" + str(tmp_path / "served.db")) as server:
        yield server


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_served(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[ServeProcess]:
    url = pg_server.create_database(
        f"serve_{request.node.name.lower()[:20].replace('-', '_').replace('[', '_')}"
    )
    with ServeProcess(url) as server:
        yield server


def good_spans(run: str, trace: int = 0x5EED) -> list[Span]:
    return [llm_span(trace, i + 1, run, 1_000, 100) for i in range(GOOD)]


def otlp_json_of(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON as senders write it: protobuf's JSON mapping with hex, not base64, ids."""
    data = json_format.MessageToDict(request)
    for resource in data["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return data


def export(server: ServeProcess, protocol: str, body: bytes | dict[str, Any]) -> ExportTraceServiceResponse:
    """Send one export request; returns the OTLP response of a success, fails the test otherwise."""
    if protocol == "grpc":
        assert isinstance(body, bytes)
        with grpc.insecure_channel(server.grpc_endpoint) as channel:
            call = channel.unary_unary(
                EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
            )
            response: ExportTraceServiceResponse = call(body, timeout=60)
            return response
    if protocol == "http-json":
        reply = httpx.post(
            server.http_url,
            content=json.dumps(body),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        return json_format.ParseDict(reply.json(), ExportTraceServiceResponse())
    assert isinstance(body, bytes)
    reply = httpx.post(
        server.http_url, content=body, headers={"content-type": "application/x-protobuf"}, timeout=60
    )
    assert reply.status_code == 200, reply.content
    return ExportTraceServiceResponse.FromString(reply.content)


def calls_of(store_url: str, run: str) -> tuple[int, float]:
    rows = [r for r in report_json(store_url, "run") if r["run_id"] == run]
    return (rows[0]["calls"], rows[0]["cost_usd"]) if rows else (0, 0.0)


@pytest.mark.parametrize("protocol", ["http-protobuf", "http-json", "grpc"])
def test_a_span_with_an_impossible_timestamp_is_refused_alone(
    sqlite_served: ServeProcess, protocol: str
) -> None:
    bad = llm_span(0xBAD, 0xBAD, "partial")
    bad.start_time_unix_nano = 2**64 - 1  # a fixed64 no ledger column (signed 64-bit) can hold
    request = ExportTraceServiceRequest.FromString(
        request_with([*good_spans("partial")[:50], bad, *good_spans("partial")[50:]])
    )
    body: bytes | dict[str, Any] = (
        otlp_json_of(request) if protocol == "http-json" else request.SerializeToString()
    )

    response = export(sqlite_served, protocol, body)

    assert response.partial_success.rejected_spans == 1
    message = response.partial_success.error_message
    assert "0000000000000bad" in message and str(2**64 - 1) in message and "2**63" in message
    calls, cost = calls_of(sqlite_served.store_url, "partial")
    assert calls == GOOD
    assert cost == pytest.approx(GOOD * mini_cost(1_000, 100))
    assert sqlite_served.healthz()["spans_rejected"] == 1


def test_json_spans_that_do_not_decode_are_refused_alone(sqlite_served: ServeProcess) -> None:
    """Out-of-range numbers, ids that are not hex and lone surrogates fail protobuf's JSON parser span by span."""
    data = otlp_json_of(ExportTraceServiceRequest.FromString(request_with(good_spans("json-partial"))))
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[3]["startTimeUnixNano"] = str(2**64)  # beyond uint64
    spans[4]["traceId"] = "zz-not-hex"
    spans[5]["name"] = "\udcff"  # a lone surrogate, as any JSON sender can write it
    spans[6]["spanId"] = "abc"
    spans[7]["endTimeUnixNano"] = "-1"
    response = export(sqlite_served, "http-json", data)
    assert response.partial_success.rejected_spans == 5
    message = response.partial_success.error_message
    assert message.startswith("5 spans rejected: ") and message.endswith(
        "; and 2 more"
    )  # the first 3 reasons
    assert "startTimeUnixNano" in message and "zz-not-hex" in message and "surrogate" in message
    assert calls_of(sqlite_served.store_url, "json-partial")[0] == GOOD - 5


@pytest.mark.parametrize("protocol", ["http-protobuf", "grpc"])
def test_a_protobuf_span_with_bad_utf8_is_refused_alone(sqlite_served: ServeProcess, protocol: str) -> None:
    """A sender that does not validate UTF-8 (a whole-request parse fails) still gets its good spans stored."""
    bad = llm_span(0xBAD, 0xBAD, "utf8")
    bad.name = "BAD-NAME"
    body = request_with([*good_spans("utf8"), bad])
    assert body.count(b"BAD-NAME") == 1
    body = body.replace(b"BAD-NAME", b"BAD\xff\xfeAME")  # same length: the framing stays valid
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(body)  # what a whole-request parser does with it

    response = export(sqlite_served, protocol, body)

    assert response.partial_success.rejected_spans == 1
    assert (
        "span 0000000000000bad of trace 00000000000000000000000000000bad"
        in response.partial_success.error_message
    )
    assert calls_of(sqlite_served.store_url, "utf8")[0] == GOOD


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_calls_the_store_refuses_are_reported_as_their_spans(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The store's ``RejectedCall`` list maps back to the request's spans (by trace id + span id).

    The decoders already refuse what they can see; this is what a store refuses on
    its own (here a timestamp beyond signed 64 bits, as a decoder without that check
    would hand over): the 99 others are written, the one is reported.
    """
    if kind == "postgresql":
        pg_server: PostgresServer = request.getfixturevalue("pg_server")
        url = pg_server.create_database(f"refused_{tmp_path.name[-12:].lower().replace('-', '_')}")
    else:
        url = "sqlite:///" + str(tmp_path / "refused.db")
    good = decode_protobuf(request_with(good_spans("refused"))).spans
    unstorable = good[0]._replace(span_id=0xBAD, start_ns=2**64 - 1, end_ns=2**64 - 1)
    ingest = Ingest(url, PriceBook())
    ingest.open()
    try:
        rejections = ingest.write(Decoded([*good[:10], unstorable, *good[10:]], Rejections()))
    finally:
        ingest.close()
    assert rejections.count == 1
    assert "span 0000000000000bad of trace" in rejections.message()
    calls, cost = calls_of(url, "refused")
    assert calls == GOOD
    assert cost == pytest.approx(GOOD * mini_cost(1_000, 100))


def test_read_only_postgres_answers_503_and_the_retry_lands(
    pg_server: PostgresServer, pg_served: ServeProcess
) -> None:
    """A failover leaves the old primary read-only: the sender must keep the data and retry."""
    body = request_with(good_spans("read-only"))

    def set_read_only(on: bool) -> None:
        with psycopg.connect(pg_server.url_for("postgres"), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
            conn.execute("SELECT pg_reload_conf()")

    export(pg_served, "http-protobuf", request_with([llm_span(0x1, 0x1, "warm-up")]))  # connected
    set_read_only(True)
    try:
        reply = httpx.post(
            pg_served.http_url, content=body, headers={"content-type": "application/x-protobuf"}, timeout=60
        )
        assert (reply.status_code, reply.headers.get("retry-after", "").isdigit()) == (503, True), (
            reply.content
        )
        with grpc.insecure_channel(pg_served.grpc_endpoint) as channel:
            call = channel.unary_unary(
                EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
            )
            with pytest.raises(grpc.RpcError) as info:
                call(body, timeout=60)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        set_read_only(False)
    assert export(pg_served, "http-protobuf", body).partial_success.rejected_spans == 0  # the sender's retry
    assert calls_of(pg_served.store_url, "read-only")[0] == GOOD


def test_a_resource_that_does_not_decode_refuses_its_spans_only() -> None:
    """The span-by-span fallback: spans of a resource with bad UTF-8 are refused with their count."""

    def resource_spans(service: str, first: int, n: int) -> ResourceSpans:
        resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
        spans = [llm_span(0x7E, first + i, "resources") for i in range(n)]
        return ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])

    request = ExportTraceServiceRequest(
        resource_spans=[resource_spans("good-svc", 1, 5), resource_spans("BAD-SVC!", 100, 3)]
    )
    body = request.SerializeToString().replace(b"BAD-SVC!", b"BAD\xffSVC!")
    decoded = decode_protobuf(body)
    assert sorted(s.span_id for s in decoded.spans) == [1, 2, 3, 4, 5]
    assert {s.service for s in decoded.spans} == {"good-svc"}
    assert decoded.rejections.count == 3
    assert decoded.rejections.message().startswith(
        "3 spans rejected: 3 spans of a resource that does not decode"
    )
