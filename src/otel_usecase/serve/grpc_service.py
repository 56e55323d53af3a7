"""OTLP/gRPC receiver (``TraceService/Export``), for the collector's load-balancing exporter."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ..store import StoreUnavailable
from .auth import TokenCheck
from .ingest import Ingest
from .otlp import views_of

__all__ = ["start_grpc_server"]

logger = logging.getLogger("otel_usecase.serve")


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, ingest: Ingest, token: TokenCheck) -> None:
        self._ingest = ingest
        self._token = token

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self._token.enabled:
            metadata = {k: v for k, v in context.invocation_metadata()}
            if not self._token.allows(metadata.get("authorization")):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        decoded = views_of(request)
        try:
            self._ingest.write(decoded)
        except StoreUnavailable as exc:
            logger.warning("store unavailable, asking the sender to retry: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the cost store is unavailable; retry later")
        except Exception:
            logger.exception("could not process an OTLP request")
            context.abort(grpc.StatusCode.INTERNAL, "internal error while processing the spans")
        response = trace_service_pb2.ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = decoded.reason
        return response


def start_grpc_server(
    host: str, port: int, ingest: Ingest, token: TokenCheck, max_message_bytes: int, workers: int = 4
) -> grpc.Server:
    """Start the gRPC server on ``host:port``; raises ``OSError`` when the port cannot be bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otel-usecase-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(ingest, token), server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.start()
    return server
