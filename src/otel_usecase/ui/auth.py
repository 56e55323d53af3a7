"""Who may read the dashboard, and what: the administrator's token, a principal's token, or loopback.

Three kinds of reader:

* the **administrator**: whoever presents the ``--token-file`` (``OTEL_USECASE_TOKEN``) token; sees
  everything. Checked in constant time by the receivers' :class:`~otel_usecase.serve.auth.TokenCheck`.
* a **principal** (part A, :mod:`otel_usecase.access`): whoever presents a principal's token; sees only
  the use cases shared with it (``visible_use_cases``, read from the store on every request: a revoked
  token or a removed role takes effect on the next request).
* anyone on loopback, when the dashboard has neither an administrator's token nor principals (and was
  not started on a non-loopback address): today's local dashboard, everything, ``Host`` checked.

Once the store has principals, every request needs a token, on loopback too: otherwise a consumer would
see everything by leaving its token out. A token is sent as ``Authorization: Bearer TOKEN`` (scripts,
``curl``), or HTTP Basic with the token as the password (a browser asks for it itself, no script needed;
the user name is ignored). Tokens are never logged nor shown.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from typing import TYPE_CHECKING, NamedTuple

from ..serve.auth import TokenCheck

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["UIAuth", "Viewer", "has_principals", "is_loopback", "loopback_host", "presented_token"]


class Viewer(NamedTuple):
    """Who a request is and what it may see."""

    principal: str | None
    """The principal's name; None for the administrator and the local (loopback, no token) reader."""
    use_cases: tuple[str, ...] | None
    """The allowed set of :attr:`~otel_usecase.store.ReportFilter.use_cases`: None = everything."""
    local: bool = False
    """Admitted without a token (loopback only): the ``Host`` check applies."""


ADMINISTRATOR = Viewer(None, None)
LOCAL = Viewer(None, None, local=True)


def has_principals(store: Store) -> bool:
    """Whether the store has principals (active or revoked): then every request needs a token."""
    from ..access import list_principals

    return bool(list_principals(store))


def presented_token(authorization: bytes | None) -> str | None:
    """The token of an ``Authorization`` header (Bearer, or Basic's password), or None (absent, malformed)."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        _, sep, token = decoded.partition(b":")
        if not sep:
            return None
    elif scheme.lower() == b"bearer":
        token = credentials.strip()
    else:
        return None
    try:
        return token.decode("utf-8") or None
    except UnicodeDecodeError:
        return None


class UIAuth:
    """Decides who a request is (:meth:`viewer`): the administrator's token, a principal's, or loopback."""

    __slots__ = ("_check", "require_token")

    def __init__(self, token: str | None, *, require_token: bool = False) -> None:
        self._check = TokenCheck(token)
        self.require_token = require_token
        """Started on a non-loopback address: never admit a request without a token."""

    @property
    def enabled(self) -> bool:
        """Whether the administrator's token is set."""
        return self._check.enabled

    def __repr__(self) -> str:
        return f"UIAuth(enabled={self.enabled}, require_token={self.require_token})"

    def viewer(self, store: Store, authorization: bytes | None) -> Viewer | None:
        """Who the request is (None: refused, 401). Reads the store (principals, roles): run it off the loop."""
        token = presented_token(authorization)
        if token is not None and self._check.enabled and self._check.allows(b"Bearer " + token.encode()):
            return ADMINISTRATOR
        from ..access import authenticate, visible_use_cases

        if token is not None:
            principal = authenticate(store, token)
            if principal is not None:
                return Viewer(principal.name, tuple(sorted(visible_use_cases(store, principal.name))))
        if self._check.enabled or self.require_token or has_principals(store):
            return None
        return LOCAL


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
