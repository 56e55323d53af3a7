"""One webhook POST: the URL rule, the signature, the request and what its outcome means for a retry.

Standard library only (``http.client``): alerting must not add a runtime
dependency. Redirects are not followed (a signed alert is sent to the URL
configured, nowhere else): a 3xx is a failure to fix in the configuration.

Nothing here logs. URLs reach logs only through :func:`redact_webhook` (webhook
URLs often carry their secret in the path or query, as Slack's and Discord's
do), and the signing secret is only ever passed to :func:`sign`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Final, NamedTuple
from urllib.parse import unquote, urlsplit

from ..version import __version__

__all__ = [
    "SIGNATURE_HEADER",
    "Sent",
    "post",
    "redact_webhook",
    "sign",
    "signature_header",
    "webhook_problem",
]

SIGNATURE_HEADER: Final = "X-Otel-Usecase-Signature"
"""Carries ``sha256=<hex HMAC-SHA256 of the exact body, keyed with the secret>``."""

RETRIED_STATUSES: Final = frozenset({408, 429})
"""Besides every 5xx: statuses that say "later" (a timeout, rate limiting). Other 4xx are final."""

_EXCERPT: Final = 200
"""Characters of a refusing receiver's answer quoted in the log."""


def sign(body: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 of ``body`` keyed with ``secret`` (UTF-8): what a receiver recomputes."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=<hex>``."""
    return "sha256=" + sign(body, secret)


def webhook_problem(url: object) -> str | None:
    """Why ``url`` cannot be a webhook (the rule it breaks), or ``None``.

    An absolute ``http://`` or ``https://`` URL with a host and a valid port,
    without spaces or control characters. (The reason never quotes the URL: it
    may hold a secret.)
    """
    if not isinstance(url, str) or not url.strip():
        return "a webhook must be a non-empty URL"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "a webhook URL must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "a webhook URL must have a valid host and port"
    if parts.scheme.lower() not in ("http", "https"):
        return "a webhook URL must start with http:// or https://"
    if not parts.hostname:
        return "a webhook URL must name a host"
    if port == 0:
        return "a webhook URL must have a valid host and port"
    return None


def redact_webhook(url: str) -> str:
    """``url`` as logs may show it: scheme, host and port; ``/…`` stands for a path or query left out.

    Userinfo, path and query are dropped, since any of them may be the secret
    (``https://hooks.slack.com/services/T0/B0/XXXX``).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        return "<a URL that does not parse>"
    if ":" in host:
        host = f"[{host}]"
    scheme = (parts.scheme or "?").lower()
    shown = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    return shown + ("/…" if parts.path not in ("", "/") or parts.query else "/")


class Sent(NamedTuple):
    """The outcome of one POST."""

    delivered: bool
    """A 2xx answer."""
    retry: bool
    """Worth trying again later: no answer (refused, reset, timed out), a 5xx, 408 or 429."""
    detail: str
    """What happened, for the log and the row's ``last_error`` (never the URL, never a secret)."""
    retry_after_s: float | None = None
    """The receiver's ``Retry-After`` in seconds, when it sent one."""


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Sent:
    """POST ``body`` (JSON) to ``url`` with ``headers``; never raises; over within ``2 * timeout_s``.

    ``timeout_s`` bounds the connection and each read of the answer, and a
    watchdog cuts the socket at twice that whatever the receiver does (one
    dripping its answer a byte at a time included): the claim's lease relies on
    an attempt having an end. Userinfo in the URL becomes HTTP Basic
    authentication (never sent in the request line). Only the first bytes of the
    answer are read.
    """
    deadline = time.monotonic() + 2 * timeout_s
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection: http.client.HTTPConnection
        if parts.scheme.lower() == "https":
            connection = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout_s, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
        sent = {
            "Content-Type": "application/json",
            "User-Agent": f"otel-usecase/{__version__}",
            **headers,
        }
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            sent["Authorization"] = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    except (ValueError, TypeError) as exc:  # checked by webhook_problem first; kept for safety
        return Sent(False, False, f"the webhook URL cannot be used ({type(exc).__name__})")
    watchdog: threading.Timer | None = None
    cut = threading.Event()
    try:
        connection.connect()
        if connection.sock is not None:
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _cut, (connection.sock, cut))
            watchdog.daemon = True
            watchdog.start()
        connection.request("POST", path, body=body, headers=sent)
        response = connection.getresponse()
        answer = response.read(_EXCERPT * 4)
        status = response.status
        retry_after = _seconds(response.getheader("Retry-After"))
    except (OSError, http.client.HTTPException) as exc:
        # The event, not the timer's liveness: the blocked read fails while the timer thread is still in _cut.
        return Sent(False, True, f"no answer within {2 * timeout_s:g} s" if cut.is_set() else _describe(exc))
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()
    if 200 <= status < 300:
        return Sent(True, False, f"HTTP {status}")
    detail = f"HTTP {status}" + _excerpt(answer)
    if status >= 500 or status in RETRIED_STATUSES:
        return Sent(False, True, detail, retry_after)
    if 300 <= status < 400:
        detail += " (redirects are not followed: configure the URL it points to)"
    return Sent(False, False, detail)


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    """Shut the socket of a request past its deadline: the blocked read fails at once."""
    cut.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _describe(exc: BaseException) -> str:
    """An exception as one short line without the URL (socket and TLS errors do not contain it)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _excerpt(answer: bytes) -> str:
    text = answer.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    if not text:
        return ""
    return ": " + (text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…")


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` given in seconds (the HTTP-date form is ignored: the backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None
