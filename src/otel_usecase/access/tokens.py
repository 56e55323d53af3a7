"""Principals and their API tokens: issue one (printed once), list them, revoke one, authenticate a request.

A principal is a dashboard/API user, named by the administrator. Its token is
``ouc_`` followed by 32 random bytes (``secrets.token_urlsafe``, 43 characters);
the store keeps only the SHA-256 of it. A fast unsalted hash is enough here, and
a slow password hash (bcrypt, scrypt) would only cost time on every request:
those exist to slow down guessing of *low-entropy* human passwords, while a
256-bit random token cannot be guessed or brute-forced from its hash at any
speed, and distinct random tokens never need a salt to hash apart.

:func:`authenticate` reads the store on every call (no cache: a token revoked a
moment ago is refused on the next request, in every process) and compares the
presented token's hash with each active principal's in constant time
(``hmac.compare_digest``, and no early exit), so response times tell nothing
about how much of a token was right. Tokens are never logged by this module.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Final, NamedTuple

from ..audit import ADMIN
from ..scope.validation import check_name
from ..store.access_sql import (
    ACTIVE_SQL,
    DDL,
    PRINCIPALS_SQL,
    PRINCIPALS_TABLE,
    REVOKE_SQL,
    SET_TOKEN_SQL,
)

if TYPE_CHECKING:
    from ..store import Store
    from ..store.base import Transaction

__all__ = [
    "ADMIN",
    "TOKEN_PREFIX",
    "Principal",
    "PrincipalInfo",
    "authenticate",
    "check_principal",
    "create_token",
    "list_principals",
    "revoke_token",
]

# ADMIN (from audit.py, the one definition): the actor of the CLI and of Python code with direct store
# access, the administrator (may do anything). No principal may take this name (in any case), so no token
# can act as the administrator.
TOKEN_PREFIX: Final = "ouc_"
"""Every token starts with it, so a secret scanner (or a person) can tell what a leaked string is."""
_TOKEN_BYTES: Final = 32
_MAX_TOKEN_LENGTH: Final = 256
"""A presented token longer than this is refused before it is hashed (a real one has 47 characters)."""


class Principal(NamedTuple):
    """Who a request's token belongs to (:func:`authenticate`)."""

    name: str


class PrincipalInfo(NamedTuple):
    """A principal as :func:`list_principals` shows it: never its token or the token's hash."""

    name: str
    created_ns: int
    """When its current token was issued."""
    revoked_ns: int | None
    """When its token was revoked; None while it is active."""

    @property
    def active(self) -> bool:
        return self.revoked_ns is None


def check_principal(name: object) -> str:
    """``name`` if it is a valid principal name, else ``ValueError`` naming it and the rule."""
    check_name("principal", name)
    assert isinstance(name, str)  # check_name raised otherwise
    if name.lower() == ADMIN:
        raise ValueError(f"principal={name!r} is reserved: {ADMIN!r} is the administrator (the CLI)")
    return name


def token_hash(token: str) -> str:
    """The stored form of ``token``: SHA-256 of its UTF-8 bytes, in hex (see the module doc for why)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _ensure_tables(tx: Transaction) -> None:
    """Create the access tables of a store written before them (only then: no DDL on a current store)."""
    if not tx.has_table(PRINCIPALS_TABLE):
        for statement in DDL:
            tx.execute(statement)


def create_token(store: Store, name: str) -> str:
    """Issue a new token for principal ``name`` and return it: it is shown this once, only its hash is kept.

    A new name creates the principal; an existing one gets a new token that
    replaces its previous one (revoked or not: the old token is refused from now
    on) and keeps its roles. Raises ``ValueError`` for a name that breaks the
    name rule or is the reserved ``admin``.
    """
    check_principal(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    hashed = token_hash(token)
    now = time.time_ns()

    def issue(tx: Transaction) -> None:
        _ensure_tables(tx)
        tx.execute(SET_TOKEN_SQL, (name, hashed, now))

    store.transact("issue a token", issue, write=True)
    from .. import audit  # at call time: the audit log reads the members (no import cycle)

    audit.record(store, actor=ADMIN, action="token.create", use_case=None, target=name, detail={})
    return token


def list_principals(store: Store) -> list[PrincipalInfo]:
    """Every principal, by name, active or revoked; ``[]`` for a store without the principals table."""

    def read(tx: Transaction) -> list[PrincipalInfo]:
        if not tx.has_table(PRINCIPALS_TABLE):
            return []
        return [
            PrincipalInfo(str(name), int(created), None if revoked is None else int(revoked))
            for name, created, revoked in tx.execute(PRINCIPALS_SQL)
        ]

    return store.transact("read the principals", read, write=False)


def revoke_token(store: Store, name: str) -> bool:
    """Revoke principal ``name``'s token at once (its hash is deleted); whether it had an active one.

    The principal and its roles stay: :func:`create_token` gives it a new token.
    """
    check_name("principal", name)
    now = time.time_ns()

    def revoke(tx: Transaction) -> bool:
        return tx.has_table(PRINCIPALS_TABLE) and bool(tx.execute(REVOKE_SQL, (now, name)))

    revoked = store.transact("revoke a token", revoke, write=True)
    if revoked:
        from .. import audit  # at call time (see create_token)

        audit.record(store, actor=ADMIN, action="token.revoke", use_case=None, target=name, detail={})
    return revoked


def authenticate(store: Store, token: str) -> Principal | None:
    """The principal whose active token ``token`` is, or None (wrong, revoked, malformed: never raises on it).

    Reads the store now (no cache). Every active principal's hash is compared,
    each with ``hmac.compare_digest``, whatever matched before: the time taken
    depends on how many principals there are, not on the token presented.
    Raises only what the store raises (``StoreUnavailable`` when it cannot be read).
    """
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    presented = token_hash(token)

    def read(tx: Transaction) -> list[tuple[object, ...]]:
        return tx.execute(ACTIVE_SQL) if tx.has_table(PRINCIPALS_TABLE) else []

    found: str | None = None
    for name, stored in store.transact("authenticate a token", read, write=False):
        if hmac.compare_digest(str(stored or ""), presented) and found is None:
            found = str(name)
    return None if found is None else Principal(found)
