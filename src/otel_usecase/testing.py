"""A tiny, offline, OpenAI-compatible HTTP server for tests and demos.

Why this exists: the plugin prices LLM spans from the token usage that the
OpenAI instrumentation copies out of real API responses. Testing that chain
honestly means driving the *real* ``openai`` client (and therefore the real
instrumentation) end to end, but without network access, API keys, cost or
flakiness. :class:`FakeOpenAI` speaks just enough of the OpenAI wire protocol
(chat completions, streaming included, embeddings and a minimal Responses API)
and lets a test pin the exact usage numbers, including the cached-prompt,
reasoning and audio token details that drive the trickier price calculations,
the service tier the answer says it was served at (billed at that tier's rate),
and the billed cost an OpenAI-compatible gateway such as OpenRouter adds to the
usage; and make the model ask for tool calls (:meth:`FakeOpenAI.call_tools`),
so that real agent frameworks run their tool loops against it.

It uses only the standard library on purpose, so that importing it never adds
a dependency to the package. Typical use::

    from otel_usecase.testing import FakeOpenAI, FakeUsage

    with FakeOpenAI(usage=FakeUsage(prompt_tokens=100, cached_tokens=40)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert server.requests[0].body["model"] == "gpt-4o-mini"

For a demo, ``python -m otel_usecase.testing --port 8000`` serves until Ctrl-C
and prints the ``base_url`` to hand to the client.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import EllipsisType, TracebackType
from typing import Any, Final, NamedTuple, Self
from urllib.parse import urlsplit

__all__ = ["FakeOpenAI", "FakeToolCall", "FakeUsage", "RecordedRequest", "main"]

#: The assistant reply. Fixed so that tests and demos are reproducible.
_REPLY_TEXT: Final = "This is a canned reply from the fake OpenAI server."
#: How many pieces the reply is cut into when streaming; more than one so that
#: consumers really have to reassemble content across chunks.
_STREAM_PIECES: Final = 3
#: Default embedding size; small because nobody needs real vectors here.
_EMBEDDING_DIMENSIONS: Final = 8
#: Wildcard addresses that would expose the server beyond this machine.
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})
#: The tier an answer says it was served at unless a test says otherwise (what OpenAI sends by default).
_DEFAULT_SERVICE_TIER: Final = "default"


@dataclass(frozen=True)
class FakeUsage:
    """Token counts that the server reports, with OpenAI's semantics.

    The fields follow the OpenAI API exactly, because that is what the pricing
    code has to interpret: ``prompt_tokens`` *includes* ``cached_tokens`` and
    ``input_audio_tokens``, ``completion_tokens`` *includes* ``reasoning_tokens``
    and ``output_audio_tokens``. The details are sent as
    ``usage.prompt_tokens_details.{cached_tokens,audio_tokens}`` and
    ``usage.completion_tokens_details.{reasoning_tokens,audio_tokens}`` (the
    ``gpt-4o-audio-preview`` shape), and in the Responses API as
    ``usage.input_tokens_details`` / ``usage.output_tokens_details``.

    ``cost`` (USD) and ``cost_details`` are what OpenRouter adds to the usage
    object: the amount it billed for the call. They are left out of the answer
    when None, as OpenAI itself never sends them.

    Only negative or non-integer counts (and a negative or non-finite cost) are
    rejected: inconsistent numbers (say, more cached than prompt tokens) are
    allowed on purpose, so tests can check how the pricing copes with odd data
    from a provider.
    """

    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cost: float | None = None
    cost_details: Mapping[str, float | None] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
        ):
            value = getattr(self, name)
            # bool is an int subclass, but True tokens is always a mistake.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"FakeUsage.{name} must be a non-negative int, got {value!r}")
        cost = self.cost
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost) or cost < 0
        ):
            raise ValueError(f"FakeUsage.cost must be a non-negative number of USD or None, got {cost!r}")
        if self.cost_details is not None and not isinstance(self.cost_details, Mapping):
            raise ValueError(f"FakeUsage.cost_details must be a mapping or None, got {self.cost_details!r}")

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens, as OpenAI computes ``total_tokens``."""
        return self.prompt_tokens + self.completion_tokens

    def chat_usage(self) -> dict[str, Any]:
        """The ``usage`` object of a Chat Completions response."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "audio_tokens": self.input_audio_tokens,
            },
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": self.output_audio_tokens,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            **self._billed(),
        }

    def responses_usage(self) -> dict[str, Any]:
        """The ``usage`` object of a Responses API response (input/output naming).

        ``audio_tokens`` appear in the details only when non-zero: the Responses
        API documents just ``cached_tokens`` and ``reasoning_tokens`` there, and
        answers without audio keep that exact shape.
        """
        input_details: dict[str, int] = {"cached_tokens": self.cached_tokens}
        output_details: dict[str, int] = {"reasoning_tokens": self.reasoning_tokens}
        if self.input_audio_tokens:
            input_details["audio_tokens"] = self.input_audio_tokens
        if self.output_audio_tokens:
            output_details["audio_tokens"] = self.output_audio_tokens
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": input_details,
            "output_tokens": self.completion_tokens,
            "output_tokens_details": output_details,
            "total_tokens": self.total_tokens,
            **self._billed(),
        }

    def _billed(self) -> dict[str, Any]:
        """OpenRouter's billed-cost fields of the usage object; empty when no cost is set."""
        billed: dict[str, Any] = {}
        if self.cost is not None:
            billed["cost"] = self.cost
            billed["is_byok"] = False
        if self.cost_details is not None:
            billed["cost_details"] = dict(self.cost_details)
        return billed


