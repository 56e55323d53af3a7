"""Tags: ``track_context(tags={"tenant": "acme"})`` stamped, stored, filtered and grouped.

Costs are computed here from published prices (tests/expect.py): each gpt-4o-mini call of these tests
costs 10 * $0.15/M + 5 * $0.60/M unless a test says otherwise.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from otel_usecase.store import open_store
from otel_usecase.store.base import ReportFilter

from .builders import a_call
from .expect import mini_cost

COST = mini_cost(10, 5)


def _stored(store_url: str, calls: list[Any]) -> None:
    store = open_store(store_url)
    try:
        assert store.write(calls) == []
    finally:
        store.close()


def _calls_by_tags() -> list[Any]:
    """Four calls in three runs: acme/search (2 calls), acme/billing, globex/search; and one without tags."""
    return [
        a_call(span_id="1" * 16, run_id="r1", cost_usd=COST, tags={"tenant": "acme", "team": "search"}),
        a_call(span_id="2" * 16, run_id="r1", cost_usd=COST, tags={"tenant": "acme", "team": "search"}),
        a_call(span_id="3" * 16, run_id="r2", cost_usd=COST, tags={"tenant": "acme", "team": "billing"}),
        a_call(span_id="4" * 16, run_id="r3", cost_usd=COST, tags={"tenant": "globex", "team": "search"}),
        a_call(span_id="5" * 16, run_id="r4", cost_usd=COST),
    ]


def _filtered(store_url: str, *tags: tuple[str, str]) -> tuple[int, float]:
    """(calls, cost) of the use-case groups a report with the tag filters ``tags`` reads."""
    store = open_store(store_url, create=False)
    try:
        rows = store.group_totals(["use_case"], ReportFilter(tags=tags))
    finally:
        store.close()
    at_calls = 1 + 1  # the key, then runs, then calls
    return sum(row[at_calls] for row in rows), sum(row[-5] or 0 for row in rows)


def test_tags_are_stored_as_one_canonical_json_column_and_read_back(sqlite_or_postgres: str) -> None:
    tags = {"tenant": "acmé", "team": "search"}  # non-ASCII kept as is, keys sorted
    _stored(sqlite_or_postgres, [a_call(tags=tags), a_call(span_id="f" * 16, run_id="r")])
    store = open_store(sqlite_or_postgres, create=False)
    try:
        stored = store.query("SELECT span_id, tags FROM usecase_calls ORDER BY span_id")
        assert stored == [("0" * 15 + "1", '{"team":"search","tenant":"acmé"}'), ("f" * 16, None)]
        first, second = store.run_calls("r")
    finally:
        store.close()
    assert dict(first.tags) == tags
    assert dict(second.tags) == {}


def test_report_filters_by_every_tag_given_in_both_stores(sqlite_or_postgres: str) -> None:
    _stored(sqlite_or_postgres, _calls_by_tags())
    assert _filtered(sqlite_or_postgres) == (5, pytest.approx(5 * COST))
    assert _filtered(sqlite_or_postgres, ("tenant", "acme")) == (3, pytest.approx(3 * COST))
    assert _filtered(sqlite_or_postgres, ("team", "search")) == (3, pytest.approx(3 * COST))
    assert _filtered(sqlite_or_postgres, ("tenant", "acme"), ("team", "search")) == (
        2,
        pytest.approx(2 * COST),
    )
    assert _filtered(sqlite_or_postgres, ("tenant", "initech")) == (0, 0)
    assert _filtered(sqlite_or_postgres, ("region", "eu")) == (0, 0)
    # --by run --format json is the store's own SQL: the same filter applies there
    store = open_store(sqlite_or_postgres, create=False)
    try:
        runs = store.runs_json(ReportFilter(tags=(("tenant", "acme"),)))
        per_run = store.run_totals(["use_case"], ReportFilter(tags=(("team", "billing"),)))
    finally:
        store.close()
    assert runs is not None and '"run_id":"r1"' in runs and '"run_id":"r2"' in runs and "r3" not in runs
    assert [row[1] for row in per_run] == [1]  # r2's one call


def test_a_tag_filter_key_that_breaks_the_name_rule_is_refused_by_name(store_url: str) -> None:
    _stored(store_url, _calls_by_tags())
    store = open_store(store_url, create=False)
    try:
        with pytest.raises(ValueError, match=r"tag key='a\"b' is not a valid name"):
            store.group_totals(["use_case"], ReportFilter(tags=(('a"b', "x"),)))
    finally:
        store.close()


def test_a_schema_3_ledger_gains_the_tags_column_and_its_calls_read_as_untagged(store_url: str) -> None:
    _stored(store_url, [a_call(span_id="1" * 16)])
    path = store_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # what an otel-usecase of schema 3 left
        conn.execute("ALTER TABLE usecase_calls DROP COLUMN tags")
        conn.execute("UPDATE otel_usecase_meta SET value = '3' WHERE key = 'schema_version'")
    reader = open_store(store_url, create=False)  # a report never upgrades: the tag filter matches nothing
    try:
        assert reader.group_totals(["use_case"], ReportFilter(tags=(("tenant", "acme"),))) == []
        assert [dict(c.tags) for c in reader.run_calls("r")] == [{}]
    finally:
        reader.close()
    _stored(store_url, [a_call(span_id="2" * 16, tags={"tenant": "acme"})])  # a writer upgrades
    assert _filtered(store_url, ("tenant", "acme"))[0] == 1
    assert _filtered(store_url)[0] == 2
