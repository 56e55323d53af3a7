"""Tell a use case's members of a change to it, through the alert webhook (as DataRobot notifies members).

After :func:`otel_usecase.audit.record` has written an event about a use case,
:func:`notify_members` looks up the members who asked for notifications (the
``notify`` flag of their role, part A's ``otel_usecase_members``) and, when there
are some and ``OTEL_USECASE_ALERT_WEBHOOK`` is set, POSTs one JSON body naming
the event, the use case, the actor and the members notified, signed like an
alert (``X-Otel-Usecase-Signature`` with ``OTEL_USECASE_ALERT_SECRET``). The
receiver (a chat bot, a mail relay) reaches the members.

Never raises and never fails the command that made the change: a webhook that
refuses or does not answer is a warning (URL redacted), and so is a member
list that cannot be read. One attempt, no retry queue: the audit log keeps the
event whatever happens to its notification.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .._log import logger

if TYPE_CHECKING:
    from ..audit import AuditEvent
    from ..store import Store

__all__ = ["KIND", "Notified", "notified_members", "notify_members", "payload"]

KIND: Final = "usecase.event"
"""The body's ``kind``: tells a receiver shared with budget alerts which of the two it got."""

TIMEOUT_S: Final = 5.0
"""Bounds the connection and each read (the whole POST: twice that); the command waits for it."""


class Notified(NamedTuple):
    """What became of one event's notification."""

    members: tuple[str, ...]
    """The principals with ``notify`` on the event's use case (the body's ``notified``)."""
    delivered: bool
    detail: str
    """What happened: ``HTTP 204``, why nothing was sent, or why it failed (never the URL)."""


def notified_members(store: Store, use_case: str) -> tuple[str, ...]:
    """The principals of ``use_case`` whose role has ``notify``, by name (part A's ``members()``)."""
    from .api import members_of

    return tuple(sorted(m.principal for m in members_of(store, use_case) if m.notify))


def payload(event: AuditEvent, members: Sequence[str]) -> bytes:
    """The JSON body of ``event``'s notification to ``members`` (UTF-8)."""
    body: dict[str, Any] = {
        "kind": KIND,
        "id": event.id,
        "event": event.action,
        "use_case": event.use_case,
        "actor": event.actor,
        "target": event.target,
        "detail": event.detail,
        "time": datetime.fromtimestamp(event.at_ns / 1e9, UTC).isoformat(timespec="milliseconds"),
        "notified": list(members),
    }
    return json.dumps(body, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")


def notify_members(store: Store, event: AuditEvent, *, timeout_s: float = TIMEOUT_S) -> Notified:
    """POST ``event`` to the alert webhook when members of its use case asked for it; never raises."""
    try:
        return _notify(store, event, timeout_s)
    except Exception as exc:  # a notification never fails the change it reports
        logger.warning(
            "otel_usecase: the members of use case %r were not notified of %s: %s",
            event.use_case,
            event.action,
            f"{type(exc).__name__}: {exc}"[:300],
        )
        return Notified((), False, f"not sent: {type(exc).__name__}")


def _notify(store: Store, event: AuditEvent, timeout_s: float) -> Notified:
    from .. import config
    from ..budgets.alerts import _env_webhook  # the one reading of OTEL_USECASE_ALERT_WEBHOOK
    from ..budgets.webhook import SIGNATURE_HEADER, post, redact_webhook, signature_header

    if event.use_case is None:
        return Notified((), False, "not sent: the event concerns no use case")
    members = notified_members(store, event.use_case)
    if not members:
        return Notified((), False, "not sent: no member of the use case asked for notifications")
    url = _env_webhook()
    if url is None:
        logger.warning(
            "otel_usecase: %d member(s) of use case %r asked to be notified of changes, but "
            "OTEL_USECASE_ALERT_WEBHOOK is not set: %s not sent",
            len(members),
            event.use_case,
            event.action,
        )
        return Notified(members, False, "not sent: OTEL_USECASE_ALERT_WEBHOOK is not set")
    body = payload(event, members)
    secret = config.ALERT_SECRET.read()
    headers = {SIGNATURE_HEADER: signature_header(body, secret)} if secret else {}
    sent = post(url, body, headers, timeout_s)
    if not sent.delivered:
        logger.warning(
            "otel_usecase: the notification of %s on use case %r to %s failed: %s (the change is made "
            "and in the audit log)",
            event.action,
            event.use_case,
            redact_webhook(url),
            sent.detail,
        )
    return Notified(members, sent.delivered, sent.detail)
