"""A web service whose every request makes real OpenAI calls (to FakeOpenAI) inside ``track_context``.

``application`` is the WSGI app (gunicorn sync workers), ``asgi_app`` the ASGI app
(uvicorn, gunicorn with ``uvicorn.workers.UvicornWorker``). ``GET /?run=ID`` makes
``CALLS`` chat calls in run ``ID`` of use case ``served`` and answers ``ok PID``.
OpenTelemetry is wired by ``opentelemetry-instrument`` (``OTEL_TRACES_EXPORTER=usecase``),
as users run such services. ``FAKE_OPENAI_URL`` is the fake server's base URL.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

import openai

from otel_usecase import track_context

CALLS = 3
MSG = [{"role": "user", "content": "hi"}]
_clients: dict[tuple[int, str], Any] = {}


def _client(kind: str) -> Any:
    """One client per process: a connection pool must not cross a fork."""
    key = (os.getpid(), kind)
    if key not in _clients:
        make = openai.AsyncOpenAI if kind == "async" else openai.OpenAI
        _clients[key] = make(base_url=os.environ["FAKE_OPENAI_URL"], api_key="k", max_retries=0)
    return _clients[key]


def _run_id(query_string: str) -> str:
    return parse_qs(query_string).get("run", ["none"])[0]


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    with track_context("served", use_case_id=_run_id(environ.get("QUERY_STRING", ""))):
        for _ in range(CALLS):
            _client("sync").chat.completions.create(model="gpt-4o-mini", messages=MSG)
    body = f"ok {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    with track_context("served", use_case_id=_run_id(scope.get("query_string", b"").decode())):
        for _ in range(CALLS):
            await _client("async").chat.completions.create(model="gpt-4o-mini", messages=MSG)
    body = f"ok {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
