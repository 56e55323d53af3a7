"""store/groups_sql.py: the per-(run, group) rows and the group totals the dashboard's top lists read.

On SQLite and real PostgreSQL: runs that call two models in three steps, unpriced and partial calls, a
better copy moving a call to another model, ``reprice``, ``forget``, the schema 7 to 8 migration. Each
check compares the figures with the same views over the ledger alone, with the tables recomputed in
Python from the ledger (``tests/test_rollups.py``), and with published prices (gpt-4o-mini $0.15/M
input, $0.60/M output; gpt-4o $2.50/M, $10/M).
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_usecase.cost.call import STATUS_PARTIAL
from otel_usecase.cost.prices import PriceBook
from otel_usecase.cost.reprice import reprice
from otel_usecase.erasure import forget_user
from otel_usecase.report import views
from otel_usecase.report.queries import GROUPINGS
from otel_usecase.store import ReportFilter, Store, groups_sql, open_store

from .builders import a_call
from .expect import GPT4O_IN, GPT4O_OUT, M, mini_cost
from .test_rollups import _execute, assert_rollups_match_ledger
from .test_views import _LedgerOnly, _Refusing, rounded

HOUR = 3_600_000_000_000
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC


def gpt4o_cost(prompt: int, completion: int) -> float:
    return (prompt * GPT4O_IN + completion * GPT4O_OUT) / M


def call(n: int, run: str, model: str = "gpt-4o-mini", tokens: tuple[int, int] = (100, 50), **fields: Any) -> Any:
    prompt, completion = tokens
    cost = gpt4o_cost(prompt, completion) if model == "gpt-4o" else mini_cost(prompt, completion)
    fields.setdefault("cost_usd", cost)
    fields.setdefault("use_case", "support")
    return a_call(trace_id=f"{n:032x}", span_id=f"{n:016x}", start_ns=T0 + n * HOUR // 7,
                  end_ns=T0 + n * HOUR // 7 + 9, run_id=run, model=model,
                  tokens={"input": prompt, "output": completion}, **fields)  # fmt: skip


def agents(store: Store) -> None:
    """Runs of an agent: a planning step on gpt-4o, then tool steps on gpt-4o-mini; one unpriced call."""
    calls = []
    for r in range(6):
        base = 10 * r
        calls += [
            call(base, f"a{r}", "gpt-4o", (1000 + r, 200), step="plan", user_id=f"u{r % 3}",
                 experience_name="chat", experience_version="v1" if r < 3 else "v2"),
            call(base + 1, f"a{r}", tokens=(300 * (r + 1), 40), step="tool", user_id=f"u{r % 3}",
                 experience_name="chat", experience_version="v1" if r < 3 else "v2"),
            call(base + 2, f"a{r}", tokens=(50, 10 + r), step="answer", user_id=f"u{r % 3}",
                 experience_name="chat", experience_version="v1" if r < 3 else "v2"),
        ]  # fmt: skip
    calls.append(call(90, "b0", "mystery-1", use_case="search", step="tool", cost_usd=None, status="unpriced"))
    calls.append(call(91, "b0", tokens=(80, 20), use_case="search", step="tool"))
    assert store.write(calls) == []


def _same_as_ledger(store: Store, filters: ReportFilter, by: str, limit: int) -> list[Any]:
    shown = views.top(store, filters, by, limit)
    assert rounded(shown) == rounded(views.top(_LedgerOnly(store), filters, by, limit)), (by, filters, limit)  # type: ignore[arg-type]
    return shown


def test_kept_groupings_are_the_reports_groupings() -> None:
    for kept in (*groups_sql.CALL_GROUPINGS, *groups_sql.RUN_GROUPINGS):
        assert GROUPINGS[kept.by] == kept.keys, kept


def test_top_by_model_counts_each_run_once_per_model_at_published_prices(store: Store) -> None:
    agents(store)
    (gpt4o, mini, mystery) = _same_as_ledger(store, ReportFilter(), "model", 10)
    plans = sorted(gpt4o_cost(1000 + r, 200) for r in range(6))
    assert (gpt4o.key["model"], gpt4o.runs, gpt4o.calls) == ("gpt-4o", 6, 6)
    assert gpt4o.cost_usd == pytest.approx(sum(plans))
    assert gpt4o.p50_run_cost_usd == pytest.approx((plans[2] + plans[3]) / 2)
    assert gpt4o.p95_run_cost_usd == pytest.approx(plans[4] + (plans[5] - plans[4]) * 0.75)
    # gpt-4o-mini: two calls in each agent run (one run's part), and the search run's priced call
    parts = sorted([mini_cost(300 * (r + 1), 40) + mini_cost(50, 10 + r) for r in range(6)] + [mini_cost(80, 20)])
    assert (mini.runs, mini.calls, mini.runs_left_out) == (7, 13, 0)
    assert mini.cost_usd == pytest.approx(sum(parts))
    assert mini.avg_run_cost_usd == pytest.approx(sum(parts) / 7)
    assert mini.p50_run_cost_usd == pytest.approx(parts[3])
    assert (mystery.key["model"], mystery.cost_usd, mystery.runs_left_out) == ("mystery-1", None, 1)


def test_every_kept_grouping_matches_the_ledger_whole_and_within_use_cases(store: Store) -> None:
    agents(store)
    for filters in (ReportFilter(), ReportFilter(use_case="support"), ReportFilter(use_cases=("search",)),
                    ReportFilter(use_case="support", use_cases=("search",)), ReportFilter(use_cases=()),
                    ReportFilter(user_id="u1"), ReportFilter(experience_name="chat", use_case="support"),
                    ReportFilter(user_id="u2", use_cases=("search",)), ReportFilter(user_id="nobody"),
                    # windows that cut runs in two (a run's calls are 1/7 hour apart) and whole ones
                    ReportFilter(since_ns=T0 + 11 * HOUR // 7), ReportFilter(until_ns=T0 + 32 * HOUR // 7),
                    ReportFilter(since_ns=T0 + 21 * HOUR // 7, until_ns=T0 + 42 * HOUR // 7, use_case="support"),
                    ReportFilter(since_ns=T0 + 5, until_ns=T0 + 10 * HOUR, use_cases=("search",)),
                    ReportFilter(since_ns=T0 + 100 * HOUR)):  # fmt: skip
        for by in GROUPINGS:
            for limit in (1, 2, 10):
                _same_as_ledger(store, filters, by, limit)
    assert rounded(views.summary(store, ReportFilter())) == rounded(
        views.summary(_LedgerOnly(store), ReportFilter())  # type: ignore[arg-type]
    )
    steps = views.top(store, ReportFilter(use_case="support"), "step")
    assert [(r.key["step"], r.runs, r.calls) for r in steps] == [("plan", 6, 6), ("tool", 6, 6), ("answer", 6, 6)]
    versions = views.top(store, ReportFilter(), "experience-version")
    assert {(r.key["experience_version"], r.runs) for r in versions} == {("v1", 3), ("v2", 3), (None, 1)}
    # from the second call of run a1 (call 11) to before the last call of run a4 (call 42): a1 and a4 are cut
    cut = {r.key["model"]: r for r in views.top(store, ReportFilter(since_ns=T0 + 11 * HOUR // 7,
                                                                   until_ns=T0 + 42 * HOUR // 7), "model")}  # fmt: skip
    assert (cut["gpt-4o"].runs, cut["gpt-4o-mini"].runs) == (3, 4)  # plans of a2, a3, a4; a1 to a4's mini parts
    assert cut["gpt-4o"].cost_usd == pytest.approx(sum(gpt4o_cost(1000 + r, 200) for r in (2, 3, 4)))
    parts = sorted([mini_cost(600, 40) + mini_cost(50, 11),  # a1 without its plan
                    *(mini_cost(300 * (r + 1), 40) + mini_cost(50, 10 + r) for r in (2, 3)),
                    mini_cost(1500, 40)])  # a4 without its answer  # fmt: skip
    assert cut["gpt-4o-mini"].p50_run_cost_usd == pytest.approx((parts[1] + parts[2]) / 2)
    assert cut["gpt-4o-mini"].cost_usd == pytest.approx(sum(parts))
    u1 = {r.key["model"]: r for r in views.top(store, ReportFilter(user_id="u1"), "model")}  # runs a1, a4
    assert (u1["gpt-4o"].runs, u1["gpt-4o-mini"].calls) == (2, 4)
    assert u1["gpt-4o"].cost_usd == pytest.approx(gpt4o_cost(1001, 200) + gpt4o_cost(1004, 200))


def test_a_better_copy_moving_a_call_to_another_model_moves_its_run_between_groups(store: Store) -> None:
    agents(store)
    # the partial copy of a call first (on gpt-4o-mini), then the complete one names gpt-4o
    assert store.write([call(95, "c0", tokens=(100, 0), status=STATUS_PARTIAL, cost_usd=mini_cost(100, 0))]) == []
    partial = {r.key["model"]: r for r in _same_as_ledger(store, ReportFilter(), "model", 10)}
    assert (partial["gpt-4o-mini"].runs, partial["gpt-4o-mini"].runs_left_out) == (8, 1)
    assert store.write([call(95, "c0", "gpt-4o", (100, 30))]) == []
    assert_rollups_match_ledger(store)
    moved = {r.key["model"]: r for r in _same_as_ledger(store, ReportFilter(), "model", 10)}
    assert (moved["gpt-4o-mini"].runs, moved["gpt-4o-mini"].runs_left_out) == (7, 0)
    assert (moved["gpt-4o"].runs, moved["gpt-4o"].calls) == (7, 7)
    assert moved["gpt-4o"].cost_usd == pytest.approx(sum(gpt4o_cost(1000 + r, 200) for r in range(6)) + gpt4o_cost(100, 30))


def test_a_window_counts_a_part_whose_times_a_moved_call_left_wide_as_the_ledger_does(store: Store) -> None:
    """A part's times are never narrowed (store/groups_sql.py ``TIMES``): after a better copy moves a call
    to another model and an earlier time, the old model's part keeps the times of both calls. A window
    then reads it from the ledger as a part crossing an end: the same figures as the ledger's calls."""
    agents(store)
    t1, t2 = T0 + 40 * HOUR, T0 + 44 * HOUR
    first = a_call(trace_id="e" * 32, span_id="e" * 16, start_ns=t1, end_ns=t1 + 9, run_id="w1", use_case="support",
                   model="gpt-4o-mini", step="tool", tokens={"input": 100, "output": 10}, cost_usd=mini_cost(100, 10))
    second = a_call(trace_id="f" * 32, span_id="f" * 16, start_ns=t2, end_ns=t2 + 9, run_id="w1", use_case="support",
                    model="gpt-4o-mini", step="answer", tokens={"input": 200, "output": 0}, status=STATUS_PARTIAL,
                    cost_usd=mini_cost(200, 0))  # fmt: skip
    assert store.write([first, second]) == []
    better = second._replace(start_ns=t2 - 3 * HOUR, end_ns=t2 - 3 * HOUR + 9, model="gpt-4o",
                             tokens={"input": 200, "output": 20}, status="priced", cost_usd=gpt4o_cost(200, 20))  # fmt: skip
    assert store.write([better]) == []
    assert_rollups_match_ledger(store)
    if store.view_sql().group_times:
        ((first_ns, last_ns),) = store.query(
            "SELECT first_ns, last_ns FROM usecase_run_groups WHERE run_id = 'w1' AND report_by = 'model' "
            "AND k2 = 'gpt-4o-mini'"
        )
        assert (first_ns, last_ns) == (t1, t2)  # wider than its one call now
    for since, until in ((t1, t1 + 1), (t1, t2), (t1 + 1, None), (t2 - 4 * HOUR, t2 + 1), (t1 - HOUR, t2 + HOUR)):
        window = ReportFilter(since_ns=since, until_ns=until)
        for by in ("model", "step"):
            for limit in (1, 10):
                _same_as_ledger(store, window, by, limit)
    (mini,) = [r for r in _same_as_ledger(store, ReportFilter(since_ns=t1, until_ns=t1 + 1), "model", 10)]
    assert (mini.key["model"], mini.runs, mini.calls) == ("gpt-4o-mini", 1, 1)
    assert mini.cost_usd == pytest.approx(mini_cost(100, 10)) and mini.p50_run_cost_usd == pytest.approx(mini_cost(100, 10))
    (gpt4o,) = _same_as_ledger(store, ReportFilter(since_ns=t2 - 3 * HOUR, until_ns=t2 - 3 * HOUR + 1), "model", 10)
    assert (gpt4o.key["model"], gpt4o.runs, gpt4o.cost_usd) == ("gpt-4o", 1, pytest.approx(gpt4o_cost(200, 20)))


