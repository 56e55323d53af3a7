"""The principals and members tables, as SQL both stores run (``?`` placeholders, portable).

``otel_usecase_principals`` holds one row per dashboard/API user: its name, the
SHA-256 of its current token (never the token), when that token was issued and
when it was revoked. ``otel_usecase_members`` holds each principal's role on
each use case (absent: no role). :mod:`otel_usecase.access` runs these through
:meth:`~otel_usecase.store.base.Store.transact`, one transaction per operation.

Both tables are created with the ledger (:func:`.base.create_statements`) and,
for a store written before them, on the first write that needs them
(:data:`DDL`, only when missing: a role that may not run DDL can still use a
current store); a read of a store without them finds nothing.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTIVE_SQL",
    "DDL",
    "DELETE_MEMBER_SQL",
    "MEMBERS_OF_SQL",
    "MEMBERS_TABLE",
    "MEMBER_SQL",
    "PRINCIPALS_SQL",
    "PRINCIPALS_TABLE",
    "PRINCIPAL_SQL",
    "REVOKE_SQL",
    "SET_TOKEN_SQL",
    "UPSERT_MEMBER_SQL",
    "VISIBLE_SQL",
]

PRINCIPALS_TABLE: Final = "otel_usecase_principals"
MEMBERS_TABLE: Final = "otel_usecase_members"

DDL: Final = (
    (
        f"CREATE TABLE IF NOT EXISTS {PRINCIPALS_TABLE} "
        "(name TEXT PRIMARY KEY, token_hash TEXT, created_ns BIGINT NOT NULL, revoked_ns BIGINT)"
    ),
    (
        f"CREATE TABLE IF NOT EXISTS {MEMBERS_TABLE} "
        "(use_case TEXT NOT NULL, principal TEXT NOT NULL, role TEXT NOT NULL, "
        "can_share INTEGER NOT NULL DEFAULT 0, notify INTEGER NOT NULL DEFAULT 0, "
        "updated_ns BIGINT NOT NULL, PRIMARY KEY (use_case, principal))"
    ),
    f"CREATE INDEX IF NOT EXISTS {MEMBERS_TABLE}_principal ON {MEMBERS_TABLE} (principal)",
)
"""Create both tables and the index ``visible_use_cases`` reads (by principal); idempotent."""

# --- principals ---

SET_TOKEN_SQL: Final = (
    f"INSERT INTO {PRINCIPALS_TABLE} (name, token_hash, created_ns, revoked_ns) VALUES (?, ?, ?, NULL) "
    "ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, created_ns = excluded.created_ns, "
    "revoked_ns = NULL"
)
"""Issue a principal's token: a new principal, or a new token replacing its previous one (revoked or not)."""
REVOKE_SQL: Final = (
    f"UPDATE {PRINCIPALS_TABLE} SET revoked_ns = ?, token_hash = NULL "
    "WHERE name = ? AND revoked_ns IS NULL RETURNING name"
)
"""Revoke an active token: its hash goes too, so no query can match it again. One row when there was one."""
ACTIVE_SQL: Final = f"SELECT name, token_hash FROM {PRINCIPALS_TABLE} WHERE revoked_ns IS NULL"
"""Every active principal and token hash (``authenticate`` compares the presented token with each)."""
PRINCIPALS_SQL: Final = f"SELECT name, created_ns, revoked_ns FROM {PRINCIPALS_TABLE} ORDER BY name"
PRINCIPAL_SQL: Final = f"SELECT name FROM {PRINCIPALS_TABLE} WHERE name = ?"

# --- members ---

MEMBERS_OF_SQL: Final = (
    f"SELECT use_case, principal, role, can_share, notify, updated_ns FROM {MEMBERS_TABLE} "
    "WHERE use_case = ? ORDER BY principal"
)
MEMBER_SQL: Final = (
    f"SELECT use_case, principal, role, can_share, notify, updated_ns FROM {MEMBERS_TABLE} "
    "WHERE use_case = ? AND principal = ?"
)
UPSERT_MEMBER_SQL: Final = (
    f"INSERT INTO {MEMBERS_TABLE} (use_case, principal, role, can_share, notify, updated_ns) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (use_case, principal) DO UPDATE SET role = excluded.role, "
    "can_share = excluded.can_share, notify = excluded.notify, updated_ns = excluded.updated_ns"
)
DELETE_MEMBER_SQL: Final = f"DELETE FROM {MEMBERS_TABLE} WHERE use_case = ? AND principal = ?"
VISIBLE_SQL: Final = f"SELECT use_case FROM {MEMBERS_TABLE} WHERE principal = ?"
"""The use cases a principal has a role on (a row exists only for a role: ``NO_ROLE`` deletes it)."""
