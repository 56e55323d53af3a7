"""OTLP/gRPC receiver (``TraceService/Export``), for the collector's load-balancing exporter.

The request arrives as raw bytes and is decoded by :func:`.otlp.decode_protobuf`,
as over HTTP: a span that does not decode is refused alone (``partial_success``),
where the generated stub's deserializer would fail the whole request.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Final

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ..store import StoreUnavailable
from .auth import TokenCheck
from .ingest import Ingest
from .otlp import OTLPDecodeError, decode_protobuf, response_of

__all__ = ["start_grpc_server"]

logger = logging.getLogger("otel_usecase.serve")

_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"


class _TraceService:
    def __init__(self, ingest: Ingest, token: TokenCheck) -> None:
        self._ingest = ingest
        self._token = token

    def export(
        self, body: bytes, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self._token.enabled:
            metadata = {k: v for k, v in context.invocation_metadata()}
            if not self._token.allows(metadata.get("authorization")):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            rejections = self._ingest.write(decode_protobuf(body))
        except OTLPDecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable as exc:
            logger.warning("store unavailable, asking the sender to retry: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the cost store is unavailable; retry later")
        except Exception:
            logger.exception("could not process an OTLP request")
            context.abort(grpc.StatusCode.INTERNAL, "internal error while processing the spans")
        return response_of(rejections)


def _options(max_message_bytes: int, read_timeout: float) -> list[tuple[str, int]]:
    """Server channel arguments that bound what a slow, idle or vanished client can hold.

    A connection must finish its handshake within the read timeout. The server
    pings a connection quiet for a minute and drops it when the ping is not
    answered within 20 s (a peer that vanished without closing). An idle
    connection is closed after 5 minutes and any connection after 30 minutes,
    with the read timeout as grace for a request still arriving on it: so a
    stream that never finishes is cut off. The Collector's exporters reconnect
    on their own, and a load-balancing exporter spreads load better for it.
    """
    read_ms = max(int(read_timeout * 1000), 1)
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.server_handshake_timeout_ms", read_ms),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.max_connection_idle_ms", 5 * 60_000),
        ("grpc.max_connection_age_ms", 30 * 60_000),
        ("grpc.max_connection_age_grace_ms", read_ms),
    ]


def start_grpc_server(
    host: str,
    port: int,
    ingest: Ingest,
    token: TokenCheck,
    max_message_bytes: int,
    workers: int = 4,
    read_timeout: float = 30.0,
) -> grpc.Server:
    """Start the gRPC server on ``host:port``; raises ``OSError`` when the port cannot be bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otel-usecase-grpc"),
        options=_options(max_message_bytes, read_timeout),
    )
    export = grpc.unary_unary_rpc_method_handler(
        _TraceService(ingest, token).export,
        request_deserializer=None,  # raw bytes: decoded span by span when the whole does not parse
        response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": export}),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.start()
    return server
