"""The store interface, store URLs and the ledger's columns.

The ledger has one row per LLM call, keyed by (trace id, span id): writing the
same call twice (an exporter retry, a resent OTLP batch) changes nothing, and a
second instrumentation of the same request fills in usage only when the first
copy had none. Reports read the ledger through indexes; there is no
read-modify-write anywhere, so many writers can share one store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

from .. import config
from ..ledger import Call

__all__ = [
    "COLUMNS",
    "LEDGER",
    "META_TABLE",
    "SCHEMA_VERSION",
    "UPGRADES",
    "RejectedCall",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "create_statements",
    "default_store_url",
    "open_store",
    "parse_store_url",
    "redact_url",
    "upgrade_statements",
]

SCHEMA_VERSION: Final = 2
"""1: the first ledger. 2: ``start_ns`` in the covering index, no ``(use_case, start_ns)`` index."""
TABLE: Final = "usecase_calls"

META_TABLE: Final = "otel_usecase_meta"

LEDGER: Final[tuple[tuple[str, str, str], ...]] = (
    ("trace_id", "text", "NOT NULL"),
    ("span_id", "text", "NOT NULL"),
    ("start_ns", "int", "NOT NULL"),
    ("end_ns", "int", "NOT NULL"),
    ("service", "text", ""),
    ("use_case", "text", "NOT NULL"),
    ("run_id", "text", "NOT NULL"),
    ("use_case_version", "text", ""),
    ("step", "text", ""),
    ("experience_name", "text", ""),
    ("experience_id", "text", ""),
    ("user_id", "text", ""),
    ("provider", "text", ""),
    ("model", "text", ""),
    ("operation", "text", ""),
    ("input_tokens", "int", ""),
    ("output_tokens", "int", ""),
    ("cache_read_tokens", "int", "NOT NULL DEFAULT 0"),
    ("cache_write_tokens", "int", "NOT NULL DEFAULT 0"),
    ("reasoning_tokens", "int", "NOT NULL DEFAULT 0"),
    ("cost_usd", "real", ""),
    ("status", "text", "NOT NULL"),
    ("price_source", "text", ""),
    ("error", "flag", "NOT NULL DEFAULT 0"),
)
"""The ledger's columns as (name, kind, constraint), in :class:`~otel_usecase.calls.Call` field order.

Defined once; each store maps the kinds (``text``, ``int``, ``real``, ``flag``) to its own types."""

COLUMNS: Final[tuple[str, ...]] = tuple(name for name, _, _ in LEDGER)
"""Ledger column names, in :class:`~otel_usecase.calls.Call` field order."""


def create_statements(types: dict[str, str]) -> tuple[str, ...]:
    """``CREATE TABLE IF NOT EXISTS`` for the meta table and the ledger, with a store's column types."""
    columns = ",\n    ".join(
        f"{name} {types[kind]} {constraint}".rstrip() for name, kind, constraint in LEDGER
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {columns},\n    PRIMARY KEY (trace_id, span_id)\n)",
    )


_REPLACED_ON_BETTER_COPY: Final = tuple(c for c in COLUMNS if c not in ("trace_id", "span_id"))


class RejectedCall(NamedTuple):
    """A call the store could not take because of its own data (not an outage), and why.

    ``Store.write`` isolates such calls and writes the rest of the batch; the caller
    counts and logs them (the exporter) or reports them to the sender (``serve``'s
    OTLP ``partial_success``). ``reason`` names the field and the rule, with the
    value's ``repr``.
    """

    call: Call
    reason: str


class StoreError(Exception):
    """The store cannot be used as configured (bad URL, newer schema, ...)."""


class StoreUnavailable(StoreError):
    """The store is there but cannot take writes right now (locked, down, disk full): retry later."""


class Store(Protocol):
    """What the exporter, the receiver and the reports need of a store."""

    url: str

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``: lets a report use SQL one of them has and the other lacks."""

    def write(self, calls: Sequence[Call]) -> list[RejectedCall]:
        """Write ``calls``; idempotent per (trace id, span id).

        Returns the calls the store could not take because of their own data
        (each with its reason); every other call of the batch is written. Raises
        :class:`StoreUnavailable` when the store cannot take writes now (locked,
        down, read-only, disk full): then nothing of the batch is written.
        """

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``?`` placeholders."""

    def close(self) -> None:
        """Release connections."""


def row_of(call: Call) -> tuple[Any, ...]:
    """The ledger row of ``call``: the call itself, whose fields are in column order."""
    return call


