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

__all__ = ["UIAuth", "is_loopback"]


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
