"""The definitions of use cases and experience types, as SQL both stores run (``?`` placeholders, portable).

A definition is optional: a use case (or experience name) seen in calls exists
without one, and :mod:`otel_usecase.usecases` lists those beside the defined ones.
The seen names are read from the hour rollup (:data:`.rollup_sql.HOUR_ROLLUP`,
small: one row per hour and key), with SQLite's rows not yet folded into it
(:data:`.rollup_sql.PENDING`), never from the ledger; a store without rollups (a
reader of a ledger older than schema 5) reads the ledger.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

__all__ = [
    "DEFINITIONS_DDL",
    "EXPERIENCE_TYPES",
    "EXPERIENCE_TYPES_TABLE",
    "USECASES_TABLE",
    "USE_CASES",
    "Kind",
    "seen_sql",
]

USECASES_TABLE: Final = "otel_usecase_usecases"
EXPERIENCE_TYPES_TABLE: Final = "otel_usecase_experience_types"

DEFINITIONS_DDL: Final[tuple[str, ...]] = (
    (
        f"CREATE TABLE IF NOT EXISTS {USECASES_TABLE} (name TEXT PRIMARY KEY, description TEXT, owner TEXT, "
        "created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)"
    ),
    (
        f"CREATE TABLE IF NOT EXISTS {EXPERIENCE_TYPES_TABLE} (name TEXT PRIMARY KEY, description TEXT, "
        "created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)"
    ),
)


class Kind(NamedTuple):
    """One kind of definition: its table, its fields besides the name, and the ledger column it names."""

    table: str
    fields: tuple[str, ...]
    """The columns after ``name`` and before ``created_ns`` (what ``update`` may change)."""
    column: str
    """The ledger (and hour rollup) column whose values are the names seen in calls."""

    def select_sql(self, name: str | None = None) -> tuple[str, list[Any]]:
        """``(name, *fields, created_ns, updated_ns)`` of one definition (or all, by name)."""
        columns = ", ".join(("name", *self.fields, "created_ns", "updated_ns"))
        if name is None:
            return f"SELECT {columns} FROM {self.table} ORDER BY name", []
        return f"SELECT {columns} FROM {self.table} WHERE name = ?", [name]

    def insert_sql(self) -> str:
        """Insert a definition; returns its name, nothing when it exists already (a concurrent create)."""
        columns = ("name", *self.fields, "created_ns", "updated_ns")
        return (
            f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT (name) DO NOTHING RETURNING name"
        )

    def update_sql(self) -> str:
        """Set every field and ``updated_ns`` of one definition (params: fields, updated_ns, name)."""
        sets = ", ".join(f"{f} = ?" for f in (*self.fields, "updated_ns"))
        return f"UPDATE {self.table} SET {sets} WHERE name = ? RETURNING name"


USE_CASES: Final = Kind(USECASES_TABLE, ("description", "owner"), "use_case")
EXPERIENCE_TYPES: Final = Kind(EXPERIENCE_TYPES_TABLE, ("description",), "experience_name")


def seen_sql(column: str, source: str) -> str:
    """The distinct non-null values of ``column`` (``use_case``, ``experience_name``) in ``source``: the
    hour rollup, the rollup plus SQLite's pending rows, or the ledger (see the module's docstring)."""
    from .base import TABLE
    from .rollup_sql import HOUR_ROLLUP, PENDING

    if source == "ledger":
        return f"SELECT DISTINCT {column} FROM {TABLE} WHERE {column} IS NOT NULL"
    # calls > 0: a cell whose calls all moved away (forget, a better copy of a call) names no one.
    rollup = f"SELECT {column} FROM {HOUR_ROLLUP} WHERE {column} IS NOT NULL AND calls > 0"
    if source == "rollup+pending":
        return f"{rollup} UNION SELECT {column} FROM {PENDING} WHERE {column} IS NOT NULL AND sign > 0"
    return rollup.replace("SELECT", "SELECT DISTINCT", 1)
