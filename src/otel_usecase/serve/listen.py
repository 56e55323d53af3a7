"""Listening addresses checked before ``serve`` says it is listening.

Both ports are taken (HTTP) or tried (gRPC, which binds its own socket) before
anything is announced, so a port in use is one clear line naming the address,
not an announcement followed by a library's log line and a traceback.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

__all__ = ["bind_http", "check_free", "format_address"]

_BACKLOG: Final = 2048  # uvicorn's default


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cannot(what: str, host: str, port: int, exc: OSError, flag: str) -> OSError:
    where = format_address(host, port)
    if exc.errno == errno.EADDRINUSE:
        why = (
            f"port {port} is already in use (another otel-usecase serve or a Collector?); "
            f"choose another with {flag} HOST:PORT, or {flag} off"
        )
    else:
        why = exc.strerror or str(exc)
    return OSError(f"cannot listen for {what} on {where}: {why}")


def bind_http(host: str, port: int) -> socket.socket:
    """A listening socket for uvicorn, bound the way uvicorn binds one (``SO_REUSEADDR``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise _cannot("OTLP/HTTP", host, port, exc, "--http") from None
    return sock


def check_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise ``OSError`` naming the address if ``host:port`` cannot be bound (every address it resolves to)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen for {what} on {format_address(host, port)}: {exc.strerror}") from None
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                sock.bind(address)
            except OSError as exc:
                raise _cannot(what, host, port, exc, flag) from None
