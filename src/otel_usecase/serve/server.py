"""``otel-usecase serve``: OTLP/HTTP and OTLP/gRPC receivers in front of the cost engine.

SIGTERM or SIGINT stops it gracefully: no new connections, in-flight requests
finish and commit, the store is closed, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from ..config import env_str
from ..pricing import PriceBook
from ..store.base import default_store_url, parse_store_url, redact_url
from .auth import TokenCheck
from .ingest import Ingest

__all__ = ["DEFAULT_GRPC", "DEFAULT_HTTP", "ENV_TOKEN", "ServeOptions", "parse_address", "run"]

logger = logging.getLogger("otel_usecase.serve")

DEFAULT_HTTP: Final = "127.0.0.1:4318"
DEFAULT_GRPC: Final = "127.0.0.1:4317"
ENV_TOKEN: Final = "OTEL_USECASE_TOKEN"
DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024
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

    def __repr__(self) -> str:  # never show the token
        return (
            f"ServeOptions(http={self.http}, grpc={self.grpc}, store={redact_url(self.store or '')!r}, "
            f"prices={self.prices!r}, token={'***' if self.token else None}, max_body_bytes={self.max_body_bytes})"
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
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    if options.http is None and options.grpc is None:
        raise ValueError("both --http and --grpc are off: nothing to serve")
    store_url = options.store or default_store_url()
    parse_store_url(store_url)
    token = TokenCheck(options.token if options.token is not None else env_str(ENV_TOKEN))
    ingest = Ingest(store_url, PriceBook(options.prices))
    ingest.open()
    executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="otel-usecase-ingest")
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # Our handlers are in place before uvicorn's: uvicorn re-raises the signal it caught
    # after its graceful shutdown, which then lands here instead of killing the process.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    grpc_server = None
    try:
        if options.grpc is not None:
            from .grpc_service import start_grpc_server

            grpc_server = start_grpc_server(
                options.grpc[0], options.grpc[1], ingest, token, options.max_body_bytes, options.workers
            )
        _announce(options, store_url, token)
        if options.http is not None:
            _serve_http(options, ingest, token, executor)
        else:
            while not stop.wait(0.5):
                pass
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=_GRACE_S).wait()
        executor.shutdown(wait=True)
        ingest.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("otel-usecase serve: stopped", file=sys.stderr, flush=True)
    return 0


def _serve_http(
    options: ServeOptions, ingest: Ingest, token: TokenCheck, executor: ThreadPoolExecutor
) -> None:
    import uvicorn

    from .http_app import OTLPHttpApp

    assert options.http is not None
    app = OTLPHttpApp(ingest, token, options.max_body_bytes, executor)
    config = uvicorn.Config(
        app,
        host=options.http[0],
        port=options.http[1],
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(_GRACE_S),
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise OSError(f"cannot listen for OTLP/HTTP on {options.http[0]}:{options.http[1]}")


def _announce(options: ServeOptions, store_url: str, token: TokenCheck) -> None:
    where = []
    if options.http is not None:
        where.append(f"OTLP/HTTP on http://{_fmt(options.http)}/v1/traces")
    if options.grpc is not None:
        where.append(f"OTLP/gRPC on {_fmt(options.grpc)}")
    print(
        f"otel-usecase serve: {', '.join(where)}; store {redact_url(store_url)}; "
        f"token auth {'on' if token.enabled else 'off'}",
        file=sys.stderr,
        flush=True,
    )


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
