"""``otel-usecase serve``: OTLP/HTTP and OTLP/gRPC receivers in front of the cost engine.

Both ports are bound (or tried) before it says it listens; a port in use is one
line naming it. SIGTERM or SIGINT stops it gracefully: no new connections,
in-flight requests finish and commit, the store is closed, and the process
exits 0. Importing this module imports everything of the ``serve`` extra, so a
missing piece is found before anything starts.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
import uvicorn

from ..config import READ_TIMEOUT, TOKEN
from ..cost.prices import PriceBook
from ..store.base import default_store_url, parse_store_url, redact_url
from .auth import TokenCheck
from .grpc_service import start_grpc_server
from .http_app import OTLPHttpApp
from .http_timeout import protocol_class
from .ingest import Ingest
from .listen import bind_http, check_free, format_address

if TYPE_CHECKING:
    from ..ui import DashboardApp

__all__ = [
    "DEFAULT_GRPC",
    "DEFAULT_HTTP",
    "DEFAULT_READ_TIMEOUT_S",
    "ENV_TOKEN",
    "ServeOptions",
    "parse_address",
    "run",
]

logger = logging.getLogger("otel_usecase.serve")

DEFAULT_HTTP: Final = "127.0.0.1:4318"
DEFAULT_GRPC: Final = "127.0.0.1:4317"
ENV_TOKEN: Final = TOKEN.env
DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024
DEFAULT_READ_TIMEOUT_S: Final = READ_TIMEOUT.default
"""Seconds for a request's headers, and again for its body. OTLP senders give up sooner
(the SDK exporters after 10 s, the Collector's after 5 s), so no honest sender is cut off."""
_GRACE_S: Final = 30.0


@dataclass(frozen=True)
class ServeOptions:
    """What ``otel-usecase serve`` was asked for; ``None`` addresses turn a protocol off."""

    http: tuple[str, int] | None = ("127.0.0.1", 4318)
    grpc: tuple[str, int] | None = ("127.0.0.1", 4317)
    store: str | None = None
    prices: str | None = None
    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    workers: int = 1
    """Threads per protocol. One is fastest measured, with SQLite and with a local PostgreSQL:
    decoding and pricing hold the GIL and the store has one connection, so more threads only
    hand the GIL back and forth (4 threads: 7 % fewer spans/s with SQLite, 11 % with PostgreSQL)."""
    read_timeout: float | None = None
    """Seconds a client has for a request's headers, and again for its body; ``None``:
    ``OTEL_USECASE_READ_TIMEOUT``, else :data:`DEFAULT_READ_TIMEOUT_S`."""
    ui: bool = False
    """Also serve the dashboard (:mod:`otel_usecase.ui`) at ``/ui/`` on the OTLP/HTTP address."""

    def __repr__(self) -> str:  # never show the token
        return (
            f"ServeOptions(http={self.http}, grpc={self.grpc}, store={redact_url(self.store or '')!r}, "
            f"prices={self.prices!r}, token={'***' if self.token else None}, max_body_bytes={self.max_body_bytes}, "
            f"workers={self.workers}, read_timeout={self.read_timeout}, ui={self.ui})"
        )


def parse_address(value: str, what: str) -> tuple[str, int] | None:
    """``host:port`` (``[::1]:port`` for IPv6), or ``off``."""
    if value.strip().lower() in ("off", "none", "no", ""):
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--{what} {value!r} is not host:port (e.g. 127.0.0.1:4318) or off")
    return host, int(port)


def run(options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status.

    Raises ``ValueError`` for options that cannot work, ``OSError`` naming the
    address when a port cannot be bound, ``StoreError`` when the store cannot be
    opened; nothing has been announced then.
    """
    if options.http is None and options.grpc is None:
        raise ValueError("both --http and --grpc are off: nothing to serve")
    store_url = options.store or default_store_url()
    parse_store_url(store_url)
    token_value = options.token if options.token is not None else TOKEN.read()
    token = TokenCheck(token_value)
    if options.ui:
        from ..ui.server import check_exposure

        if options.http is None:
            raise ValueError("--ui serves the dashboard on the OTLP/HTTP address: it needs --http")
        check_exposure(options.http[0], token_value, "--http", store_url)
    read_timeout = options.read_timeout if options.read_timeout is not None else READ_TIMEOUT.read()
    if read_timeout <= 0:
        raise ValueError(f"read timeout {read_timeout!r} is not a positive number of seconds")
    prices = PriceBook(options.prices)
    http_socket = bind_http(*options.http) if options.http is not None else None
    try:
        if options.grpc is not None:
            check_free(*options.grpc, "OTLP/gRPC", "--grpc")
        ingest = Ingest(store_url, prices)
        try:
            ingest.open()
            dashboard = (
                _dashboard(store_url, token_value, options.http[0]) if options.ui and options.http else None
            )
            try:
                _serve(options, ingest, token, read_timeout, http_socket, dashboard)
            finally:
                if dashboard is not None:
                    dashboard.store.close()
        finally:
            ingest.close()
    finally:
        if http_socket is not None:
            http_socket.close()
    return 0


def _serve(
    options: ServeOptions,
    ingest: Ingest,
    token: TokenCheck,
    read_timeout: float,
    http_socket: socket.socket | None,
    dashboard: DashboardApp | None = None,
) -> None:
    executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="otel-usecase-ingest")
    stop = threading.Event()
    http_server = (
        _http_server(options, ingest, token, executor, read_timeout, dashboard)
        if http_socket is not None
        else None
    )

    def _on_signal(signum: int, frame: Any) -> None:
        # Also before uvicorn has put its own handlers in place: the HTTP port listens from the start.
        stop.set()
        if http_server is not None:
            http_server.should_exit = True

    # Our handlers are in place before uvicorn's: uvicorn re-raises the signal it caught
    # after its graceful shutdown, which then lands here instead of killing the process.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    grpc_server: grpc.Server | None = None
    announced = False
    try:
        if options.grpc is not None:
            grpc_server = start_grpc_server(
                options.grpc[0],
                options.grpc[1],
                ingest,
                token,
                options.max_body_bytes,
                options.workers,
                read_timeout,
            )
        _announce(options, ingest.store_url or "", token, read_timeout)
        announced = True
        if http_server is not None and http_socket is not None:
            http_server.run(sockets=[http_socket])
            if not http_server.started:
                raise OSError(f"cannot serve OTLP/HTTP on {format_address(*http_socket.getsockname()[:2])}")
        else:
            while not stop.wait(0.5):
                pass
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=_GRACE_S).wait()
        executor.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if announced:
            print("otel-usecase serve: stopped", file=sys.stderr, flush=True)


def _http_server(
    options: ServeOptions,
    ingest: Ingest,
    token: TokenCheck,
    executor: ThreadPoolExecutor,
    read_timeout: float,
    dashboard: DashboardApp | None = None,
) -> uvicorn.Server:
    otlp = OTLPHttpApp(ingest, token, options.max_body_bytes, executor, read_timeout)
    app: Any = otlp if dashboard is None else _Mounted(otlp, dashboard)
    config = uvicorn.Config(
        app,
        http=protocol_class(read_timeout),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(_GRACE_S),
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


def _dashboard(store_url: str, token: str | None, host: str) -> DashboardApp:
    """The dashboard at ``/ui`` with its own (read) connection to the store and the receiver's token (and
    the store's principals); on a non-loopback ``host`` no request without a token."""
    from ..store import open_store
    from ..ui import dashboard_app
    from ..ui.auth import is_loopback

    store = open_store(store_url, create=False)
    return dashboard_app(store, root=_UI_ROOT, token=token, require_token=not is_loopback(host))


_UI_ROOT: Final = "/ui"


class _Mounted:
    """The OTLP receiver, with the dashboard at ``/ui`` and below."""

    def __init__(self, otlp: OTLPHttpApp, dashboard: DashboardApp) -> None:
        self.otlp = otlp
        self.dashboard = dashboard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path == _UI_ROOT or path.startswith(_UI_ROOT + "/"):
            await self.dashboard(scope, receive, send)
        else:
            await self.otlp(scope, receive, send)


def _announce(options: ServeOptions, store_url: str, token: TokenCheck, read_timeout: float) -> None:
    where = []
    if options.http is not None:
        where.append(f"OTLP/HTTP on http://{format_address(*options.http)}/v1/traces")
    if options.grpc is not None:
        where.append(f"OTLP/gRPC on {format_address(*options.grpc)}")
    if options.ui and options.http is not None:
        where.append(f"dashboard on http://{format_address(*options.http)}/ui/")
    print(
        f"otel-usecase serve: {', '.join(where)}; store {redact_url(store_url)}; "
        f"token auth {'on' if token.enabled else 'off'}; read timeout {read_timeout:g} s",
        file=sys.stderr,
        flush=True,
    )
