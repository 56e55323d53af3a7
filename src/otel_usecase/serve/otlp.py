"""OTLP trace requests (protobuf or JSON) decoded into the cost engine's span view.

The receiver feeds the very same :func:`otel_usecase.cost.calls.calls_from_spans` as
the in-process exporter; this module only turns wire data into
:class:`~otel_usecase.cost.calls.SpanView` objects.

A span that cannot be used is refused alone, never the request around it: the
sender learns about it through OTLP ``partial_success`` (a whole-request error
makes the Collector drop every good span with the bad one). Refused are spans
with ids of the wrong length, timestamps no ledger column can hold (>= 2**63 ns),
and spans that do not decode at all (bad UTF-8, out-of-range JSON numbers). A
protobuf body is parsed whole first; only when that fails is it split span by
span (:mod:`.wire`), so well-formed requests pay nothing for this.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that
matters: trace and span ids are hex strings, not base64. They are rewritten
before parsing; unknown fields are ignored, as the OTLP spec requires.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ..cost.calls import ENGINE_KEYS, SpanView
from ..scope.keys import TAG_NAMES, TAG_PREFIX
from .wire import WireError, fields

__all__ = [
    "Decoded",
    "OTLPDecodeError",
    "Rejections",
    "decode_json",
    "decode_protobuf",
    "encode_response",
    "response_of",
    "views_of",
]

_STATUS_CODE_ERROR: Final = 2
_new_tuple: Final = tuple.__new__
_NS_LIMIT: Final = 1 << 63
"""Timestamps are signed 64-bit integers in both stores (SQLite ``INTEGER``, PostgreSQL ``bigint``)."""
MAX_REASONS: Final = 3
"""Reasons quoted in ``partial_success.error_message``: enough to act on, short enough to log."""
_MAX_REASON_CHARS: Final = 300

_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_UNDECODABLE: Final = (json_format.ParseError, DecodeError, ValueError, TypeError, RuntimeError)


class OTLPDecodeError(ValueError):
    """The request body is not a valid OTLP trace export request."""


@dataclass(slots=True)
class Rejections:
    """Spans refused one by one: how many, and the first few reasons (for ``partial_success``)."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)
    unshown: int = 0
    """Reasons left out of :attr:`reasons` (only the first :data:`MAX_REASONS` are kept)."""

    def add(self, reason: str, spans: int = 1) -> None:
        self.count += spans
        if len(self.reasons) >= MAX_REASONS:
            self.unshown += 1
        elif len(reason) <= _MAX_REASON_CHARS:
            self.reasons.append(reason)
        else:
            self.reasons.append(reason[:_MAX_REASON_CHARS] + "...")

    def copy(self) -> Rejections:
        return Rejections(self.count, list(self.reasons), self.unshown)

    def message(self) -> str:
        """``partial_success.error_message``: the count and the first reasons."""
        if not self.count:
            return ""
        more = f"; and {self.unshown} more" if self.unshown else ""
        return f"{self.count} span{'s' if self.count != 1 else ''} rejected: {'; '.join(self.reasons)}{more}"


@dataclass(frozen=True, slots=True)
class Decoded:
    """The usable spans of one request, and the ones refused with why."""

    spans: list[SpanView]
    rejections: Rejections