def test_reprice_and_forget_keep_the_totals_equal_to_the_ledger(store: Store) -> None:
    agents(store)
    assert store.write([call(200 + n, "stale", cost_usd=0.5, user_id="u0") for n in range(4)]) == []
    reprice(store, PriceBook())
    assert_rollups_match_ledger(store)
    (stale,) = [r for r in views.top(store, ReportFilter(), "model") if r.key["model"] == "gpt-4o-mini"]
    assert stale.cost_usd == pytest.approx(
        sum(mini_cost(300 * (r + 1), 40) + mini_cost(50, 10 + r) for r in range(6)) + mini_cost(80, 20)
        + 4 * mini_cost(100, 50)
    )  # fmt: skip
    forget_user(store, "u0")
    assert_rollups_match_ledger(store)
    assert not store.query("SELECT 1 FROM usecase_group_totals WHERE k1 = 'u0' OR k2 = 'u0'")
    users = _same_as_ledger(store, ReportFilter(), "user", 10)
    assert "u0" not in {r.key["user_id"] for r in users}
    assert sum(r.runs for r in users) == 8


def test_the_migration_fills_the_groups_of_a_schema_7_ledger(sqlite_or_postgres: str) -> None:
    sqlite = sqlite_or_postgres.startswith("sqlite")
    store = open_store(sqlite_or_postgres)
    try:
        agents(store)
    finally:
        store.close()
    # (SQLite keeps the totals in its fold; PostgreSQL by triggers on the per-run table)
    drop = [] if sqlite else [f"DROP TRIGGER usecase_runs_totals_{e} ON usecase_runs" for e in ("insert", "update", "delete")]
    late = [call(300 + n, f"late{n % 2}", "gpt-4o", (500, 50), use_case="search") for n in range(4)]
    _execute(sqlite_or_postgres, [], late)  # calls written past the store (SQLite: left pending)
    _execute(  # what an otel-usecase of schema 7 left: no groups
        sqlite_or_postgres,
        [*drop, "DROP TABLE usecase_run_groups", "DROP TABLE usecase_group_totals",
         "UPDATE otel_usecase_meta SET value = '7' WHERE key = 'schema_version'"],
        [],
    )
    store = open_store(sqlite_or_postgres)
    try:
        assert store.view_sql().groups
        assert_rollups_match_ledger(store)
        (gpt4o,) = [r for r in _same_as_ledger(store, ReportFilter(), "model", 10) if r.key["model"] == "gpt-4o"]
        assert (gpt4o.runs, gpt4o.calls) == (8, 10)
        assert store.write([call(400, "late9", "gpt-4o", use_case="search")]) == []  # and kept from then on
        assert_rollups_match_ledger(store)
    finally:
        store.close()


