"""Who may read the dashboard: anyone on loopback, or whoever has the token.

A token is checked in constant time by the receivers' :class:`~otel_usecase.serve.auth.TokenCheck`
(one comparison for both): ``Authorization: Bearer TOKEN`` (scripts, ``curl``), or HTTP Basic with the
token as the password (a browser asks for it itself, no script needed; the user name is ignored).
The token is never logged nor shown.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket

from ..serve.auth import TokenCheck

__all__ = ["UIAuth", "is_loopback", "loopback_host"]


class UIAuth:
    __slots__ = ("_check",)

    def __init__(self, token: str | None) -> None:
        self._check = TokenCheck(token)

    @property
    def enabled(self) -> bool:
        return self._check.enabled

    def __repr__(self) -> str:
        return f"UIAuth(enabled={self.enabled})"

    def allows(self, authorization: bytes | None) -> bool:
        if not self._check.enabled:
            return True
        if authorization is None:
            return False
        scheme, _, credentials = authorization.strip().partition(b" ")
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            _, sep, password = decoded.partition(b":")
            return bool(sep) and self._check.allows(b"Bearer " + password)
        if scheme.lower() == b"bearer":
            return self._check.allows(b"Bearer " + credentials.strip())
        return False


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (``localhost``, 127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def loopback_host(header: bytes | None) -> bool:
    """Whether a request's ``Host`` names this machine by a loopback name (``127.0.0.1``, ``[::1]``, ``localhost``).

    Without a token the dashboard only listens on loopback, but a web page elsewhere can point a name
    of its own at 127.0.0.1 (DNS rebinding) and read the answers as same-origin: those requests carry
    that name in ``Host``, and are refused.
    """
    if not header:
        return False
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