def decode_protobuf(body: bytes) -> Decoded:
    """Decode a binary ``ExportTraceServiceRequest``; undecodable spans are refused one by one."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        return _span_by_span(body, exc)
    return views_of(request)


def _span_by_span(body: bytes, error: Exception) -> Decoded:
    """The request parsed piece by piece after a whole-body parse failed: bad spans are refused alone."""
    request = ExportTraceServiceRequest()
    rejections = Rejections()
    try:
        for number, wire_type, raw, payload in fields(body):
            if number == 1 and wire_type == 2:
                _resource_spans(request.resource_spans.add(), payload, rejections)
            else:
                request.MergeFromString(raw)
    except (WireError, DecodeError, RuntimeError, ValueError):
        raise OTLPDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {error}") from None
    return views_of(request, rejections)


def _resource_spans(message: Any, data: bytes, rejections: Rejections) -> None:
    """One ``ResourceSpans`` (field 2: ``ScopeSpans``); a resource that does not decode refuses its spans."""
    parts = list(fields(data))
    scopes = [payload for number, wire_type, _, payload in parts if number == 2 and wire_type == 2]
    try:
        for number, wire_type, raw, _ in parts:
            if not (number == 2 and wire_type == 2):
                message.MergeFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        message.Clear()
        count = sum(_span_count(scope) for scope in scopes)
        rejections.add(f"{count} spans of a resource that does not decode: {exc}", count)
        return
    for scope in scopes:
        _scope_spans(message.scope_spans.add(), scope, rejections)


def _span_count(scope: bytes) -> int:
    return sum(1 for number, wire_type, _, _ in fields(scope) if number == 2 and wire_type == 2)


def _scope_spans(message: Any, data: bytes, rejections: Rejections) -> None:
    """One ``ScopeSpans`` (field 2: ``Span``), each span parsed alone."""
    for number, wire_type, raw, payload in fields(data):
        if number == 2 and wire_type == 2:
            span = message.spans.add()
            try:
                span.MergeFromString(payload)
            except (DecodeError, RuntimeError, ValueError) as exc:
                del message.spans[-1]
                rejections.add(f"{_raw_span_name(payload)} does not decode: {exc}")
        else:
            try:
                message.MergeFromString(raw)
            except (DecodeError, RuntimeError, ValueError) as exc:
                message.Clear()
                count = _span_count(data)
                rejections.add(f"{count} spans of a scope that does not decode: {exc}", count)
                return


def _raw_span_name(payload: bytes) -> str:
    """``span <id> of trace <id>`` read from a span's undecodable bytes (fields 1 and 2), if there."""
    ids: dict[int, bytes] = {}
    try:
        for number, wire_type, _, value in fields(payload):
            if number in (1, 2) and wire_type == 2:
                ids.setdefault(number, value)
    except WireError:
        pass
    return _span_name(ids.get(1, b"").hex(), ids.get(2, b"").hex())


def _span_name(trace_id: str, span_id: str) -> str:
    return f"span {span_id[:40] or '?'} of trace {trace_id[:40] or '?'}"


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