# --- tags: kept from the first call that brings a key (store/tags_sql.py) -------------------------


def tagged(store: Store) -> None:
    """After the agents' runs (no tags): the tenant tag on later calls of run a0 (which now has calls with
    and without it) and on new runs, a team tag on one of them, a run with no tag at all."""
    assert store.write([
        call(100, "a0", tokens=(400, 40), tags={"tenant": "acme"}),
        call(101, "t1", tokens=(500, 50), tags={"tenant": "acme", "team": "search"}),
        call(102, "t1", "gpt-4o", (700, 70), tags={"tenant": "acme", "team": "search"}),
        call(103, "t2", tokens=(600, 60), tags={"tenant": "globex"}, user_id="u1"),
        call(104, "t3", tokens=(200, 20)),
    ]) == []  # fmt: skip


def _agents_and_tags(url: str) -> None:
    """The agents' runs, then the tagged calls, written through a store of ``url`` that is then closed."""
    store = open_store(url)
    try:
        agents(store)
        tagged(store)
    finally:
        store.close()


def test_a_tag_key_is_kept_from_its_first_call_with_every_runs_no_value_group(store: Store) -> None:
    agents(store)
    assert store.view_sql().tag_keys == frozenset()
    tagged(store)
    assert store.view_sql().tag_keys == {"tenant", "team"}
    assert_rollups_match_ledger(store)  # per (run, value) rows, "no value" rows of every older run too
    tenants = {r.key["tag:tenant"]: r for r in _same_as_ledger(store, ReportFilter(), "tag:tenant", 10)}
    assert tenants["acme"].runs == 2 and tenants["acme"].calls == 3
    assert tenants["acme"].cost_usd == pytest.approx(mini_cost(400, 40) + mini_cost(500, 50) + gpt4o_cost(700, 70))
    assert tenants["globex"].cost_usd == pytest.approx(mini_cost(600, 60))
    assert tenants[None].runs == 8 and tenants[None].calls == 18 + 2 + 1  # a0's untagged calls count there too
    for filters in (ReportFilter(), ReportFilter(use_case="support"), ReportFilter(user_id="u1"),
                    ReportFilter(tags=(("tenant", "acme"),)), ReportFilter(tags=(("team", "search"),)),
                    ReportFilter(tags=(("tenant", "acme"), ("team", "search"))),
                    ReportFilter(tags=(("tenant", "nobody"),)), ReportFilter(since_ns=T0 + 100 * HOUR // 7)):  # fmt: skip
        for by in ("tag:tenant", "tag:team", "model", "use-case", "user"):
            for limit in (1, 3):
                _same_as_ledger(store, filters, by, limit)
        assert rounded(views.summary(store, filters)) == rounded(views.summary(_LedgerOnly(store), filters))  # type: ignore[arg-type]
        assert rounded(views.run_histogram(store, filters, 4)) == rounded(views.run_histogram(_LedgerOnly(store), filters, 4))  # type: ignore[arg-type]
    acme = views.summary(store, ReportFilter(tags=(("tenant", "acme"),)))
    assert (acme.calls, acme.runs) == (3, 2)


def test_a_store_keeps_its_first_eight_tag_keys_and_reads_the_others_from_the_ledger(store: Store) -> None:
    from otel_usecase.store.tags_sql import KEPT_TAG_KEYS

    agents(store)
    keys = [f"k{n}" for n in range(KEPT_TAG_KEYS + 2)]
    assert store.write([call(500 + n, f"k{n % 3}", tags={key: f"v{n % 2}"}) for n, key in enumerate(keys)]) == []
    assert store.view_sql().tag_keys == set(keys[:KEPT_TAG_KEYS])  # the first seen (in name order), no more
    assert store.write([call(600, "late", tags={"a_late_key": "x", "k0": "v9"})]) == []
    assert store.view_sql().tag_keys == set(keys[:KEPT_TAG_KEYS])
    assert_rollups_match_ledger(store)
    for key in (keys[0], keys[-1], "a_late_key"):
        rows = _same_as_ledger(store, ReportFilter(), f"tag:{key}", 10)
        assert sum(r.calls for r in rows) == 18 + 2 + len(keys) + 1
        _same_as_ledger(store, ReportFilter(tags=((key, "v0"),)), "model", 10)


def test_the_migration_keeps_the_tag_keys_of_a_schema_8_ledger(sqlite_or_postgres: str) -> None:
    _agents_and_tags(sqlite_or_postgres)
    _execute(  # what an otel-usecase of schema 8 left: no kept tag keys, no tag groups
        sqlite_or_postgres,
        ["DELETE FROM usecase_group_totals WHERE report_by LIKE 'tag:%'",
         "DELETE FROM usecase_run_groups WHERE report_by LIKE 'tag:%'", "DROP TABLE usecase_tag_keys",
         "UPDATE otel_usecase_meta SET value = '8' WHERE key = 'schema_version'"],
        [],
    )  # fmt: skip
    store = open_store(sqlite_or_postgres)
    try:
        assert store.view_sql().tag_keys == {"tenant", "team"}
        assert_rollups_match_ledger(store)
        assert store.write([call(700, "t9", tags={"tenant": "initech"})]) == []
        assert_rollups_match_ledger(store)
        _same_as_ledger(store, ReportFilter(), "tag:tenant", 10)
    finally:
        store.close()


def test_writers_bringing_new_tag_keys_at_once_keep_every_group_exact(sqlite_or_postgres: str) -> None:
    """Four stores (PostgreSQL: four connections) write at once, each bringing keys the others bring too
    and runs the others write to: each key is kept once, and no run misses its "no value" row."""
    import threading

    stores = [open_store(sqlite_or_postgres) for _ in range(4)]
    failures: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for batch in range(6):
                calls = [call(1000 * (w + 1) + 10 * batch + n, f"shared{n}", tokens=(100 + w, 10 + batch),
                              tags={f"key{(batch + n) % 4}": f"v{w}"} if (batch + n + w) % 3 else {})
                         for n in range(5)]  # fmt: skip
                assert stores[w].write(calls) == []
        except BaseException as exc:
            failures.append(exc)

    try:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert stores[0].view_sql().tag_keys == {f"key{n}" for n in range(4)}
        assert_rollups_match_ledger(stores[0])
        for n in range(4):
            _same_as_ledger(stores[0], ReportFilter(), f"tag:key{n}", 10)
    finally:
        for opened in stores:
            opened.close()


def test_a_kept_tag_filter_over_whole_runs_reads_the_per_run_table_and_matches_the_ledger(store: Store) -> None:
    """Every run's calls share their tags (no run is mixed), so the views read the copies of the tag value's
    runs and their model and step rows (store/tag_runs_sql.py): the same figures as the ledger's, at
    published prices, within a use case and the allowed set of them too."""
    calls = [call(n, f"w{n // 3}", "gpt-4o" if n % 3 == 0 else "gpt-4o-mini", (200 + 10 * n, 20 + n),
                  user_id=f"u{n // 3 % 4}", experience_name=f"e{n // 3 % 2}",
                  tags={"tenant": f"t{n // 3 % 3}"} if n // 3 % 5 else {}) for n in range(60)]  # fmt: skip
    assert store.write(calls) == []
    assert store.view_sql().tag_keys == {"tenant"}
    assert not store.query("SELECT 1 FROM usecase_runs WHERE mixed = 1")
    for filters in (ReportFilter(tags=(("tenant", "t1"),)), ReportFilter(tags=(("tenant", "t2"),), user_id="u1"),
                    ReportFilter(tags=(("tenant", "t0"),), use_case="support"),
                    ReportFilter(tags=(("tenant", "t1"),), use_cases=("support", "billing"))):  # fmt: skip
        for by in ("use-case", "user", "experience", "model", "step", "tag:tenant"):
            _same_as_ledger(store, filters, by, 3)
        assert rounded(views.summary(store, filters)) == rounded(views.summary(_LedgerOnly(store), filters))  # type: ignore[arg-type]
        assert rounded(views.run_histogram(store, filters, 5)) == rounded(views.run_histogram(_LedgerOnly(store), filters, 5))  # type: ignore[arg-type]
        assert rounded(views.list_runs(store, filters, "cost")) == rounded(views.list_runs(_LedgerOnly(store), filters, "cost"))  # type: ignore[arg-type]
        for bucket in ("hour", "day"):  # runs within one bucket from their copies, those spanning two from the run rollup
            for series in ("use-case", "user", "experience", "version", "model"):
                assert rounded(views.cost_series(store, filters, bucket, series)) == rounded(
                    views.cost_series(_LedgerOnly(store), filters, bucket, series))  # type: ignore[arg-type]  # fmt: skip
    t1 = [c for c in calls if c.tags.get("tenant") == "t1"]
    (row,) = [r for r in views.top(store, ReportFilter(tags=(("tenant", "t1"),)), "use-case") if r.key["use_case"] == "support"]
    assert row.calls == len(t1)
    assert row.cost_usd == pytest.approx(sum(
        gpt4o_cost(*c.tokens.values()) if c.model == "gpt-4o" else mini_cost(*c.tokens.values()) for c in t1  # type: ignore[arg-type]
    ))  # fmt: skip


def test_the_fold_reads_the_per_run_table_for_new_tag_keys_only(tmp_path: Any) -> None:
    """Every fold runs the backfill of new keys' "no value" rows: with no new key it must not read the
    per-run table (500,000 rows at 10M calls, per fold). SQLite's plan reads the kept keys first."""
    import sqlite3

    store = open_store(f"sqlite:///{tmp_path}/costs.db")
    try:
        assert store.write([call(1, "r1", tags={"tenant": "acme"})]) == []
        store.fold()  # type: ignore[attr-defined]
    finally:
        store.close()
    (backfill,) = [s for s in groups_sql.sqlite_register() if s.startswith("INSERT INTO usecase_run_groups")]
    with sqlite3.connect(tmp_path / "costs.db") as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + backfill)]
    assert plan[0] == "SCAN k", plan  # the kept keys (a few rows, none fresh) before the per-run table


def test_the_copies_of_a_tag_values_groups_keep_apart_groups_a_plain_concatenation_would_merge(
    store: Store,
) -> None:
    """A tag value's step rows are keyed by a text standing for (use case, step): no step, a step named
    ``-`` and one named ``1:-`` are three groups, as in the ledger."""
    steps = [None, "-", "1:-", "1:-", None]
    calls = [call(n, f"p{n}", tokens=(100 * (n + 1), 10), step=step, tags={"tenant": "acme"})
             for n, step in enumerate(steps)]  # fmt: skip
    assert store.write(calls) == []
    assert_rollups_match_ledger(store)
    rows = _same_as_ledger(store, ReportFilter(tags=(("tenant", "acme"),)), "step", 10)
    by_step = {r.key["step"]: r for r in rows}
    assert set(by_step) == {None, "-", "1:-"}
    assert by_step["1:-"].runs == 2 and by_step["1:-"].cost_usd == pytest.approx(mini_cost(300, 10) + mini_cost(400, 10))
    assert by_step[None].cost_usd == pytest.approx(mini_cost(100, 10) + mini_cost(500, 10))


def test_the_migration_copies_each_kept_tag_values_runs_of_a_schema_9_ledger(sqlite_or_postgres: str) -> None:
    """And fills the totals among a tag value's runs and within each use case (assert_rollups_match_ledger
    checks every totals row)."""
    _agents_and_tags(sqlite_or_postgres)
    _execute(  # what an otel-usecase of schema 9 left: no copies per tag value
        sqlite_or_postgres,
        ["DROP TABLE usecase_tag_runs", "DROP TABLE usecase_tag_groups",
         "DELETE FROM usecase_group_totals WHERE report_by LIKE '%@%'",  # (nor totals per tag value, use case)
         "UPDATE otel_usecase_meta SET value = '9' WHERE key = 'schema_version'"],
        [],
    )  # fmt: skip
    reader = open_store(sqlite_or_postgres, create=False)  # a reader of schema 9 reads the ledger's tags
    try:
        assert reader.view_sql().tag_keys == frozenset()
        _same_as_ledger(reader, ReportFilter(tags=(("tenant", "acme"),)), "model", 10)
    finally:
        reader.close()
    store = open_store(sqlite_or_postgres)
    try:
        assert store.view_sql().tag_keys == {"tenant", "team"}
        assert_rollups_match_ledger(store)
        assert store.query("SELECT run_id FROM usecase_tag_runs WHERE tag_key = 'team'") == [("t1",)]
        assert store.write([call(700, "t9", "gpt-4o", tags={"tenant": "acme"})]) == []
        assert_rollups_match_ledger(store)
        (gpt4o,) = [r for r in _same_as_ledger(store, ReportFilter(tags=(("tenant", "acme"),)), "model", 10)
                    if r.key["model"] == "gpt-4o"]  # fmt: skip
        assert gpt4o.runs == 2 and gpt4o.cost_usd == pytest.approx(gpt4o_cost(700, 70) + gpt4o_cost(100, 50))
    finally:
        store.close()


def test_the_migration_gives_the_groups_of_a_schema_10_ledger_their_times(sqlite_or_postgres: str) -> None:
    """A reader of schema 10 reads a window's groups run by run; the migration fills the times with the runs'
    (which cover their calls), and a window then reads them group by group: the same figures either way,
    and the ledger's (the agents' calls span T0 to T0 + 13 h; the windows cut runs and hours)."""
    _agents_and_tags(sqlite_or_postgres)
    _execute(  # what an otel-usecase of schema 10 left: no times
        sqlite_or_postgres,
        ["DROP INDEX usecase_run_groups_window", "ALTER TABLE usecase_run_groups DROP COLUMN first_ns",
         "ALTER TABLE usecase_run_groups DROP COLUMN last_ns",
         "UPDATE otel_usecase_meta SET value = '10' WHERE key = 'schema_version'"],
        [],
    )  # fmt: skip
    windows = [ReportFilter(since_ns=T0 + 3 * HOUR), ReportFilter(since_ns=T0 + HOUR // 2, until_ns=T0 + 7 * HOUR + 5),
               ReportFilter(since_ns=T0 + 2 * HOUR, use_case="support")]  # fmt: skip
    reader = open_store(sqlite_or_postgres, create=False)
    try:
        assert not reader.view_sql().group_times
        before = {(str(w), by): _same_as_ledger(reader, w, by, 10) for w in windows for by in ("model", "step")}
    finally:
        reader.close()
    store = open_store(sqlite_or_postgres)
    try:
        assert store.view_sql().group_times
        assert_rollups_match_ledger(store)  # the times cover each part's calls
        after = {(str(w), by): _same_as_ledger(store, w, by, 10) for w in windows for by in ("model", "step")}
        assert rounded(after) == rounded(before)
        (gpt4o,) = [r for r in after[(str(windows[0]), "model")] if r.key["model"] == "gpt-4o"]
        # runs a3 to a5 plan on gpt-4o at 30, 40, 50 h / 7, and t1 at 102 h / 7: after T0 + 3 h (a0 crosses it)
        assert gpt4o.runs == 4
        assert gpt4o.cost_usd == pytest.approx(sum(gpt4o_cost(1000 + r, 200) for r in (3, 4, 5)) + gpt4o_cost(700, 70))
    finally:
        store.close()


def _schema_11(url: str, calls: list[Any]) -> None:
    """Turn the store at ``url`` into what an otel-usecase of schema 11 left (no experience version in the
    per-run table, its copies, nor the pending rows; no experience-version totals), then write ``calls``
    past the store: SQLite's schema 11 triggers set them aside as pending rows for the migration to fold."""
    sqlite = url.startswith("sqlite")
    triggers = []
    if sqlite:
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            triggers = [str(sql) for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'usecase_calls'")]  # fmt: skip
    older = [t.replace(", experience_version", "").replace(", NEW.experience_version", "")
             .replace(", OLD.experience_version", "") for t in triggers]  # fmt: skip
    assert all(old != new and "experience_version" not in old for old, new in zip(older, triggers))
    _execute(
        url,
        [
            *(f"DROP TRIGGER usecase_calls_rollup_{kind}" for kind in (("insert", "update") if sqlite else ())),
            "DROP INDEX usecase_runs_experience_version",
            "DROP INDEX usecase_runs_window",
            "ALTER TABLE usecase_runs DROP COLUMN experience_version",
            "ALTER TABLE usecase_tag_runs DROP COLUMN experience_version",
            *(["ALTER TABLE usecase_rollup_pending DROP COLUMN experience_version"] if sqlite else []),
            *older,
            "DELETE FROM usecase_group_totals WHERE report_by LIKE 'experience-version%'",
            "UPDATE otel_usecase_meta SET value = '11' WHERE key = 'schema_version'",
        ],
        calls if sqlite else [],
    )


def test_the_migration_keeps_each_runs_experience_version_of_a_schema_11_ledger(sqlite_or_postgres: str) -> None:
    """A reader of schema 11 reads the experience-version report from the ledger; the migration adds each
    run's experience version to the per-run table and its copies (SQLite folding the pending rows first) and
    the grouping's totals: the same figures, the published prices', now from the totals."""
    store = open_store(sqlite_or_postgres)
    try:
        agents(store)  # (no run is mixed: the per-run table and the totals answer)
    finally:
        store.close()
    late = [call(70, "p1", tokens=(900, 90), user_id="u1", experience_name="chat", experience_version="v3")]
    _schema_11(sqlite_or_postgres, late)
    sqlite = sqlite_or_postgres.startswith("sqlite")
    views_of = [ReportFilter(), ReportFilter(use_case="support"), ReportFilter(user_id="u1"),
                ReportFilter(since_ns=T0 + 3 * HOUR)]  # fmt: skip
    reader = open_store(sqlite_or_postgres, create=False)
    try:
        assert not reader.view_sql().run_only_dims
        before = [_same_as_ledger(reader, f, "experience-version", 10) for f in views_of]
    finally:
        reader.close()
    store = open_store(sqlite_or_postgres)
    try:
        assert store.view_sql().run_only_dims
        assert_rollups_match_ledger(store)  # each run's experience version, the totals, the copies
        after = [_same_as_ledger(store, f, "experience-version", 10) for f in views_of]
        assert rounded(after) == rounded(before)
        totals = store.query(
            "SELECT k1, k2, runs FROM usecase_group_totals WHERE report_by = 'experience-version' AND k1 IS NOT NULL "
            "ORDER BY k2"
        )
        assert totals == [("chat", "v1", 3), ("chat", "v2", 3), *([("chat", "v3", 1)] if sqlite else [])]
        v2 = {r.key["experience_version"]: r for r in after[0]}["v2"]
        runs = [gpt4o_cost(1000 + r, 200) + mini_cost(300 * (r + 1), 40) + mini_cost(50, 10 + r) for r in (3, 4, 5)]
        assert (v2.runs, v2.calls) == (3, 9)
        assert v2.cost_usd == pytest.approx(sum(runs)) and v2.p50_run_cost_usd == pytest.approx(runs[1])
        # a call written after the migration: its run's experience version kept the same way
        assert store.write([call(71, "p2", tokens=(800, 80), experience_name="chat", experience_version="v3")]) == []
        assert_rollups_match_ledger(store)
        v3 = {r.key["experience_version"]: r for r in _same_as_ledger(store, ReportFilter(), "experience-version", 10)}["v3"]
        assert v3.runs == (2 if sqlite else 1)
    finally:
        store.close()


def test_a_tag_groupings_part_text_stands_for_one_pair_of_values_in_both_dialects(store: Store) -> None:
    """The key text of a group in the tag value's copies (``part``) is computed by the database; read back
    (``parsed_part``) it gives the pair again, and no two pairs share one, whatever the values hold."""
    from otel_usecase.store.tag_runs_sql import parsed_part, part

    values = [None, "", "-", "1:-", "0:", "a:b", "12:ab", "é", "x" * 100, "-1:x"]
    seen = {}
    for k1 in values:
        for k2 in values:
            ((text,),) = store.query(
                f"SELECT {part('r')} FROM (SELECT CAST(? AS TEXT) AS k1, CAST(? AS TEXT) AS k2) AS r", (k1, k2)
            )
            assert parsed_part(text) == (k1, k2), text
            assert seen.setdefault(text, (k1, k2)) == (k1, k2), text
    assert len(seen) == len(values) ** 2


def test_groups_of_equal_cost_under_a_kept_tag_are_ordered_by_their_values_as_the_report_orders_them(
    store: Store,
) -> None:
    """The tag groupings' totals are keyed by a text (``part``) that sorts ``b`` before ``aa``; ties are
    still ordered by the values: ``aa`` first, as ``report`` shows it."""
    calls = [call(n, f"r{n}", tokens=(100, 10), user_id=user, step=user, tags={"tenant": "acme"})
             for n, user in enumerate(["b", "aa", "ccc"])]  # fmt: skip
    assert store.write(calls) == []
    acme = ReportFilter(tags=(("tenant", "acme"),))
    for by in ("user", "step"):
        for limit in (1, 2):
            _same_as_ledger(store, acme, by, limit)
    (first,) = views.top(store, acme, "user", 1)
    assert first.key["user_id"] == "aa" and first.cost_usd == pytest.approx(mini_cost(100, 10))


def test_a_kept_tags_groups_over_a_window_count_what_its_calls_in_the_window_cost(store: Store) -> None:
    """A tag's groups over a time window come from the kept per-(run, value) rows of the runs inside it,
    and from the ledger for the runs crossing an end, whose calls on each side carry other values: each
    group has the calls in the window and the runs they belong to, at published prices."""
    assert store.write([
        call(10, "w1", tokens=(110, 11), tags={"tenant": "acme"}),  # before the window
        call(20, "w1", tokens=(120, 12), tags={"tenant": "globex"}),
        call(30, "w1", "gpt-4o", (130, 13), tags={"tenant": "acme"}),
        call(15, "w2", tokens=(150, 15), tags={"tenant": "acme"}),  # w2: wholly before
        call(16, "w2", tokens=(160, 16), tags={"tenant": "acme"}),
        call(25, "w3", tokens=(250, 25)),  # no tenant in the window
        call(40, "w3", tokens=(400, 40), tags={"tenant": "globex"}),  # after it
        call(22, "w4", tokens=(220, 22), tags={"tenant": "globex"}, use_case="billing"),
        call(23, "w5", tokens=(230, 23), tags={"tenant": "initech"}),  # wholly inside
        call(24, "w5", "gpt-4o", (240, 24), tags={"tenant": "initech"}),
    ]) == []  # fmt: skip
    assert "tenant" in store.view_sql().tag_keys
    window = ReportFilter(since_ns=T0 + 18 * HOUR // 7, until_ns=T0 + 35 * HOUR // 7)
    rows = {r.key["tag:tenant"]: r for r in _same_as_ledger(store, window, "tag:tenant", 10)}
    assert set(rows) == {"acme", "globex", "initech", None}
    assert (rows["acme"].runs, rows["acme"].calls) == (1, 1)
    assert rows["acme"].cost_usd == pytest.approx(gpt4o_cost(130, 13))
    assert (rows["globex"].runs, rows["globex"].calls) == (2, 2)
    assert rows["globex"].cost_usd == pytest.approx(mini_cost(120, 12) + mini_cost(220, 22))
    assert rows["globex"].p50_run_cost_usd == pytest.approx((mini_cost(120, 12) + mini_cost(220, 22)) / 2)
    assert (rows["initech"].runs, rows["initech"].tokens["input"]) == (1, 470)
    assert rows["initech"].cost_usd == pytest.approx(mini_cost(230, 23) + gpt4o_cost(240, 24))
    assert (rows[None].runs, rows[None].cost_usd) == (1, pytest.approx(mini_cost(250, 25)))
    support = {r.key["tag:tenant"]: r for r in _same_as_ledger(store, window._replace(use_case="support"), "tag:tenant", 10)}
    assert (support["globex"].runs, support["globex"].cost_usd) == (1, pytest.approx(mini_cost(120, 12)))
    for filters in (window._replace(until_ns=None), window._replace(since_ns=None), window._replace(use_cases=("billing",))):
        for limit in (1, 2, 10):
            _same_as_ledger(store, filters, "tag:tenant", limit)


def test_models_and_steps_under_a_kept_tag_over_a_window_count_its_calls_in_the_window(store: Store) -> None:
    """Under one kept tag over a time window, a call-level grouping comes from the tag value's copies of the
    per-(run, group) rows of its runs wholly inside the window, and from the ledger for its runs crossing an
    end; a run with calls on both sides and none inside does not count, nor do other tag values. Each
    group's runs, calls and cost at published prices, and every figure as the ledger gives it."""
    acme, globex = {"tenant": "acme"}, {"tenant": "globex"}
    assert store.write([
        call(10, "m1", tokens=(110, 11), step="plan", tags=acme, user_id="ann"),  # m1 crosses the start
        call(20, "m1", "gpt-4o", (120, 12), step="plan", tags=acme, user_id="ann"),
        call(21, "m1", tokens=(130, 13), step="tool", tags=acme, user_id="ann"),
        call(22, "m2", tokens=(140, 14), step="tool", tags=acme, user_id="bob"),  # m2: wholly inside
        call(23, "m2", "gpt-4o", (150, 15), step="plan", tags=acme, user_id="bob"),
        call(30, "m3", tokens=(160, 16), step="tool", tags=acme, user_id="ann"),  # m3 crosses the end
        call(40, "m3", "gpt-4o", (170, 17), step="plan", tags=acme, user_id="ann"),
        call(12, "m4", tokens=(180, 18), step="tool", tags=acme),  # m4: both sides, none inside
        call(41, "m4", "gpt-4o", (190, 19), step="plan", tags=acme),
        call(24, "m5", tokens=(200, 20), step="tool", tags=globex),  # another value
        call(26, "m6", tokens=(210, 21), step="tool", tags=acme, use_case="billing", user_id="bob"),
        call(27, "m7", tokens=(220, 22), step="tool", tags=acme, cost_usd=None, status="unpriced", user_id="bob"),
        call(11, "m8", "gpt-4o", (230, 23), step="plan", tags=acme),  # wholly before
    ]) == []  # fmt: skip
    assert "tenant" in store.view_sql().tag_keys
    window = ReportFilter(since_ns=T0 + 18 * HOUR // 7, until_ns=T0 + 35 * HOUR // 7, tags=(("tenant", "acme"),))
    kept: Any = _Refusing(store, "group_totals")  # (the report's reading of the ledger)
    rows = {r.key["model"]: r for r in views.top(kept, window, "model", 10)}
    assert set(rows) == {"gpt-4o", "gpt-4o-mini"}
    assert (rows["gpt-4o"].runs, rows["gpt-4o"].calls, rows["gpt-4o"].cost_complete) == (2, 2, True)
    assert rows["gpt-4o"].cost_usd == pytest.approx(gpt4o_cost(120, 12) + gpt4o_cost(150, 15), rel=1e-12)
    mini = rows["gpt-4o-mini"]
    assert (mini.runs, mini.calls, mini.cost_complete, mini.unpriced_calls) == (5, 5, False, 1)
    assert mini.cost_usd == pytest.approx(sum(mini_cost(p, c) for p, c in ((130, 13), (140, 14), (160, 16), (210, 21))), rel=1e-12)
    assert mini.tokens["input"] == 130 + 140 + 160 + 210 + 220
    users = {r.key["user_id"]: r for r in views.top(kept, window, "user", 10)}  # the runs' rows, by user
    assert (users["ann"].runs, users["ann"].calls) == (2, 3)  # m1 (2 calls in the window), m3
    assert users["ann"].cost_usd == pytest.approx(gpt4o_cost(120, 12) + mini_cost(130, 13) + mini_cost(160, 16))
    assert (users["bob"].runs, users["bob"].calls, users["bob"].cost_complete) == (3, 4, False)  # m2, m6, m7
    steps = {r.key["step"]: r for r in views.top(kept, window._replace(use_case="support"), "step", 10)}
    assert (steps["plan"].runs, steps["tool"].runs, steps["tool"].calls) == (2, 4, 4)
    assert steps["plan"].p50_run_cost_usd == pytest.approx((gpt4o_cost(120, 12) + gpt4o_cost(150, 15)) / 2)
    for filters in (window, window._replace(until_ns=None), window._replace(since_ns=None),
                    window._replace(use_cases=("billing",)), window._replace(use_case="support"),
                    window._replace(tags=(("tenant", "globex"),))):  # fmt: skip
        for by in ("model", "step", "use-case", "user", "experience", "version", "experience-version"):
            for limit in (1, 2, 10, None):
                assert rounded(views.top(kept, filters, by, limit)) == rounded(
                    views.top(_LedgerOnly(store), filters, by, limit)  # type: ignore[arg-type]
                ), (filters, by, limit)
