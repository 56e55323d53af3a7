"""The dashboard as a plain ASGI application: routing, security headers, the token, errors.

No framework: a route is a function of (store, params) returning a :class:`Response`,
run on a worker thread (the stores are synchronous and thread-safe), so the event
loop keeps answering while a query runs. Every response carries a strict
Content-Security-Policy (no script at all, styles only from our own stylesheet,
no framing) and the usual hardening headers; nothing is cached. Only GET and HEAD
are served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from importlib import resources
from typing import Any, Final, NamedTuple

from ..report.queries import ReportError
from ..store import Store, StoreError
from .auth import UIAuth, loopback_host
from .markup import el
from .params import BadRequest, Params, parse_params

__all__ = ["CSP", "SECURITY_HEADERS", "DashboardApp", "Response", "Route"]

logger = logging.getLogger("otel_usecase.ui")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""No script of any kind; our stylesheet only (no inline style); forms only to us; never framed."""

SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    (b"cache-control", b"no-store"),
)

HTML: Final = "text/html; charset=utf-8"
JSON: Final = "application/json"
CSV: Final = "text/csv; charset=utf-8"


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Route(NamedTuple):
    """A path's handler and the parameters it takes besides the filters."""

    handler: Callable[[Store, Params, str], Response]
    """``(store, params, root)``: ``root`` is the dashboard's path prefix, for links."""
    params: tuple[str, ...] = ()


class DashboardApp:
    """ASGI app serving the dashboard at ``root`` (``""``: at ``/``; ``serve --ui``: ``/ui``)."""

    def __init__(
        self,
        store: Store,
        routes: dict[str, Route],
        *,
        root: str = "",
        auth: UIAuth | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.routes = routes
        self.root = root.rstrip("/")
        self.auth = auth if auth is not None else UIAuth(None)
        self._executor = executor if executor is not None else ThreadPoolExecutor(2, "otel-usecase-ui")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self._answer(scope)
        headers = [
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
            *SECURITY_HEADERS,
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope) -> Response:
        headers = dict(scope.get("headers") or ())
        loop = asyncio.get_running_loop()
        try:
            viewer = await loop.run_in_executor(
                self._executor, self.auth.viewer, self.store, headers.get(b"authorization")
            )
        except StoreError as exc:
            logger.warning("dashboard: the store could not be read: %s", exc)
            return error_page(503, "The store could not be read.", self.root)
        except Exception:
            logger.exception("dashboard: could not tell who a request is")
            return error_page(500, "Internal error (see the server's log).", self.root)
        if viewer is None:
            return error_page(
                401,
                "A token is needed: send Authorization: Bearer TOKEN (or give the token as the password "
                "when the browser asks).",
                self.root,
                ((b"www-authenticate", b'Basic realm="otel-usecase", charset="UTF-8"'),),
            )
        if viewer.local and not loopback_host(headers.get(b"host")):
            return error_page(
                403,
                "This dashboard answers only to a loopback name (127.0.0.1, localhost, [::1]) when it has no "
                "token: another name pointing here could be a DNS rebinding attack.",
                self.root,
            )
        if scope["method"] not in ("GET", "HEAD"):
            return error_page(
                405, "The dashboard only reads: use GET.", self.root, ((b"allow", b"GET, HEAD"),)
            )
        path: str = scope["path"]
        if self.root:
            if path == self.root:
                return Response(308, HTML, b"", ((b"location", (self.root + "/").encode()),))
            if not path.startswith(self.root + "/"):
                return error_page(404, "No such page.", self.root)
            path = path[len(self.root) :]
        if path.startswith("/static/"):
            return _static(path[len("/static/") :])
        route = self.routes.get(path)
        if route is None:
            return error_page(404, "No such page.", self.root)
        try:
            params = parse_params(scope.get("query_string", b""), route.params)
            params = params._replace(filters=params.filters._replace(use_cases=viewer.use_cases))
            return await loop.run_in_executor(self._executor, route.handler, self.store, params, self.root)
        except (BadRequest, ReportError) as exc:
            return error_page(400, str(exc), self.root, api=path.startswith("/api/"))
        except StoreError as exc:
            logger.warning("dashboard: the store could not be read: %s", exc)
            return error_page(
                503, f"The store could not be read: {exc}", self.root, api=path.startswith("/api/")
            )
        except Exception:
            logger.exception("dashboard: could not answer %s", path)
            return error_page(
                500, "Internal error (see the server's log).", self.root, api=path.startswith("/api/")
            )


def error_page(
    status: int,
    message: str,
    root: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    *,
    api: bool = False,
) -> Response:
    if api:
        import json

        return Response(status, JSON, json.dumps({"error": message}).encode(), headers)
    from .layout import page

    body = page(f"Error {status}", el("p", message, class_="error"), root=root, path="", filters=None)
    return Response(status, HTML, body.encode(), headers)


_STATIC: Final = {"dashboard.css": "text/css; charset=utf-8"}


def _static(name: str) -> Response:
    content_type = _STATIC.get(name)
    if content_type is None:
        return Response(404, "text/plain; charset=utf-8", b"no such file")
    body = resources.files("otel_usecase.ui").joinpath("static", name).read_bytes()
    return Response(200, content_type, body)
