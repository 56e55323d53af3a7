"""``otel-usecase ui``: serve the dashboard with uvicorn until SIGTERM/SIGINT.

Binds 127.0.0.1 by default. Any other address is refused unless a token is set
(``--token-file`` or ``OTEL_USECASE_TOKEN``: the administrator's) or the store has
principals (``otel-usecase tokens create``): the ledger is billing data. Bound there,
the dashboard then admits no request without a token, whatever happens to the
principals later. The token is never printed.
"""

from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..config import TOKEN
from ..store import open_store
from ..store.base import default_store_url, parse_store_url, redact_url
from .auth import is_loopback

__all__ = ["DEFAULT_LISTEN", "UIOptions", "read_token_file", "run"]

DEFAULT_LISTEN: Final = ("127.0.0.1", 8800)


@dataclass(frozen=True)
class UIOptions:
    listen: tuple[str, int] = DEFAULT_LISTEN
    store: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never show the token
        return (
            f"UIOptions(listen={self.listen}, store={redact_url(self.store or '')!r}, "
            f"token={'***' if self.token else None})"
        )


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace and the final newline stripped); ValueError if empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--token-file {path!r} cannot be read: {exc}") from None
    if not token:
        raise ValueError(f"--token-file {path!r} is empty")
    return token


def check_exposure(host: str, token: str | None, flag: str, store_url: str | None = None) -> None:
    """Refuse a non-loopback address without a token: the administrator's, or principals in the store at
    ``store_url`` (ValueError naming the address and the fix)."""
    if token is None and not is_loopback(host) and not (store_url and has_principals(store_url)):
        raise ValueError(
            f"{flag} {host} is not a loopback address: anyone who can reach it would read the cost ledger; "
            "set a token (--token-file FILE or OTEL_USECASE_TOKEN), give principals tokens "
            "(otel-usecase tokens create --name NAME) or listen on 127.0.0.1"
        )


def has_principals(store_url: str) -> bool:
    """Whether the store at ``store_url`` has principals (False when it cannot be opened: nothing to guard)."""
    from ..store import StoreError
    from . import auth

    try:
        store = open_store(store_url, create=False)
    except (StoreError, ValueError):
        return False
    try:
        return auth.has_principals(store)
    finally:
        store.close()


def _run_until_signal(server: Any, sock: socket.socket) -> None:
    """Serve until SIGTERM/SIGINT, then exit normally (uvicorn raises the signal again after its graceful
    shutdown: our handler, in place before uvicorn's and again after, takes it)."""

    def _stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(options: UIOptions) -> int:
    """Serve until SIGTERM/SIGINT; ValueError for options that cannot work, OSError when the port cannot be bound."""
    import uvicorn

    from ..serve.listen import bind_http, check_free, format_address
    from . import dashboard_app

    token = options.token if options.token is not None else TOKEN.read()
    host, port = options.listen
    url = options.store or default_store_url()
    parse_store_url(url)
    check_exposure(host, token, "--listen", url)
    store = open_store(url, create=False)
    try:
        check_free(host, port, "the dashboard", "--listen")
        sock = bind_http(host, port)
        try:
            app = dashboard_app(store, token=token, require_token=not is_loopback(host))
            config = uvicorn.Config(
                app,
                lifespan="off",
                access_log=False,
                log_level="warning",
                server_header=False,
                date_header=False,
            )
            server = uvicorn.Server(config)
            print(
                f"otel-usecase ui: dashboard on http://{format_address(*sock.getsockname()[:2])}/; "
                f"store {redact_url(url)}; token auth {'on' if token else 'off'}",
                file=sys.stderr,
                flush=True,
            )
            _run_until_signal(server, sock)
        finally:
            sock.close()
    finally:
        store.close()
    print("otel-usecase ui: stopped", file=sys.stderr, flush=True)
    return 0