@dataclass(frozen=True)
class FakeToolCall:
    """A function call the fake model asks for: the tool ``name`` with JSON ``arguments``.

    Agents and tool-using chains only make their second (third, ...) request
    after the model asked for a tool, so testing them needs a model that does.
    See :meth:`FakeOpenAI.call_tools`.
    """

    name: str
    arguments: str = "{}"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("FakeToolCall.name must be a non-empty tool name")
        try:
            json.loads(self.arguments)
        except ValueError as exc:
            raise ValueError(f"FakeToolCall.arguments must be JSON text, got {self.arguments!r}") from exc

    def chat_item(self, index: int, call_id: str) -> dict[str, Any]:
        """The entry of a Chat Completions ``message.tool_calls`` list (or a stream delta's, with ``index``)."""
        return {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def responses_item(self, call_id: str) -> dict[str, Any]:
        """The ``function_call`` output item of a Responses API response."""
        return {
            "type": "function_call",
            "id": f"fc_{uuid.uuid4().hex}",
            "call_id": call_id,
            "name": self.name,
            "arguments": self.arguments,
            "status": "completed",
        }


_MODEL_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/responses"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, so tests can assert on it.

    ``headers`` has lower-cased names (HTTP header names are case-insensitive,
    and lower case makes lookups predictable; repeated headers are joined with
    ``", "``). ``path`` is the raw request target, query string included.
    ``body`` is the decoded JSON object, or ``None`` when the body was empty,
    not JSON, or not a JSON object.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass(frozen=True)
class _Failure:
    """A pending injected failure (see :meth:`FakeOpenAI.fail_next`)."""

    status: int
    message: str


class _Answer(NamedTuple):
    """The settings that apply to one request, taken together under the server's lock."""

    failure: _Failure | None
    model: str | None
    usage: FakeUsage
    tools: tuple[FakeToolCall, ...]
    service_tier: str | None


def _error_type(status: int) -> tuple[str, str | None]:
    """Map an HTTP status to OpenAI's ``error.type`` and ``error.code``.

    The client picks its exception class from the status alone, but mirroring
    the real ``type``/``code`` keeps any code that inspects the body honest.
    """
    if status == 400:
        return "invalid_request_error", None
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 403:
        return "permission_error", None
    if status == 404:
        return "invalid_request_error", "not_found"
    if status == 429:
        return "rate_limit_error", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-style error document: ``{"error": {message, type, param, code}}``."""
    error_type, code = _error_type(status)
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _served_tier(answer: _Answer) -> dict[str, str]:
    """The ``service_tier`` field of an answer: the tier it was served (and is billed) at; absent when None."""
    return {} if answer.service_tier is None else {"service_tier": answer.service_tier}


def _split_text(text: str, pieces: int) -> list[str]:
    """Cut ``text`` into at most ``pieces`` non-empty parts on word boundaries."""
    words = text.split(" ")
    size = max(1, -(-len(words) // pieces))  # ceiling division
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    # Keep the separating spaces so that joining the deltas restores the text.
    return [part if i == len(parts) - 1 else part + " " for i, part in enumerate(parts)]


def _embedding_inputs(raw: object) -> list[object]:
    """Normalise the ``input`` field of an embeddings request to a list of items.

    OpenAI accepts a string, a list of strings, a list of token ids (one
    input) or a list of token-id lists; only the count matters here.
    """
    if isinstance(raw, list):
        if raw and all(isinstance(item, int) for item in raw):
            return [raw]
        return list(raw)
    return [raw]


def _fake_vector(item: object, dimensions: int) -> list[float]:
    """A deterministic pseudo-embedding in [-1, 1) derived from the input."""
    seed = json.dumps(item, sort_keys=True, default=str).encode()
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        for i in range(0, len(digest) - 1, 2):
            if len(values) == dimensions:
                break
            values.append(round(int.from_bytes(digest[i : i + 2], "big") / 32768.0 - 1.0, 6))
        counter += 1
    return values


def _encode_base64(vector: list[float]) -> str:
    """Encode a vector like OpenAI's ``encoding_format="base64"``: float32 little-endian.

    The ``openai`` client asks for base64 by default and decodes it itself, so
    this is the format real client code actually receives.
    """
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers open connections so stop() can cut them.

    Keep-alive connections otherwise outlive ``shutdown()``: their handler
    threads keep answering on an already "stopped" server.
    """

    daemon_threads = True
    # Restarting on a fixed port right after stop() must not hit TIME_WAIT.
    allow_reuse_address = True
    # Hundreds of concurrent clients (load and concurrency tests) must queue, not be reset.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS ``getfqdn`` call, slow when offline."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up mid-response; report anything else (a bug)."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection so their handler threads exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the fake endpoints; one instance per connection."""

    # HTTP/1.1 so that clients (httpx) can keep connections alive, which also
    # means every response must carry Content-Length or be chunked.
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request logs on stderr would only clutter test output."""

    # -- dispatch ---------------------------------------------------------

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        raw = self._read_body()
        body: dict[str, Any] | None = None
        malformed = False
        if raw:
            try:
                parsed = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                malformed = True
            else:
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    malformed = True

        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        answer = fake._on_request(
            RecordedRequest(method=self.command, path=self.path, headers=headers, body=body)
        )

        if answer.failure is not None:
            self._send_error(answer.failure.status, answer.failure.message)
            return
        path = urlsplit(self.path).path.rstrip("/")
        routes = {
            "/v1/chat/completions": self._chat_completions,
            "/v1/embeddings": self._embeddings,
            "/v1/responses": self._responses,
        }
        route = routes.get(path) if self.command == "POST" else None
        if route is None:
            self._send_error(404, f"Unknown request URL: {self.command} {self.path}")
            return
        if malformed:
            self._send_error(400, "We could not parse the JSON body of your request.")
            return
        if body is None:
            self._send_error(400, "The request body must be a JSON object.")
            return
        route(body, answer._replace(model=answer.model or str(body.get("model") or "unknown-model")))

    # -- endpoints --------------------------------------------------------

    def _chat_completions(self, body: dict[str, Any], answer: _Answer) -> None:
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.get("stream") is True:
            self._stream_chat(body, completion_id, created, answer)
            return
        tools = answer.tools
        message: dict[str, Any] = {
            "role": "assistant",
            "content": _REPLY_TEXT,
            "refusal": None,
            "annotations": [],
        }
        if tools:
            message["content"] = None
            message["tool_calls"] = [
                {k: v for k, v in call.chat_item(i, f"call_{uuid.uuid4().hex[:24]}").items() if k != "index"}
                for i, call in enumerate(tools)
            ]
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": answer.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if tools else "stop",
                    }
                ],
                "usage": answer.usage.chat_usage(),
                **_served_tier(answer),
                "system_fingerprint": "fp_fake",
            },
        )

    def _stream_chat(self, body: dict[str, Any], completion_id: str, created: int, answer: _Answer) -> None:
        """Send the reply as SSE chunks, the way the real API does.

        Usage only appears when ``stream_options.include_usage`` is true, in
        one extra final chunk with empty ``choices``; the other chunks then
        carry ``"usage": null``. That is the case instrumentation most often
        gets wrong, hence the faithful reproduction.
        """
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        tools, usage = answer.tools, answer.usage
        base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            **_served_tier(answer),
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None

        def choice(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        chunks: list[dict[str, Any]] = [
            {**base, "choices": [choice({"role": "assistant", "content": "", "refusal": None}, None)]}
        ]
        if tools:
            items = [call.chat_item(i, f"call_{uuid.uuid4().hex[:24]}") for i, call in enumerate(tools)]
            chunks.append({**base, "choices": [choice({"tool_calls": items}, None)]})
            chunks.append({**base, "choices": [choice({}, "tool_calls")]})
        else:
            pieces = _split_text(_REPLY_TEXT, _STREAM_PIECES)
            for i, piece in enumerate(pieces):
                finish = "stop" if i == len(pieces) - 1 else None
                chunks.append({**base, "choices": [choice({"content": piece}, finish)]})
        if include_usage:
            chunks.append({**base, "choices": [], "usage": usage.chat_usage()})

        # Chunked transfer encoding keeps the connection reusable afterwards,
        # without having to know the total length up front.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _embeddings(self, body: dict[str, Any], answer: _Answer) -> None:
        usage = answer.usage
        inputs = _embedding_inputs(body.get("input"))
        dimensions = body.get("dimensions")
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0:
            dimensions = _EMBEDDING_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        for index, item in enumerate(inputs):
            vector = _fake_vector(item, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _encode_base64(vector) if as_base64 else vector,
                }
            )
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": answer.model,
                # Embeddings have no completion side: total == prompt.
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            },
        )

    def _responses(self, body: dict[str, Any], answer: _Answer) -> None:
        tools = answer.tools
        """Minimal non-streaming Responses API; streaming is refused explicitly."""
        if body.get("stream") is True:
            self._send_error(400, "Streaming is not supported by the fake /v1/responses endpoint.")
            return
        output: list[dict[str, Any]] = [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": _REPLY_TEXT, "annotations": []}],
            }
        ]
        if tools:
            output = [call.responses_item(f"call_{uuid.uuid4().hex[:24]}") for call in tools]
        self._send_json(
            200,
            {
                "id": f"resp_{uuid.uuid4().hex}",
                "object": "response",
                "created_at": int(time.time()),
                "status": "completed",
                "model": answer.model,
                "output": output,
                "usage": answer.usage.responses_usage(),
                **_served_tier(answer),
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "metadata": {},
                "parallel_tool_calls": True,
                "temperature": 1.0,
                "top_p": 1.0,
                "tool_choice": "auto",
                "tools": [],
            },
        )

    # -- plumbing ---------------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the whole request body, so keep-alive framing stays intact."""
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = 0
            return self.rfile.read(size) if size > 0 else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                try:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    # Framing is lost; answer this request, then drop the connection.
                    self.close_connection = True
                    return b"".join(parts)
                if size == 0:
                    # Skip optional trailers up to the terminating blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        return b""

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, _error_body(status, message))