def _list_of(node: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = node.get(camel, node.get(snake, []))
    if not isinstance(value, list):
        raise OTLPDecodeError(f"{where}.{camel} is not a list")
    return value


def _parse_into(data: Any, message: Message, what: str) -> None:
    if not isinstance(data, dict):
        raise OTLPDecodeError(f"{what} is not a JSON object")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except _UNDECODABLE as exc:
        raise OTLPDecodeError(str(exc)) from None


def _json_span_name(span: Any) -> str:
    if not isinstance(span, dict):
        return "a span"
    trace_id = span.get("traceId", span.get("trace_id", ""))
    span_id = span.get("spanId", span.get("span_id", ""))
    return _span_name(repr(trace_id) if trace_id else "", repr(span_id) if span_id else "")


def decode_json(body: bytes) -> Decoded:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest`` (hex ids, int64 as strings) span by span."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OTLPDecodeError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise OTLPDecodeError("body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise OTLPDecodeError("body is not a JSON object")
    request = ExportTraceServiceRequest()
    rejections = Rejections()
    for resource_json in _list_of(data, "resourceSpans", "resource_spans", "body"):
        if not isinstance(resource_json, dict):
            raise OTLPDecodeError("an entry of resourceSpans is not a JSON object")
        scopes = _list_of(resource_json, "scopeSpans", "scope_spans", "resourceSpans[]")
        spans_of = [
            _list_of(s, "spans", "spans", "scopeSpans[]") if isinstance(s, dict) else [] for s in scopes
        ]
        resource = request.resource_spans.add()
        try:
            head = {k: v for k, v in resource_json.items() if k not in ("scopeSpans", "scope_spans")}
            _parse_into(head, resource, "a resource")
        except OTLPDecodeError as exc:
            count = sum(len(s) for s in spans_of)
            rejections.add(f"{count} spans of a resource that does not decode: {exc}", count)
            del request.resource_spans[-1]
            continue
        for scope_json, spans in zip(scopes, spans_of, strict=True):
            scope = resource.scope_spans.add()
            try:
                head = (
                    {k: v for k, v in scope_json.items() if k != "spans"}
                    if isinstance(scope_json, dict)
                    else scope_json
                )
                _parse_into(head, scope, "an entry of scopeSpans")
            except OTLPDecodeError as exc:
                rejections.add(f"{len(spans)} spans of a scope that does not decode: {exc}", len(spans))
                del resource.scope_spans[-1]
                continue
            for span_json in spans:
                span = scope.spans.add()
                name = _json_span_name(span_json)  # before the ids are rewritten
                try:
                    _parse_into(span_json, span, "a span")
                except OTLPDecodeError as exc:
                    del scope.spans[-1]
                    rejections.add(f"{name} does not decode: {exc}")
    return views_of(request, rejections)


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
    and prompts or completions can be most of a span: only ``ENGINE_KEYS`` and the
    tags (``usecase.tag.<key>``, listed under ``usecase.tags`` for the engine) are
    converted. Most of those are non-empty strings, read without asking which
    kind of value it is (``WhichOneof`` looks the oneof up by name on every call).
    """
    attributes: dict[str, Any] = {}
    tags: list[str] | None = None
    for kv in key_values:
        key = kv.key
        if key not in engine_keys:
            if not key.startswith(TAG_PREFIX):
                continue
            tags = [key[len(TAG_PREFIX) :]] if tags is None else [*tags, key[len(TAG_PREFIX) :]]
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
    # The tags are the usecase.tag.<key> attributes the span has, whatever list it was sent with
    # (a service without our span processor sends none): the cost engine reads them through the list.
    if tags is not None:
        attributes[TAG_NAMES] = ",".join(tags)
    elif TAG_NAMES in attributes:
        del attributes[TAG_NAMES]
    return attributes


def views_of(request: ExportTraceServiceRequest, rejections: Rejections | None = None) -> Decoded:
    """The request's usable spans as :class:`SpanView` objects; the others go to ``rejections``."""
    views: list[SpanView] = []
    if rejections is None:
        rejections = Rejections()
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
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                if len(trace_id) != 16 or len(span_id) != 8 or start >= _NS_LIMIT or end >= _NS_LIMIT:
                    rejections.add(_unusable(trace_id, span_id, start, end))
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
                            start,
                            end,
                            _engine_attributes(span.attributes),
                            span.status.code == _STATUS_CODE_ERROR,
                            service,
                        ),
                    )
                )
    return Decoded(views, rejections)


def _unusable(trace_id: bytes, span_id: bytes, start: int, end: int) -> str:
    """Why a decoded span cannot become a ledger row, naming the span and the value."""
    name = _span_name(trace_id.hex(), span_id.hex())
    if len(trace_id) != 16:
        return f"{name}: the trace id is {len(trace_id)} bytes, not 16"
    if len(span_id) != 8:
        return f"{name}: the span id is {len(span_id)} bytes, not 8"
    which, value = ("start_time_unix_nano", start) if start >= _NS_LIMIT else ("end_time_unix_nano", end)
    return f"{name}: {which} {value} is not below 2**63 (no timestamp before the year 2262 is)"


def response_of(rejections: Rejections) -> ExportTraceServiceResponse:
    """An ``ExportTraceServiceResponse``, with partial success when spans were refused."""
    response = ExportTraceServiceResponse()
    if rejections.count:
        response.partial_success.rejected_spans = rejections.count
        response.partial_success.error_message = rejections.message()
    return response


def encode_response(rejections: Rejections, as_json: bool) -> bytes:
    """:func:`response_of`, serialized as protobuf or OTLP/JSON."""
    response = response_of(rejections)
    if as_json:
        return json.dumps(json_format.MessageToDict(response)).encode()
    serialized: bytes = response.SerializeToString()
    return serialized
