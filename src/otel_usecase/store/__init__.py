"""Where priced calls are kept: SQLite by default, PostgreSQL when many processes share one store.

:func:`open_store` is the factory that picks a store by URL. It lives here, not in
:mod:`.base`, so that ``base`` (the protocol and the ledger) imports no store and
each store imports only ``base``: no import cycle.
"""

from __future__ import annotations

from .base import (
    SCHEMA_VERSION,
    RejectedCall,
    ReportFilter,
    Store,
    StoreError,
    StoreUnavailable,
    default_store_url,
    parse_store_url,
)

__all__ = [
    "SCHEMA_VERSION",
    "RejectedCall",
    "ReportFilter",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "default_store_url",
    "open_store",
    "parse_store_url",
]


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open (and create on first use) the store at ``url`` (default: :func:`default_store_url`).

    ``create=False`` is for commands that only read (reports): a store that does not
    exist, or has no ledger table, raises :class:`StoreError` naming the URL instead of
    being created empty (a mistyped URL must not read as "no calls recorded"). Such a
    reader never changes the schema: a ledger of an older schema version is read as it
    is, its missing columns read as their defaults (see :func:`.base.migrate`).
    """
    kind, target = parse_store_url(url if url is not None else default_store_url())
    if kind == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(target, create=create)
    from .sqlite import SQLiteStore

    return SQLiteStore(target, create=create)
