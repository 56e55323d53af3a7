"""Benchmark 3: ``otel-usecase serve`` throughput over loopback, OTLP/HTTP protobuf and OTLP/gRPC.

The real console command runs as a subprocess on free 127.0.0.1 ports with a
SQLite store in a temporary directory (``tests/servers.py``'s ``ServeProcess``,
default ``--workers 4``). Three sender processes post OTLP
``ExportTraceServiceRequest`` batches of 512 LLM spans (the attributes of
``_spans.py``, encoded by the OTLP exporter's own encoder), one request at a
time each, back to back. Each request carries new trace ids (a 12-byte prefix of
every trace id is replaced in the pre-serialized body), so every span is a new
ledger row. HTTP senders use ``http.client`` with keep-alive; gRPC senders use
``TraceServiceStub`` (parsing the patched body into a message per request).

Repetitions alternate HTTP and gRPC windows against the same server; spans/s
is the spans accepted in a window divided by the window's wall time (all
senders), median over windows; latency percentiles pool every request of a
protocol. The server's CPU time per window comes from /proc/PID/stat. The
machine has 2 cores, shared by the server and the three senders.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from typing import Any

from _common import fmt_rate, log, median, percentile, row

NAME = "receiver"
BATCH = 512
SENDERS = 3


def build_body(rng: random.Random, prefix: bytes) -> bytes:
    """One serialized request of ``BATCH`` LLM spans whose trace ids all start with ``prefix``."""
    from _spans import llm_attributes, readable_llm_span, run_pool
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    resource = Resource.create({"service.name": "bench-app", "service.version": "1.2.3"})
    scope = InstrumentationScope("opentelemetry.instrumentation.openai.v1", "0.62.4")
    pool = run_pool(1000, rng)
    base = int.from_bytes(prefix, "big") << 32
    spans = []
    now = time.time_ns()
    for i in range(BATCH):
        trace_id = base | (i // 2)  # two LLM spans per trace
        spans.append(
            readable_llm_span(
                trace_id,
                rng.getrandbits(64) | 1,
                llm_attributes(rng, rng.choice(pool)),
                now - rng.randrange(10**12),
                parent_span_id=rng.getrandbits(64) | 1,
                resource=resource,
                scope=scope,
            )
        )
    body = encode_spans(spans).SerializeToString()
    if body.count(prefix) != BATCH:
        raise AssertionError("the trace id prefix is not unique in the body")
    return body


def _sender(protocol: str, target: str, body: bytes, prefix: bytes, start_at: float, duration: float, out: Any) -> None:
    """Post ``body`` with fresh trace ids back to back from ``start_at`` for ``duration`` seconds."""
    latencies: list[float] = []
    ok = failed = 0
    if protocol == "http":
        host, port = target.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Content-Type": "application/x-protobuf"}

        def send(payload: bytes) -> bool:
            conn.request("POST", "/v1/traces", payload, headers)
            response = conn.getresponse()
            response.read()
            return response.status == 200
    else:
        import grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        stub = TraceServiceStub(channel)

        def send(payload: bytes) -> bool:
            response = stub.Export(ExportTraceServiceRequest.FromString(payload), timeout=60)
            return not response.partial_success.rejected_spans

    send(body.replace(prefix, os.urandom(len(prefix))))  # connect, warm up (not counted)
    while time.time() < start_at:
        time.sleep(0.001)
    first = time.time()
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        payload = body.replace(prefix, os.urandom(len(prefix)))
        started = time.perf_counter()
        try:
            good = send(payload)
        except Exception:  # noqa: BLE001 - counted as a failure
            good = False
        latencies.append(time.perf_counter() - started)
        if good:
            ok += 1
        else:
            failed += 1
    out.put({"ok": ok, "failed": failed, "latencies": latencies, "first": first, "last": time.time()})


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window(ctx: Any, protocol: str, target: str, body: bytes, prefix: bytes, duration: float, pid: int) -> dict[str, Any]:
    out = ctx.Queue()
    start_at = time.time() + 1.5  # time for the senders to start and warm up
    procs = [
        ctx.Process(target=_sender, args=(protocol, target, body, prefix, start_at, duration, out))
        for _ in range(SENDERS)
    ]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_before = _cpu_seconds(pid)
    results = [out.get(timeout=duration + 120) for _ in procs]
    cpu_after = _cpu_seconds(pid)
    for p in procs:
        p.join(timeout=30)
    ok = sum(r["ok"] for r in results)
    wall = max(r["last"] for r in results) - min(r["first"] for r in results)
    return {
        "spans": ok * BATCH,
        "rate": ok * BATCH / wall,
        "failed": sum(r["failed"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "server_cpu": (cpu_after - cpu_before) / wall,
    }


def run(quick: bool) -> list[dict]:
    from tests.servers import ServeProcess

    duration = 2.0 if quick else 8.0
    reps = 1 if quick else 3
    rng = random.Random(7)
    prefix = os.urandom(12)
    body = build_body(rng, prefix)
    directory = tempfile.mkdtemp(prefix="otel-usecase-bench-")
    ctx = multiprocessing.get_context("spawn")
    windows: dict[str, list[dict[str, Any]]] = {"http": [], "grpc": []}
    try:
        with ServeProcess(f"sqlite:///{directory}/costs.db") as server:
            assert server.proc is not None
            targets = {"http": f"127.0.0.1:{server.http_port}", "grpc": server.grpc_endpoint}
            written_before = server.healthz()["calls_written"]
            for i in range(reps):
                for protocol in ("http", "grpc") if i % 2 == 0 else ("grpc", "http"):
                    log(f"receiver: {protocol} window {i + 1}/{reps}, {SENDERS} senders x {duration:.0f} s, body {len(body) // 1024} KiB")
                    windows[protocol].append(
                        _window(ctx, protocol, targets[protocol], body, prefix, duration, server.proc.pid)
                    )
            written = server.healthz()["calls_written"] - written_before
            code, err = server.terminate()
            if code != 0:
                raise RuntimeError(f"otel-usecase serve exited with {code}: {err[-2000:]}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    accepted = sum(w["spans"] for ws in windows.values() for w in ws)
    warmup = 2 * SENDERS * reps * BATCH  # one warm-up request per sender per window
    rows = []
    for protocol, label in (("http", "OTLP/HTTP protobuf"), ("grpc", "OTLP/gRPC")):
        ws = windows[protocol]
        rate = median(w["rate"] for w in ws)
        latencies = [x for w in ws for x in w["latencies"]]
        failed = sum(w["failed"] for w in ws)
        cpu = median(w["server_cpu"] for w in ws)
        rows.append(
            row(
                NAME,
                f"{label}, {SENDERS} senders, batches of {BATCH}",
                f"{fmt_rate(rate)} spans per process (server CPU {cpu:.2f} cores; "
                f"{fmt_rate(rate / cpu) if cpu else '?'} per CPU-second){f'; {failed} FAILED requests' if failed else ''}",
                "≥ 20k/s",
                rate >= 20_000 and not failed,
            )
        )
        rows.append(
            row(
                NAME,
                f"{label} request latency",
                f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms "
                f"({len(latencies)} requests)",
                "",
                None,
            )
        )
    consistent = written == accepted + warmup
    rows.append(
        row(
            NAME,
            "ledger rows written = spans accepted",
            f"{written} written, {accepted + warmup} accepted",
            "equal",
            consistent,
        )
    )
    return rows
