"""The tag keys whose groups the database keeps, so that a tag filter or a ``report --by tag:KEY`` reads
rows of :data:`.groups_sql.GROUPS` instead of every run's tags (a JSON value, in no index).

A tag key is kept from the first call that carries it, up to :data:`KEPT_TAG_KEYS` keys per store (the
first ones seen; a key past them is still filtered and grouped by, from the ledger, only slower). For a
kept key ``K`` every run has one row of :data:`.groups_sql.GROUPS` per value of ``K`` among its calls
(``report_by`` ``tag:K``, ``k1`` the value) and one for its calls without ``K`` (``k1`` NULL: the report's
"no value" group), so a tag grouping is a call-level grouping like model or step: its totals, its p50
and p95 by rank, its groups within a use case or under a filter all come from the same tables.

When a key is first seen, every call already stored lacks it: the rows of its "no value" group are the
per-run table's rows as they stand (:func:`backfill_fresh`), added before the calls that brought the
key. SQLite registers keys in the fold (one writer at a time: the write lock). PostgreSQL registers them
at the start of the writing transaction that brings them, after taking this table in ``EXCLUSIVE`` mode;
every write's trigger takes it in ``ROW SHARE`` mode first, so a registration waits for the writes in
progress to commit (whose runs its backfill must see) and the writes after it see the new key.
"""

from __future__ import annotations

from typing import Any, Final

from .base import TagValue

__all__ = [
    "KEPT_TAG_KEYS",
    "TAG_KEYS",
    "KeptTagValue",
    "backfill_fresh",
    "fresh_groups",
    "grouping",
    "keys_sql",
    "ledger_register",
    "pg_exclusive_lock",
    "pg_register",
    "pg_share_lock",
    "runs_with_sql",
    "sqlite_register",
    "tables",
    "unfresh",
    "value_sql",
]

TAG_KEYS: Final = "usecase_tag_keys"
KEPT_TAG_KEYS: Final = 8
"""The most tag keys a store keeps groups for. Each kept key costs every write one row per (run, value)
it touches, so the number is bounded; the issue's tags are a few custom properties per run (tenant,
team, a feature flag). A store's first keys are kept; later ones read the ledger."""

_PREFIX: Final = "tag:"


def grouping(key: str) -> str:
    """The ``report_by`` of tag ``key``'s groups (the ``report --by`` value)."""
    return _PREFIX + key


def tables(dialect: str) -> list[str]:
    """The table of kept keys (idempotent). ``fresh``: registered in this transaction, not yet backfilled."""
    del dialect
    return [
        f"CREATE TABLE IF NOT EXISTS {TAG_KEYS} (tag_key TEXT PRIMARY KEY, fresh INTEGER NOT NULL DEFAULT 0)"
    ]


def keys_sql() -> str:
    """The kept keys."""
    return f"SELECT tag_key FROM {TAG_KEYS}"


def value_sql(dialect: str, row: str, key: str) -> str:
    """The value of the tag named by column ``key`` in the ``tags`` JSON of row ``row`` (NULL without it).

    SQLite checks the JSON first: a corrupt ``tags`` value is read as no tags (as reports read it), never
    an error in the writer's fold. A key is a name (:data:`_NAME_SQL`), so never a ``"`` in the path."""
    if dialect == "postgresql":
        return f"({row}.tags::jsonb ->> {key})"
    return f"""CASE WHEN json_valid({row}.tags) THEN json_extract({row}.tags, '$."' || {key} || '"') END"""


def _name(dialect: str, column: str) -> str:
    """Whether ``column`` is a name (the scope's name rule): only those are kept."""
    if dialect == "postgresql":
        return f"{column} ~ '^[A-Za-z0-9._-]{{1,64}}$'"
    return f"length({column}) BETWEEN 1 AND 64 AND {column} NOT GLOB '*[^A-Za-z0-9._-]*'"


def _register(dialect: str, candidates: str) -> str:
    """Keep the keys of ``candidates`` (a query of one ``tag_key`` column) not kept yet, marked fresh, in
    name order, while fewer than :data:`KEPT_TAG_KEYS` are kept."""
    room = "MAX" if dialect == "sqlite" else "GREATEST"
    return (
        f"INSERT INTO {TAG_KEYS} (tag_key, fresh) SELECT c.tag_key, 1 FROM ({candidates}) AS c "
        f"WHERE {_name(dialect, 'c.tag_key')} AND c.tag_key NOT IN (SELECT tag_key FROM {TAG_KEYS}) "
        f"ORDER BY c.tag_key LIMIT {room}(0, {KEPT_TAG_KEYS} - (SELECT COUNT(*) FROM {TAG_KEYS}))"
    )