class FakeOpenAI:
    """An in-process, OpenAI-compatible server with scriptable answers.

    Each instance runs its own :class:`http.server.ThreadingHTTPServer` on a
    daemon thread, bound only to ``host`` (loopback by default; wildcard
    addresses are refused so a test never exposes a port to the network).
    ``port=0`` picks a free port, which lets tests run in parallel.

    ``model=None`` echoes the request's ``model`` back (what OpenAI does,
    modulo snapshot suffixes); a string pins the response model, useful to
    test pricing by the *response* model rather than the requested one.

    ``service_tier`` is the tier the answers say they were served at
    (``"priority"``, ``"flex"``, ``"scale"``; default ``"default"``, what OpenAI
    sends for a standard request), whatever tier the request asked for: OpenAI
    bills the tier it served, and a test of that needs the two to differ.
    ``None`` leaves the field out, as OpenAI-compatible servers often do.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        usage: FakeUsage | None = None,
        service_tier: str | None = _DEFAULT_SERVICE_TIER,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host in _WILDCARD_HOSTS:
            raise ValueError(f"FakeOpenAI binds a specific interface only, not {host!r}")
        _check_service_tier(service_tier)
        self._host = host.strip("[]")
        self._port = port
        self._lock = threading.Lock()
        self._model = model
        self._usage = usage if usage is not None else FakeUsage()
        self._service_tier = service_tier
        self._failures: list[_Failure] = []
        self._tool_answers: list[tuple[FakeToolCall, ...]] = []
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Self:
        """Bind the socket and serve in the background; returns ``self`` for chaining.

        Calling it on a running server does nothing. The socket is bound
        before this returns, so ``base_url`` is immediately usable.
        """
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self._host, self._port), self)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"FakeOpenAI:{server.server_address[1]}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and close the listening socket.

        Idempotent, so it is safe in ``finally`` blocks and fixtures. The
        server can be started again afterwards (with ``port=0`` it gets a new
        port).
        """
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to give ``openai.OpenAI(base_url=...)``, ending in ``/v1``."""
        server = self._server
        if server is None:
            raise RuntimeError("FakeOpenAI is not running; call start() first")
        host = server.server_name
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{server.server_port}/v1"

    # -- scripting --------------------------------------------------------

    def respond(
        self,
        *,
        model: str | EllipsisType | None = ...,
        usage: FakeUsage | EllipsisType | None = ...,
        service_tier: str | EllipsisType | None = ...,
    ) -> None:
        """Change the answers of later requests; omitted arguments stay as they are.

        ``model=None`` switches back to echoing the request model,
        ``usage=None`` back to the default :class:`FakeUsage` and
        ``service_tier=None`` leaves the tier out of the answers. Thread-safe,
        so it can be called while a client is talking to the server.
        """
        if service_tier is not ...:
            _check_service_tier(service_tier)
        with self._lock:
            if model is not ...:
                self._model = model
            if usage is not ...:
                self._usage = usage if usage is not None else FakeUsage()
            if service_tier is not ...:
                self._service_tier = service_tier

    def fail_next(self, status: int = 500, times: int = 1, message: str = "injected failure") -> None:
        """Make the next ``times`` requests fail with ``status`` and an OpenAI-style error.

        Failures queue up behind ones already pending. Failed requests are
        still recorded in :attr:`requests`, so retries can be counted. Use
        ``max_retries=0`` on the client, or it will retry 5xx/429 by itself.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"fail_next needs an HTTP error status (400-599), got {status}")
        if times < 0:
            raise ValueError(f"times must be >= 0, got {times}")
        with self._lock:
            self._failures.extend(_Failure(status, message) for _ in range(times))

    def call_tools(self, *calls: FakeToolCall, times: int = 1) -> None:
        """Make the next ``times`` model answers ask for ``calls`` instead of replying with text.

        Applies to chat completions (streamed or not) and the Responses API, in
        order, behind answers already queued; a failed request (``fail_next``)
        does not use one up. The answer after them is the canned text reply, so
        an agent that runs the tools and asks again finishes: one queued answer
        makes an agent send two requests.
        """
        if not calls:
            raise ValueError("call_tools needs at least one FakeToolCall")
        if times < 0:
            raise ValueError(f"times must be >= 0, got {times}")
        with self._lock:
            self._tool_answers.extend(tuple(calls) for _ in range(times))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy; safe to keep)."""
        with self._lock:
            return list(self._requests)

    def _on_request(self, request: RecordedRequest) -> _Answer:
        """Record a request and atomically take the settings that apply to it.

        Doing both under one lock means a concurrent ``respond()``,
        ``fail_next()`` or ``call_tools()`` applies to a request entirely or not at all.
        """
        with self._lock:
            self._requests.append(request)
            failure = self._failures.pop(0) if self._failures else None
            tools: tuple[FakeToolCall, ...] = ()
            if (
                failure is None
                and self._tool_answers
                and request.method == "POST"
                and urlsplit(request.path).path.rstrip("/") in _MODEL_PATHS
            ):
                tools = self._tool_answers.pop(0)
            return _Answer(failure, self._model, self._usage, tools, self._service_tier)


def _check_service_tier(service_tier: object) -> None:
    """A service tier is a non-empty string (any value, so tests can send odd ones) or None."""
    if service_tier is not None and (not isinstance(service_tier, str) or not service_tier):
        raise ValueError(f"service_tier must be a non-empty string or None, got {service_tier!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a :class:`FakeOpenAI` until Ctrl-C, for demos without an API key."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_usecase.testing",
        description="Offline OpenAI-compatible server for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    parser.add_argument("--model", default=None, help="model to report (default: echo the request's model)")
    parser.add_argument("--prompt-tokens", type=int, default=FakeUsage.prompt_tokens)
    parser.add_argument("--completion-tokens", type=int, default=FakeUsage.completion_tokens)
    parser.add_argument("--cached-tokens", type=int, default=FakeUsage.cached_tokens)
    parser.add_argument("--reasoning-tokens", type=int, default=FakeUsage.reasoning_tokens)
    args = parser.parse_args(argv)
    try:
        usage = FakeUsage(
            prompt_tokens=args.prompt_tokens,
            completion_tokens=args.completion_tokens,
            cached_tokens=args.cached_tokens,
            reasoning_tokens=args.reasoning_tokens,
        )
        server = FakeOpenAI(model=args.model, usage=usage, host=args.host, port=args.port)
    except ValueError as exc:
        parser.error(str(exc))
    with server:
        print(f"Fake OpenAI server listening; base_url={server.base_url}", flush=True)
        print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
