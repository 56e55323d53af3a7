"""The audit log: every share, revoke, forget, prune and change of a use case's definition, members or budgets.

:func:`record` appends one row to ``otel_usecase_audit`` (SQL in
:mod:`otel_usecase.store.audit_sql`) after the change it describes, then tells
the use case's members who asked for it (``notify``) through the alert webhook
(:mod:`otel_usecase.usecases.notify`). :func:`audit_log` reads it back
(``otel-usecase audit``).

What a row holds is what the caller gives: the actor (a principal name, or
``"admin"`` for the CLI with direct store access), the action (one of
:data:`ACTIONS`), the use case (None for a change that concerns none, such as a
token), the target (the principal, budget, definition ... changed) and a JSON
``detail``. A caller erasing data (``forget``) must not put what it erases in the
row: the log would keep what the store forgot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .scope.validation import check_name

if TYPE_CHECKING:
    from .store import Store
    from .store.base import Transaction

__all__ = ["ACTIONS", "ADMIN", "AuditEvent", "audit_log", "record"]

ADMIN: Final = "admin"
"""The actor of a change made with direct store access (the CLI, the Python API without a principal)."""

ACTIONS: Final = frozenset(
    {
        "usecase.create",
        "usecase.update",
        "experience_type.create",
        "experience_type.update",
        "share",
        "revoke",
        "token.create",
        "token.revoke",
        "forget",
        "prune",
        "budget.set",
        "budget.delete",
    }
)
"""The actions of issue 16's contract. Another action that follows the name rule is recorded too (a
newer writer's), so reading never depends on this list."""

MAX_TARGET_LENGTH: Final = 1024


class AuditEvent(NamedTuple):
    """One row of the audit log, ``detail`` decoded."""

    id: int
    """Sequence number in this store: a later change has a larger id."""
    at_ns: int
    actor: str
    action: str
    use_case: str | None
    target: str
    detail: dict[str, Any]


def _storable_text(value: str) -> str:
    """``value`` as both stores can hold it: lone surrogates escaped, bounded (a target may be an id: data)."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_TARGET_LENGTH else text[:MAX_TARGET_LENGTH] + "…"


def _detail_json(detail: Mapping[str, object]) -> str:
    """``detail`` as JSON text (keys sorted, ASCII: any text is storable; an unknown type as its ``str``)."""
    if not isinstance(detail, Mapping):
        raise TypeError(f"detail must be a mapping, got {type(detail).__name__}")
    return json.dumps({str(k): v for k, v in detail.items()}, sort_keys=True, default=str)


def append(
    store: Store,
    *,
    actor: str,
    action: str,
    use_case: str | None,
    target: str,
    detail: Mapping[str, object],
    at_ns: int | None = None,
) -> AuditEvent:
    """:func:`record` without the notification: write the row; the event as stored."""
    from .store import audit_sql

    check_name("actor", actor)
    check_name("action", action)
    if use_case is not None:
        check_name("use_case", use_case)
    if not isinstance(target, str):
        raise TypeError(f"target must be text, got {type(target).__name__}")
    stored_target = _storable_text(target)
    text = _detail_json(detail)
    now = time.time_ns() if at_ns is None else at_ns
    row = (now, actor, action, use_case, stored_target, text)
    event_id = store.transact("record an audit event", lambda tx: audit_sql.insert(tx, row), write=True)
    return AuditEvent(event_id, now, actor, action, use_case, stored_target, json.loads(text))


def record(
    store: Store,
    *,
    actor: str,
    action: str,
    use_case: str | None,
    target: str,
    detail: Mapping[str, object],
) -> None:
    """Append a change to the audit log, then notify the use case's members who asked for it.

    Call it after the change is made. ``actor``, ``action`` and ``use_case`` follow the name rule
    (``ValueError`` naming the value and the rule: they are code); ``target`` is any text (an id is
    data: kept, made storable); ``detail`` a mapping written as JSON. Raises
    :class:`~otel_usecase.store.StoreError` when the store cannot take the row. The notification
    never raises: a failing webhook is a warning (:func:`otel_usecase.usecases.notify.notify_members`).
    """
    event = append(store, actor=actor, action=action, use_case=use_case, target=target, detail=detail)
    if event.use_case is not None:
        from .usecases.notify import notify_members

        notify_members(store, event)


def audit_log(
    store: Store, *, use_case: str | None = None, since_ns: int | None = None, limit: int | None = None
) -> list[AuditEvent]:
    """The audit log newest first: one use case's events (None: all), at or after ``since_ns``, at most
    ``limit``. A store written before the audit log existed has none (read, never created)."""
    from .store import audit_sql

    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")

    def read(tx: Transaction) -> list[audit_sql.AuditRow]:
        if not tx.has_table(audit_sql.AUDIT_TABLE):
            return []
        return [audit_sql.row_of(r) for r in tx.execute(*audit_sql.select_sql(use_case, since_ns, limit))]

    rows = store.transact("read the audit log", read, write=False)
    return [
        AuditEvent(r.id, r.at_ns, r.actor, r.action, r.use_case, r.target, _decoded(r.detail)) for r in rows
    ]


def _decoded(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"value": value}