def sqlite_register(source: str) -> str:
    """SQLite: keep the new keys of the ``tags`` of ``source``'s rows (the fold's cells: their distinct
    tags, a few texts, are parsed once each)."""
    candidates = (
        f"SELECT DISTINCT j.key AS tag_key FROM (SELECT DISTINCT tags FROM {source} WHERE tags IS NOT NULL) "
        f"AS t, json_each(CASE WHEN json_valid(t.tags) THEN t.tags END) AS j"
    )
    return _register("sqlite", candidates)


def pg_register() -> str:
    """PostgreSQL: keep the new keys among the ``%s`` array of a batch's keys."""
    return _register("postgresql", "SELECT DISTINCT k AS tag_key FROM unnest(%s::text[]) AS k")


def pg_share_lock() -> str:
    """PostgreSQL: what every write's trigger runs first (see the module docstring)."""
    return f"LOCK TABLE {TAG_KEYS} IN ROW SHARE MODE"


def pg_exclusive_lock() -> str:
    """PostgreSQL: what a write that registers keys runs first (see the module docstring)."""
    return f"LOCK TABLE {TAG_KEYS} IN EXCLUSIVE MODE"


def ledger_register(dialect: str, ledger: str) -> str:
    """Keep the first keys of the calls already in ``ledger`` (the migration, before the groups are filled)."""
    if dialect == "postgresql":
        candidates = (
            f"SELECT DISTINCT jsonb_object_keys(t.tags::jsonb) AS tag_key FROM "
            f"(SELECT DISTINCT tags FROM {ledger} WHERE tags IS NOT NULL) AS t"
        )
        return _register(dialect, candidates)
    return sqlite_register(ledger)


def backfill_fresh(dialect: str, groups: str, runs: str, columns: str, measures: str) -> list[str]:
    """The "no value" rows of the fresh keys (every stored call lacks them: one row per run, its whole
    figures, from the per-run table ``runs``) into ``groups`` (its ``columns``; ``measures``: the measure
    and derived cost columns the two tables share); then the keys are no longer fresh. The group totals
    follow (SQLite: the caller adds these rows; PostgreSQL: the triggers on ``groups``). The keys come first
    in the join (SQLite keeps a ``CROSS JOIN``'s order): with no fresh key, the per-run table is not read
    (every fold runs this)."""
    order = " ORDER BY k.tag_key, r.use_case, r.run_id" if dialect == "postgresql" else ""
    prefix = "'" + _PREFIX + "'"
    return [
        (
            f"INSERT INTO {groups} ({columns}) SELECT {prefix} || k.tag_key, NULL, NULL, r.use_case, r.run_id, "
            f"{measures} FROM {TAG_KEYS} AS k CROSS JOIN {runs} AS r WHERE k.fresh = 1{order}"
        ),
    ]


def unfresh() -> str:
    """The fresh keys are backfilled."""
    return f"UPDATE {TAG_KEYS} SET fresh = 0 WHERE fresh = 1"


def fresh_groups() -> str:
    """The ``report_by`` values of the fresh keys (a subquery)."""
    return f"SELECT '{_PREFIX}' || tag_key FROM {TAG_KEYS} WHERE fresh = 1"


class KeptTagValue:
    """A store's :data:`~.base.TagValue` that also knows the kept keys: the per-run table's filters
    (:func:`.runs_sql.source`) read a kept tag's runs from their copies in :data:`.tag_runs_sql.TAG_RUNS`."""

    __slots__ = ("kept", "value")

    def __init__(self, value: TagValue, kept: frozenset[str]) -> None:
        self.value = value
        self.kept = kept

    def __call__(self, key: str) -> tuple[str, Any]:
        return self.value(key)


def runs_with_sql(key: str, value: str) -> tuple[str, list[Any]]:
    """The condition on the per-run table keeping the runs with calls whose tag ``key`` is ``value`` (a
    kept key): those with a row in that group, read through the groups' index on (grouping, group)."""
    from .groups_sql import GROUPS

    condition = (
        f"(use_case, run_id) IN (SELECT g.use_case, g.run_id FROM {GROUPS} AS g "
        f"WHERE g.report_by = ? AND g.k1 = ? AND g.k2 IS NULL)"
    )
    return condition, [grouping(key), value]
