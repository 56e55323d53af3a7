"""The audit table: who changed what in a store (shares, revokes, forgets, prunes, definitions, budgets).

One row per change, appended after the change itself and never updated. The
SQL is portable (``?`` placeholders, no dialect-only types): each store runs it
through :meth:`~otel_usecase.store.base.Store.transact`.

``id`` is a sequence number given by the insert itself (one more than the
largest), not an identity/autoincrement column, so both stores share one
definition. Two writers of PostgreSQL that read the same largest id at once:
the second's insert finds the id taken, does nothing (``ON CONFLICT DO
NOTHING``) and is run again, now seeing the first's row (:func:`insert`). SQLite
serialises writers (``BEGIN IMMEDIATE``), so it never retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from .base import Transaction

__all__ = [
    "AUDIT_DDL",
    "AUDIT_TABLE",
    "AuditRow",
    "insert",
    "row_of",
    "select_sql",
]

AUDIT_TABLE: Final = "otel_usecase_audit"

AUDIT_DDL: Final[tuple[str, ...]] = (
    (
        f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} ("
        "id BIGINT NOT NULL PRIMARY KEY, at_ns BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
        "use_case TEXT, target TEXT NOT NULL, detail TEXT NOT NULL)"
    ),
    # `audit --use-case X` reads one use case's rows, newest first.
    f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_use_case ON {AUDIT_TABLE} (use_case, id)",
)
"""Both stores speak this SQL (``detail`` is JSON text: portable, and read back by :mod:`otel_usecase.audit`)."""

_INSERT: Final = (
    f"INSERT INTO {AUDIT_TABLE} (id, at_ns, actor, action, use_case, target, detail) "
    f"SELECT COALESCE(MAX(id), 0) + 1, ?, ?, ?, ?, ?, ? FROM {AUDIT_TABLE} WHERE true "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
"""``WHERE true``: SQLite needs it to read ``ON CONFLICT`` as the upsert clause after a ``SELECT``."""

_ATTEMPTS: Final = 50

_COLUMNS: Final = "id, at_ns, actor, action, use_case, target, detail"


class AuditRow(NamedTuple):
    """One stored row, as the table has it (``detail`` JSON text)."""

    id: int
    at_ns: int
    actor: str
    action: str
    use_case: str | None
    target: str
    detail: str


def insert(tx: Transaction, row: Sequence[Any]) -> int:
    """Append ``row`` (``at_ns, actor, action, use_case, target, detail``); the id it got.

    Creates the table first when the store predates it (a store migrated to schema 7 has it, and a role
    that may not run DDL then runs none)."""
    if not tx.has_table(AUDIT_TABLE):
        for statement in AUDIT_DDL:
            tx.execute(statement)
    for _ in range(_ATTEMPTS):
        found = tx.execute(_INSERT, tuple(row))
        if found:
            return int(found[0][0])
    raise RuntimeError(f"could not append to {AUDIT_TABLE}: the id was taken {_ATTEMPTS} times in a row")


def select_sql(use_case: str | None, since_ns: int | None, limit: int | None) -> tuple[str, list[Any]]:
    """The rows of one use case (or all), at or after ``since_ns``, newest first, at most ``limit``."""
    clauses: list[str] = []
    params: list[Any] = []
    if use_case is not None:
        clauses.append("use_case = ?")
        params.append(use_case)
    if since_ns is not None:
        clauses.append("at_ns >= ?")
        params.append(since_ns)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    tail = ""
    if limit is not None:
        tail = " LIMIT ?"
        params.append(limit)
    return f"SELECT {_COLUMNS} FROM {AUDIT_TABLE}{where} ORDER BY id DESC{tail}", params


def row_of(values: Sequence[Any]) -> AuditRow:
    """An :class:`AuditRow` of a selected row."""
    id_, at_ns, actor, action, use_case, target, detail = values
    return AuditRow(int(id_), int(at_ns), str(actor), str(action), use_case, str(target), str(detail))
