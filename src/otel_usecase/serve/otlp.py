"""OTLP trace requests (protobuf or JSON) decoded into the cost engine's span view.

The receiver feeds the very same :func:`otel_usecase.calls.calls_from_spans` as
the in-process exporter; this module only turns wire data into
:class:`~otel_usecase.calls.SpanView` objects. Spans that cannot be used (ids of
the wrong length) are counted as rejected for OTLP partial success.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that
matters: trace and span ids are hex strings, not base64. They are rewritten
before parsing; unknown fields are ignored, as the OTLP spec requires.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ..calls import ENGINE_KEYS, SpanView

__all__ = ["Decoded", "OTLPDecodeError", "decode_json", "decode_protobuf", "encode_response", "views_of"]

_STATUS_CODE_ERROR: Final = 2
_new_tuple: Final = tuple.__new__

_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class OTLPDecodeError(ValueError):
    """The request body is not a valid OTLP trace export request."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """The usable spans of one request and how many were rejected, with why."""

    spans: list[SpanView]
    rejected: int
    reason: str = ""


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OTLPDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from None
    return request


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON hex ids in place into the base64 that protobuf's JSON parser expects."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _ID_FIELDS and isinstance(value, str):
                    try:
                        item[key] = base64.b64encode(bytes.fromhex(value)).decode() if value else ""
                    except ValueError:
                        raise OTLPDecodeError(f"{key} {value[:40]!r} is not a hex string") from None
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON ``ExportTraceServiceRequest`` (hex ids, int64 as strings)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OTLPDecodeError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OTLPDecodeError("body is not a JSON object")
    _hex_ids_to_base64(data)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, ValueError, TypeError) as exc:
        raise OTLPDecodeError(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind == "kvlist_value":
        return json.dumps({kv.key: _value(kv.value) for kv in v.kvlist_value.values}, default=str)
    return None


def _engine_attributes(key_values: Any, engine_keys: frozenset[str] = ENGINE_KEYS) -> dict[str, Any]:
    """The attributes the cost engine reads, converted from protobuf.

    Every protobuf field read builds a Python object (about 1 us per attribute),
    and prompts or completions can be most of a span: only ``ENGINE_KEYS`` are
    converted. Most of those are non-empty strings, read without asking which
    kind of value it is (``WhichOneof`` looks the oneof up by name on every call).
    """
    attributes: dict[str, Any] = {}
    for kv in key_values:
        key = kv.key
        if key not in engine_keys:
            continue
        value = kv.value
        text = value.string_value
        if text:
            attributes[key] = text
            continue
        kind = value.WhichOneof("value")
        if kind == "int_value":
            attributes[key] = value.int_value
        elif kind == "string_value":
            attributes[key] = text
        else:
            attributes[key] = _value(value)
    return attributes


def views_of(request: ExportTraceServiceRequest) -> Decoded:
    """The request's spans as :class:`SpanView` objects, plus the rejected count."""
    views: list[SpanView] = []
    rejected = 0
    for resource_spans in request.resource_spans:
        service = None
        for kv in resource_spans.resource.attributes:
            if kv.key == "service.name":
                service = kv.value.string_value or None
                break
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != 16 or len(span_id) != 8:
                    rejected += 1
                    continue
                parent = span.parent_span_id
                # SpanView's fields in order, through tuple.__new__: NamedTuple's generated
                # __new__ is a Python call with keyword handling, once per span.
                views.append(
                    _new_tuple(
                        SpanView,
                        (
                            int.from_bytes(trace_id, "big"),
                            int.from_bytes(span_id, "big"),
                            int.from_bytes(parent, "big") if len(parent) == 8 else None,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            _engine_attributes(span.attributes),
                            span.status.code == _STATUS_CODE_ERROR,
                            service,
                        ),
                    )
                )
    reason = (
        f"{rejected} spans have a trace id that is not 16 bytes or a span id that is not 8 bytes"
        if rejected
        else ""
    )
    return Decoded(views, rejected, reason)


def encode_response(rejected: int, message: str, as_json: bool) -> bytes:
    """An ``ExportTraceServiceResponse``, with partial success when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if as_json:
        return json.dumps(json_format.MessageToDict(response)).encode()
    serialized: bytes = response.SerializeToString()
    return serialized
