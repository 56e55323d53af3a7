"""The PostgreSQL store's report SQL: group totals with their percentiles, and the ``--by run`` JSON.

Called by :class:`~otel_usecase.store.postgres.PostgresStore`'s report
primitives with its ``query`` (one read-only transaction) and ``query_together``
(parts on their own connections, one snapshot); kept apart from the connection
handling so each module has one job.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from .._log import logger
from . import totals
from .base import (
    GROUP_TOTALS,
    RUN_RECORD,
    RUN_TOTALS,
    TABLE,
    TAGS_COLUMN,
    ReportFilter,
    StoreError,
    StoreUnavailable,
    TagValue,
)

__all__ = ["SPLIT_FROM_PAGES", "TOKEN_SUM", "group_totals", "runs_json", "tag_value"]

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
QueryTogether = Callable[[Sequence[tuple[str, Sequence[Any]]]], list[list[tuple[Any, ...]]]]

TOKEN_SUM: Final = "COALESCE(SUM({}), 0)"
"""PostgreSQL sums ``bigint`` into ``numeric``, which cannot overflow (read back as ``int``)."""


def tag_value(present: Collection[str]) -> TagValue:
    """The value of a call's tag (:data:`~otel_usecase.store.base.TagValue`): the ``tags`` text as
    ``jsonb``, ``->>`` the key; NULL on a ledger older than the ``tags`` column (no call has tags)."""
    column = totals.column(TAGS_COLUMN, present)

    def value(key: str) -> tuple[str, Any]:
        return f"({column}::jsonb ->> ?)", key

    return value


SPLIT_FROM_PAGES: Final = 4096
"""A ledger of at least this many 8 KiB pages (about 100k calls) gets its ``--by run`` JSON written in
two halves at once (:func:`_median_run_cost`): 1.3 s -> 0.9 s of query at a million calls. Smaller ones
are done in one query before a split would pay."""
_SAMPLE_PAGES: Final = 100


def group_totals(
    query: Query,
    keys: Sequence[str],
    filters: ReportFilter,
    present: Collection[str],
    *,
    rollups: bool = False,
) -> list[tuple[Any, ...]]:
    """Groups of runs with their p50 / p95 run cost computed by PostgreSQL (``percentile_cont``).

    Only the groups travel to Python (10 rows instead of 200k run totals for
    ``--by use-case``). ``percentile_cont`` interpolates linearly between closest
    ranks, like :func:`.totals.percentile`, and skips NULLs: the runs whose cost is
    not known and complete are left out of the per-run figures as NULLs.
    """
    per_run, params = totals.run_totals_sql(
        keys,
        filters,
        TOKEN_SUM,
        present,
        zeros=False,
        tag_value=tag_value(present),
        rollups="postgresql" if rollups else None,
    )
    zeros = totals.zero_columns(present)  # not summed: 0, and not in the runs (see run_totals_sql)
    key_cols = ", ".join(totals.key_names(keys))
    complete_cost = f"CASE WHEN {totals.incomplete(str)} = 0 THEN cost_usd END"
    figures = {
        "runs": "COUNT(*)",
        **{name: "0" if name in zeros else f"SUM({name})" for name in RUN_TOTALS},
        "avg_run_cost_usd": f"AVG({complete_cost})",
        "p50_run_cost_usd": f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {complete_cost})",
        "p95_run_cost_usd": f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {complete_cost})",
        "runs_left_out": f"SUM(CASE WHEN ({complete_cost}) IS NULL THEN 1 ELSE 0 END)",
    }
    selected = ", ".join(figures[name] for name in GROUP_TOTALS)
    return query(f"SELECT {key_cols}, {selected} FROM ({per_run}) AS runs GROUP BY {key_cols}", params)


def runs_json(
    query: Query,
    query_together: QueryTogether,
    filters: ReportFilter,
    present: Collection[str],
    split_from_pages: int = SPLIT_FROM_PAGES,
) -> str:
    """The run records concatenated by PostgreSQL, in two halves at once on a big ledger.

    PostgreSQL's JSON functions format every field of every record through a
    generic per-type path; 200k records take 0.6 s that way. The record is
    written by concatenation instead: names are constants, the two strings go
    through ``to_json`` (JSON escaping), counts are bigint text, and the cost is
    formatted once. An unknown cost (no priced call) and a non-finite one (impossible
    from the exporter) are written as null.
    """
    where, params = totals.where(filters, tag_value(present))
    cost_text = "CASE WHEN t.cost_usd BETWEEN -1e308 AND 1e308 THEN t.cost_usd::text ELSE 'null' END"
    values = {
        "use_case": "COALESCE(to_json(r.use_case)::text, 'null')",
        "run_id": "to_json(r.run_id)::text",
        "runs": "'1'",
        "cost_usd": "r.c",
        "cost_complete": f"CASE WHEN {totals.incomplete(lambda name: 'r.' + name)} = 0 THEN 'true' ELSE 'false' END",
    }
    # The token classes not summed (9 of 14 in most ledgers) are 0: their text joins the constant
    # pieces around them, so they cost the records nothing.
    zeros = totals.zero_columns(present)
    pieces: list[str] = []
    text = ""
    for i, name in enumerate(RUN_RECORD):
        text += ("{" if i == 0 else ",") + f'"{name}":'
        if name in zeros:
            text += "0"
            continue
        pieces += [f"'{text}'", values.get(name, f"r.{name}::text")]
        text = ""
    record = "concat(" + ", ".join(pieces) + f", '{text}}}')"
    run_totals = ", ".join(
        f"{expression} AS {name}"
        for name, expression in totals.run_total_columns(TOKEN_SUM, present)
        if name not in zeros
    )

    def records(having: str) -> str:
        # COLLATE "C": ties in the order of Python's string comparison, whatever the database locale.
        # NULLS LAST: unpriced runs after every priced one, as SQLite and the report order them.
        return (
            f"SELECT string_agg({record}, ',' ORDER BY r.cost_usd DESC NULLS LAST, "
            'COALESCE(r.use_case, \'\') COLLATE "C", r.run_id COLLATE "C") '
            f"FROM (SELECT t.*, {cost_text} AS c FROM (SELECT use_case, run_id, {run_totals} "
            f"FROM {TABLE}{where} GROUP BY run_id, use_case{having}) AS t) AS r"
        )

    pivot = _median_run_cost(query, where, params, split_from_pages)
    parts: list[str | None] = []
    if pivot is not None:
        # Two halves at an estimated median run cost, on two server cores; in the
        # report's order (cost first) the half above the pivot comes first whole
        # (the unpriced runs, NULL cost, are in the second half, at its end).
        try:
            split = query_together(
                [
                    (records(f" HAVING {totals.COST} >= ?"), [*params, pivot]),
                    (records(f" HAVING ({totals.COST} >= ?) IS NOT TRUE"), [*params, pivot]),
                ]
            )
            parts = [rows[0][0] for rows in split if rows]
        except StoreUnavailable:
            raise
        except StoreError as exc:  # e.g. a PostgreSQL-compatible server without pg_export_snapshot
            logger.debug("otel-usecase: report in one query: %s", exc)
            pivot = None
    if pivot is None:
        parts = [row[0] for row in query(records(""), params)]
    return "[" + ",".join(part for part in parts if part) + "]"


def _median_run_cost(query: Query, where: str, params: Sequence[Any], split_from_pages: int) -> float | None:
    """An estimate of the median run cost, from the runs of a sample of the ledger's pages.

    It only balances the two halves of a split report: any value gives the same
    report. None for a ledger too small to split, or a sample without runs.
    """
    ((pages,),) = query(f"SELECT pg_relation_size('{TABLE}') / 8192", ())
    if int(pages) < split_from_pages:
        return None
    percent = min(100.0, 100.0 * _SAMPLE_PAGES / max(int(pages), 1))
    sampled = query(
        f"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY s.cost) FROM "
        f"(SELECT SUM(cost_usd) AS cost FROM {TABLE} WHERE run_id IN "
        f"(SELECT run_id FROM {TABLE} TABLESAMPLE SYSTEM ({percent:.6f}){where}) GROUP BY run_id) AS s",
        params,
    )
    value = sampled[0][0] if sampled else None
    return float(value) if isinstance(value, int | float) else None
