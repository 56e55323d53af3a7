"""Where priced calls are kept: SQLite by default, PostgreSQL when many processes share one store."""

from __future__ import annotations

from .base import (
    SCHEMA_VERSION,
    RejectedCall,
    Store,
    StoreError,
    StoreUnavailable,
    default_store_url,
    open_store,
    parse_store_url,
)

__all__ = [
    "SCHEMA_VERSION",
    "RejectedCall",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "default_store_url",
    "open_store",
    "parse_store_url",
]
