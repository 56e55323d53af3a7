"""OTLP/HTTP receiver as a plain ASGI application (served by uvicorn).

Follows the OTLP/HTTP spec: ``POST /v1/traces`` with ``application/x-protobuf``
or ``application/json``, optional ``Content-Encoding: gzip``; the response uses
the request's encoding; failures carry a ``google.rpc.Status`` body. The body
limit applies after decompression (over all gzip members), so a small gzip bomb
is refused with 413 without ever being inflated past the limit. A body that does
not arrive within the read timeout gets 408 and the connection is closed (the
headers' share of that bound is kept by :mod:`.http_timeout`). Decoding, pricing
and the store write run on a worker thread so the event loop keeps accepting
requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Final

from google.rpc import status_pb2

from ..store import StoreUnavailable
from .auth import TokenCheck
from .ingest import Ingest
from .otlp import OTLPDecodeError, Rejections, decode_json, decode_protobuf, encode_response

__all__ = ["OTLPHttpApp"]

logger = logging.getLogger("otel_usecase.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_PROTOBUF: Final = "application/x-protobuf"
_JSON: Final = "application/json"
_GRPC_INVALID_ARGUMENT: Final = 3
_GRPC_DEADLINE_EXCEEDED: Final = 4
_GRPC_UNAUTHENTICATED: Final = 16
_GRPC_RESOURCE_EXHAUSTED: Final = 8
_GRPC_UNAVAILABLE: Final = 14
_GRPC_INTERNAL: Final = 13
_GRPC_UNIMPLEMENTED: Final = 12
RETRY_AFTER_S: Final = 5
_GZIP: Final = (b"gzip", b"x-gzip")
_IDENTITY: Final = (b"identity", b"")


class _Refused(Exception):
    def __init__(self, status: int, code: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class OTLPHttpApp:
    """ASGI app: ``POST /v1/traces`` and ``GET /healthz``."""

    def __init__(
        self, ingest: Ingest, token: TokenCheck, max_body_bytes: int, executor: Executor, read_timeout: float
    ) -> None:
        self.ingest = ingest
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.executor = executor
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        if path == "/healthz":
            health = {
                "status": "ok",
                "calls_written": self.ingest.calls_written,
                "outcomes_written": self.ingest.outcomes_written,
                "spans_rejected": self.ingest.spans_rejected,
            }
            body = json.dumps(health).encode()
            await _respond(send, 200, _JSON, body)
            return
        as_json = False
        try:
            if path != "/v1/traces":
                raise _Refused(
                    404, _GRPC_UNIMPLEMENTED, f"no such path {path!r}: OTLP traces go to /v1/traces"
                )
            if method != "POST":
                raise _Refused(405, _GRPC_UNIMPLEMENTED, "use POST", ((b"allow", b"POST"),))
            headers = {k.lower(): v for k, v in scope["headers"]}
            if not self.token.allows(headers.get(b"authorization")):
                raise _Refused(
                    401,
                    _GRPC_UNAUTHENTICATED,
                    "missing or wrong bearer token",
                    ((b"www-authenticate", b"Bearer"),),
                )
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
            if content_type not in (_PROTOBUF, _JSON):
                raise _Refused(
                    415,
                    _GRPC_INVALID_ARGUMENT,
                    f"Content-Type {content_type!r} is not {_PROTOBUF} or {_JSON}",
                )
            as_json = content_type == _JSON
            encoding = headers.get(b"content-encoding", b"identity").strip().lower()
            if encoding not in _GZIP and encoding not in _IDENTITY:
                raise _Refused(
                    415,
                    _GRPC_INVALID_ARGUMENT,
                    f"Content-Encoding {encoding.decode('latin-1')!r} is not supported: "
                    "send the body uncompressed or with Content-Encoding: gzip",
                )
            body = await self._read_body(receive, headers.get(b"content-length"))
            if encoding in _GZIP:
                body = self._gunzip(body)
            loop = asyncio.get_running_loop()
            rejections = await loop.run_in_executor(self.executor, self._process, body, as_json)
        except _Refused as refused:
            await _respond(
                send,
                refused.status,
                _JSON if as_json else _PROTOBUF,
                _status_body(refused.code, refused.message, as_json),
                refused.headers,
            )
            return
        await _respond(send, 200, _JSON if as_json else _PROTOBUF, encode_response(rejections, as_json))

    def _process(self, body: bytes, as_json: bool) -> Rejections:
        try:
            decoded = decode_json(body) if as_json else decode_protobuf(body)
            return self.ingest.write(decoded)
        except OTLPDecodeError as exc:
            raise _Refused(400, _GRPC_INVALID_ARGUMENT, str(exc)) from None
        except StoreUnavailable as exc:
            logger.warning("store unavailable, asking the sender to retry: %s", exc)
            raise _Refused(
                503,
                _GRPC_UNAVAILABLE,
                "the cost store is unavailable; retry later",
                ((b"retry-after", str(RETRY_AFTER_S).encode()),),
            ) from None
        except Exception:
            logger.exception("could not process an OTLP request")
            raise _Refused(500, _GRPC_INTERNAL, "internal error while processing the spans") from None

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes:
        limit = self.max_body_bytes
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise _Refused(400, _GRPC_INVALID_ARGUMENT, "Content-Length is not a number") from None
            if declared > limit:
                raise _Refused(
                    413, _GRPC_RESOURCE_EXHAUSTED, f"body of {declared} bytes is over the limit of {limit}"
                )
        try:
            async with asyncio.timeout(self.read_timeout):
                return await self._receive_all(receive)
        except TimeoutError:
            raise _Refused(
                408,
                _GRPC_DEADLINE_EXCEEDED,
                f"the request body did not arrive within the read timeout of {self.read_timeout:g} s",
                ((b"connection", b"close"),),
            ) from None

    async def _receive_all(self, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, _GRPC_INVALID_ARGUMENT, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(413, _GRPC_RESOURCE_EXHAUSTED, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _gunzip(self, body: bytes) -> bytes:
        """Every member of a gzip body (RFC 1952 allows several, one after the other), within the limit."""
        limit = self.max_body_bytes
        members: list[bytes] = []
        size = 0
        rest = body
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = inflater.decompress(rest, limit - size + 1)
            except zlib.error as exc:
                where = f" (after {len(members)} complete members)" if members else ""
                raise _Refused(400, _GRPC_INVALID_ARGUMENT, f"body is not valid gzip{where}: {exc}") from None
            size += len(out)
            if size > limit:
                raise _Refused(
                    413, _GRPC_RESOURCE_EXHAUSTED, f"decompressed body is over the limit of {limit} bytes"
                )
            if not inflater.eof:
                raise _Refused(400, _GRPC_INVALID_ARGUMENT, "gzip body is truncated")
            members.append(out)
            rest = inflater.unused_data
            if not rest:
                return out if len(members) == 1 else b"".join(members)


def _status_body(code: int, message: str, as_json: bool) -> bytes:
    if as_json:
        return json.dumps({"code": code, "message": message}).encode()
    serialized: bytes = status_pb2.Status(code=code, message=message).SerializeToString()
    return serialized


async def _respond(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