def upsert_sql(placeholder: str, rows: int = 1) -> str:
    """The idempotent insert of ``rows`` rows, shared by SQLite and PostgreSQL (both speak ``ON CONFLICT``).

    A conflicting row is replaced only when it has no usage and the new copy has:
    that is a second instrumentation of the same request that saw the usage.
    (PostgreSQL refuses one statement that updates a row twice; it is sent one row
    per statement. SQLite takes many rows per statement, see ``SQLiteStore.write``.)
    """
    row = "(" + ", ".join([placeholder] * len(COLUMNS)) + ")"
    values = ", ".join([row] * rows)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _REPLACED_ON_BETTER_COPY)
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES {values} "
        f"ON CONFLICT (trace_id, span_id) DO UPDATE SET {updates} "
        f"WHERE {TABLE}.status = 'no_usage' AND excluded.status <> 'no_usage'"
    )


INDEXES: Final[tuple[str, ...]] = (
    # Covering for the per-run totals every report starts from (GROUP BY run_id, ...),
    # with the columns of its filters (--use-case, --since): the database reads this
    # index in order and never the table. Also finds one run. It is the only index
    # besides the primary key: each one more costs every write (about 1.2 us per row
    # in SQLite), and a filtered report scanning this index takes well under a second
    # at a million rows.
    (
        f"CREATE INDEX IF NOT EXISTS {TABLE}_run_totals ON {TABLE} "
        "(run_id, use_case, input_tokens, output_tokens, cache_read_tokens, reasoning_tokens, cost_usd, status, "
        "start_ns)"
    ),
)

UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: the covering index gains start_ns (a --since report read the table for
    # every row: 2.4 s instead of 0.9 s at 1M rows); the (use_case, start_ns) index goes.
    1: (f"DROP INDEX IF EXISTS {TABLE}_use_case", f"DROP INDEX IF EXISTS {TABLE}_run_totals"),
}
"""Statements taking a store from schema version N to N + 1, run before ``INDEXES``."""


def upgrade_statements(found: int) -> list[str]:
    """The statements taking a store at schema version ``found`` to :data:`SCHEMA_VERSION`."""
    return [statement for version in range(found, SCHEMA_VERSION) for statement in UPGRADES.get(version, ())]


_URL_PASSWORD: Final = re.compile(
    r"^(?P<head>[a-z+]+://[^/@:?#]*:)(?P<secret>[^@/?#]*)(?P<tail>@)", re.IGNORECASE
)
_KEYWORD_PASSWORD: Final = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^&#\s]+)", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: store URLs end up in logs and reports.

    Covers ``scheme://user:secret@host``, ``?password=secret`` and the keyword form
    ``password=secret`` (or ``password='se cret'``).
    """
    url = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", url, count=1)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", url)


def default_store_url() -> str:
    """``OTEL_USECASE_STORE``, else SQLite at ``$XDG_DATA_HOME/otel-usecase/costs.db``.

    ``XDG_DATA_HOME`` defaults to ``~/.local/share``. A value of
    ``OTEL_USECASE_STORE`` that is not a store URL (``mysql://...``,
    ``sqlite://costs.db``) is warned about, naming it and the accepted forms, and
    the default is used: this runs while ``opentelemetry-instrument`` configures
    the SDK, where an exception would switch every exporter off, not just ours.
    """
    configured = config.store_url()
    if configured:
        return configured
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return "sqlite:///" + str(Path(data_home) / "otel-usecase" / "costs.db")


def parse_store_url(url: str) -> tuple[str, str]:
    """Split a store URL into ``("sqlite", path)`` or ``("postgresql", conninfo)``.

    SQLite: ``sqlite:///relative/costs.db``, ``sqlite:////absolute/costs.db`` (as in
    SQLAlchemy), ``sqlite:///:memory:``, or a plain file path. PostgreSQL:
    ``postgresql://user:pass@host:port/db`` (``postgres://`` too).
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"store URL {url!r} is empty: use sqlite:///path/costs.db or postgresql://...")
    url = url.strip()
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return "postgresql", url.replace("postgresql+psycopg://", "postgresql://", 1)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or len(rest) < 2:
            raise StoreError(
                f"store URL {url!r} has no file path: use sqlite:///relative/costs.db "
                "or sqlite:////absolute/costs.db"
            )
        return "sqlite", rest[1:]
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"store URL {url!r} has an unknown scheme {scheme!r}: use sqlite:///path/costs.db "
            "or postgresql://user@host/db"
        )
    return "sqlite", url


def open_store(url: str | None = None) -> Store:
    """Open (and create on first use) the store at ``url`` (default: :func:`default_store_url`)."""
    kind, target = parse_store_url(url if url is not None else default_store_url())
    if kind == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(target)
    from .sqlite import SQLiteStore

    return SQLiteStore(target)
