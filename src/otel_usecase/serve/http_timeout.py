"""uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn bounds only the wait between requests on a keep-alive connection (its
timer stops at the first byte): a client that connects and sends nothing, or
half a request line, holds the connection forever. Here the headers of each
request must be complete within the read timeout, counted from the connection
(or from the previous response); otherwise the server answers 408 and closes
the connection. The body has its own deadline of the same length, kept by the
ASGI app (:mod:`.http_app`), which sees the body arrive.

This is the one place that relies on uvicorn internals: its protocol classes
(h11 or httptools, whichever uvicorn picks) set ``self.cycle`` when a request's
headers are complete and call ``on_response_complete`` after each response.
``tests/test_serve_limits.py`` fails if that changes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ["protocol_class"]

_TIMEOUT_BODY: Final = b"the request headers did not arrive within the read timeout\n"
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class _HeaderDeadline(asyncio.Protocol):
    """Mixin over uvicorn's HTTP protocol: closes a connection whose request headers are late."""

    read_timeout: float = 30.0
    cycle: Any
    transport: asyncio.Transport
    _deadline: asyncio.TimerHandle | None = None
    _cycle_when_armed: Any = None
    _partial: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._partial = True
        super().data_received(data)
        self._disarm_when_headers_arrived()

    def on_response_complete(self) -> None:
        self._arm()  # before uvicorn's own handler, which may start a pipelined request
        super().on_response_complete()  # type: ignore[misc]
        self._disarm_when_headers_arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        self._cycle_when_armed = self.cycle
        self._partial = False
        self._deadline = asyncio.get_running_loop().call_later(self.read_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_when_headers_arrived(self) -> None:
        if self._deadline is not None and self.cycle is not self._cycle_when_armed:
            self._disarm()

    def _headers_late(self) -> None:
        """Close the connection; say why if part of a request came (an idle one is just closed)."""
        self._deadline = None
        if not self.transport.is_closing():
            if self._partial:
                self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def protocol_class(read_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``http=`` of ``uvicorn.Config``) with the header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type(
        "OTLPHttpProtocol", (_HeaderDeadline, AutoHTTPProtocol), {"read_timeout": float(read_timeout)}
    )
