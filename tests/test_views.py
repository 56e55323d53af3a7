"""report/views.py: the dashboard's numbers, on SQLite and real PostgreSQL.

Calls are written as the exporter writes them (``Store.write``), each with the cost published prices give
(gpt-4o-mini: $0.15/M input, $0.60/M output); the expected figures are computed here from those prices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from otel_usecase.report import views
from otel_usecase.report.queries import GROUPINGS, build_report, report_rows
from otel_usecase.store import ReportFilter, Store

from .builders import a_call
from .expect import mini_cost

HOUR = 3_600_000_000_000
DAY = 24 * HOUR
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC


def call(n: int, *, run: str, use_case: str = "summarize", at: int = T0, tokens: tuple[int, int] = (100, 50),
         priced: bool = True, **fields: object) -> object:  # fmt: skip
    prompt, completion = tokens
    return a_call(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        start_ns=at,
        end_ns=at + 1_000_000,
        use_case=use_case,
        run_id=run,
        tokens={"input": prompt, "output": completion},
        cost_usd=mini_cost(prompt, completion) if priced else None,
        status="priced" if priced else "unpriced",
        **fields,
    )


def spend(store: Store) -> None:
    store.write(
        [
            call(1, run="r1", at=T0, user_id="alice", experience_name="chat"),
            call(2, run="r1", at=T0 + 10, user_id="alice", experience_name="chat", tokens=(1000, 10)),
            call(3, run="r2", at=T0 + HOUR, user_id="bob", tokens=(10, 5)),
            call(4, run="r3", use_case="search", at=T0 + DAY, tokens=(2000, 400)),
            call(5, run="r4", use_case="search", at=T0 + DAY + 5, priced=False, model="mystery-1"),
        ]
    )


def test_summary_adds_up_what_published_prices_give(store: Store) -> None:
    spend(store)
    s = views.summary(store, ReportFilter())
    priced = mini_cost(100, 50) + mini_cost(1000, 10) + mini_cost(10, 5) + mini_cost(2000, 400)
    assert s.cost_usd == pytest.approx(priced)
    assert (s.calls, s.runs, s.unpriced_calls, s.cost_complete) == (5, 4, 1, False)
    assert s.tokens["input"] == 100 + 1000 + 10 + 2000 + 100
    assert s.tokens["output"] == 50 + 10 + 5 + 400 + 50
    only = views.summary(store, ReportFilter(use_case="summarize"))
    assert (only.calls, only.runs, only.cost_complete) == (3, 2, True)
    assert only.cost_usd == pytest.approx(mini_cost(100, 50) + mini_cost(1000, 10) + mini_cost(10, 5))
    empty = views.summary(store, ReportFilter(use_case="nothing"))
    assert (empty.cost_usd, empty.calls, empty.runs, empty.cost_complete) == (None, 0, 0, True)


def test_until_is_exclusive_and_combines_with_since(store: Store) -> None:
    spend(store)
    first_hour = views.summary(store, ReportFilter(since_ns=T0, until_ns=T0 + HOUR))
    assert (first_hour.calls, first_hour.runs) == (2, 1)
    assert first_hour.cost_usd == pytest.approx(mini_cost(100, 50) + mini_cost(1000, 10))


def test_cost_series_buckets_by_hour_and_day_in_utc(store: Store) -> None:
    spend(store)
    days = views.cost_series(store, ReportFilter(), "day")
    assert [(p.start_ns, p.key, p.calls) for p in days] == [
        (T0, "summarize", 3),
        (T0 + DAY, "search", 2),
    ]
    assert days[1].cost_usd == pytest.approx(mini_cost(2000, 400))
    hours = views.cost_series(store, ReportFilter(use_case="summarize"), "hour", by="user")
    assert [(p.start_ns, p.key, p.calls) for p in hours] == [(T0, "alice", 2), (T0 + HOUR, "bob", 1)]
    assert hours[0].cost_usd == pytest.approx(mini_cost(100, 50) + mini_cost(1000, 10))


def test_top_is_the_report_most_expensive_first(store: Store) -> None:
    spend(store)
    rows = views.top(store, ReportFilter(), "use-case", limit=1)
    assert [r.key for r in rows] == [{"use_case": "search"}]
    assert rows == build_report(store, "use-case", limit=1)
    assert [r.key["use_case"] for r in views.top(store, ReportFilter(), "use-case")] == [
        "search",
        "summarize",
    ]


def test_list_runs_pages_newest_or_dearest_first(store: Store) -> None:
    spend(store)
    newest = views.list_runs(store, ReportFilter())
    assert [r.run_id for r in newest] == ["r4", "r3", "r2", "r1"]
    r1 = newest[-1]
    assert (r1.use_case, r1.user_id, r1.experience_name, r1.calls) == ("summarize", "alice", "chat", 2)
    assert (r1.start_ns, r1.end_ns) == (T0, T0 + 10 + 1_000_000)
    assert r1.tokens["input"] == 1100 and r1.cost_complete
    assert r1.cost_usd == pytest.approx(mini_cost(100, 50) + mini_cost(1000, 10))
    assert dict(r1.tags) == {}
    dearest = views.list_runs(store, ReportFilter(), order="cost")
    assert [r.run_id for r in dearest] == ["r3", "r1", "r2", "r4"]  # unknown cost last
    assert (dearest[-1].cost_usd, dearest[-1].cost_complete) == (None, False)
    page = views.list_runs(store, ReportFilter(), order="cost", limit=2, offset=1)
    assert [r.run_id for r in page] == ["r1", "r2"]


def test_run_histogram_counts_complete_runs_and_marks_p50_p95(store: Store) -> None:
    spend(store)
    h = views.run_histogram(store, ReportFilter(), bins=4)
    costs = sorted([mini_cost(100, 50) + mini_cost(1000, 10), mini_cost(10, 5), mini_cost(2000, 400)])
    assert h.runs_left_out == 1  # r4: unpriced
    assert sum(h.counts) == 3 and len(h.edges) == 5
    assert h.edges[0] == pytest.approx(costs[0]) and h.edges[-1] == pytest.approx(costs[-1])
    assert h.counts[0] == 1 and h.counts[-1] == 1  # the cheapest and the dearest at the ends
    assert h.p50 == pytest.approx(costs[1])
    assert h.p95 == pytest.approx(costs[1] + (costs[2] - costs[1]) * 0.9)
    none = views.run_histogram(store, ReportFilter(use_case="nothing"))
    assert none == views.Histogram([], [], None, None, 0)


class _LedgerOnly:
    """The same store, its view queries told there are no rollups: they read the ledger."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def view_sql(self) -> object:
        return self._store.view_sql()._replace(rollups=False)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


class _Refusing:
    """The same store, refusing the reads named: the proof that what a store keeps answered without them."""

    def __init__(self, store: Any, *refused: str) -> None:
        self._store, self._refused = store, refused

    def __getattr__(self, name: str) -> object:
        if name in self._refused:

            def refused(*args: object, **kwargs: object) -> object:
                raise AssertionError(f"read through {name}: the kept rows should have answered")

            return refused
        return getattr(self._store, name)


FILTERS = [
    ReportFilter(),
    ReportFilter(use_case="summarize"),
    ReportFilter(user_id="alice"),
    ReportFilter(experience_name="chat", since_ns=T0),
    ReportFilter(since_ns=T0 + HOUR),  # whole hours: the rollups answer
    ReportFilter(since_ns=T0 + 5, until_ns=T0 + DAY + 3),  # mid-hour: whole hours + the ledger's partial ones
    ReportFilter(since_ns=T0 + 2 * HOUR + 3),  # a partial first hour, open end
    ReportFilter(until_ns=T0 + 2 * HOUR + 9),  # open start, a partial last hour
    ReportFilter(since_ns=T0 + 3, until_ns=T0 + HOUR + 5),  # within two partial hours: the ledger alone
    ReportFilter(user_id="alice", since_ns=T0 + 1, until_ns=T0 + 3 * HOUR + 1),
    ReportFilter(tags=(("tenant", "acme"),)),
    ReportFilter(tags=(("tenant", "acme"),), since_ns=T0, until_ns=T0 + DAY),
    ReportFilter(since_ns=T0, until_ns=T0 + 2 * DAY),  # whole days: a series by day reads the day rollup
    ReportFilter(use_case="search", since_ns=T0 + DAY),
]


def rounded(value: Any) -> Any:
    """``value`` with every float to 12 significant digits: sums of the same costs in another order."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(rounded(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v) for v in value)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return rounded(dataclasses.asdict(value))
    return value


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_rollups_answer_every_view_as_the_ledger_does(store: Store, filters: ReportFilter) -> None:
    spend(store)
    store.write([call(6, run="r5", at=T0 + 2 * HOUR + 7, tags={"tenant": "acme"}),
                 call(7, run="r5", at=T0 + 3 * HOUR, tags={"tenant": "acme"}),
                 # a run with calls on both sides of some windows and none inside them
                 call(8, run="r6", use_case="search", at=T0 + 2, user_id="alice"),
                 call(9, run="r6", use_case="search", at=T0 + 2 * DAY + 1, user_id="alice")])  # fmt: skip
    assert store.view_sql().rollups
    ledger: Any = _LedgerOnly(store)

    def same(view: Any, *args: Any) -> None:
        assert rounded(view(store, filters, *args)) == rounded(view(ledger, filters, *args))

    same(views.summary)
    for bucket in ("hour", "day"):
        for by in ("use-case", "user", "model"):
            same(views.cost_series, bucket, by)
    for order in ("newest", "cost"):
        for limit, offset in ((50, 0), (1, 1), (2, 3)):
            same(views.list_runs, order, limit, offset)
    same(views.run_histogram, 3)
    same(views.run_histogram, 1)
    for by in GROUPINGS:  # top reads the group totals, the per-(run, group) rows, the per-run table
        for limit in (1, 2, 10, None):
            same(views.top, by, limit)
        assert rounded(views.top(store, filters, by, None)) == rounded(report_rows(ledger, by, filters)), by
    for by in GROUPINGS:  # the report (and top) too: the stores read the run rollup for the keys it keeps
        from_rollups = rounded(report_rows(store, by, filters))
        store._rollups = False  # type: ignore[attr-defined]
        try:
            assert from_rollups == rounded(report_rows(store, by, filters)), by
        finally:
            store._rollups = True  # type: ignore[attr-defined]


def test_a_window_counts_the_runs_with_a_call_inside_it(store: Store) -> None:
    """Runs wholly inside, runs crossing an end with a call inside, not runs with calls only on both sides."""
    spend(store)
    store.write([call(8, run="r6", use_case="search", at=T0 + 2),
                 call(9, run="r6", use_case="search", at=T0 + DAY + 9)])  # fmt: skip
    window = views.summary(store, ReportFilter(since_ns=T0 + 3, until_ns=T0 + HOUR + 5))
    assert (window.runs, window.calls) == (2, 2)  # r1 (its second call), r2; not r6
    assert window.cost_usd == pytest.approx(mini_cost(1000, 10) + mini_cost(10, 5))
    crossing = views.summary(store, ReportFilter(since_ns=T0 + 1, until_ns=T0 + DAY + 6))
    assert (crossing.runs, crossing.calls) == (5, 5)  # r1 and r6 cross an end with a call inside


def test_a_run_whose_calls_disagree_on_the_user_is_still_counted_as_the_ledger_does(store: Store) -> None:
    """The per-run table keeps a run's user on its row; a run whose calls name two users is marked mixed and
    every view then reads the rollups: the same figures as the ledger, per user too."""
    spend(store)
    store.write([call(8, run="r1", at=T0 + 20, user_id="carol", experience_name="chat", tokens=(300, 30))])
    ledger: Any = _LedgerOnly(store)
    for filters in (ReportFilter(), ReportFilter(user_id="alice"), ReportFilter(user_id="carol")):
        for view, args in ((views.summary, ()), (views.run_histogram, (4,)), (views.list_runs, ("cost",)),
                           (views.top, ("user",)), (views.top, ("use-case",))):  # fmt: skip
            assert rounded(view(store, filters, *args)) == rounded(view(ledger, filters, *args)), (
                view,
                filters,
            )
    carol = views.summary(store, ReportFilter(user_id="carol"))
    assert (carol.runs, carol.calls) == (1, 1)
    assert carol.cost_usd == pytest.approx(mini_cost(300, 30))
    (alice,) = views.top(store, ReportFilter(user_id="alice"), "user")
    assert alice.p50_run_cost_usd == pytest.approx(mini_cost(100, 50) + mini_cost(1000, 10))


def test_histogram_and_top_percentiles_over_many_runs_match_published_prices(store: Store) -> None:
    """p50 and p95 read by rank from the per-run table's index: the interpolated figures of the sorted costs."""
    costs = []
    calls = []
    for n in range(41):
        prompt = 100 + 37 * ((n * 17) % 41)
        costs.append(mini_cost(prompt, 10))
        calls.append(call(100 + n, run=f"m{n}", at=T0 + n, tokens=(prompt, 10), user_id=f"u{n % 2}"))
    store.write(calls)
    ordered = sorted(costs)
    p50, p95 = ordered[20], ordered[38] + (ordered[39] - ordered[38]) * 0.0  # (41 - 1) * 0.95 = 38 exactly
    hist = views.run_histogram(store, ReportFilter(), 5)
    assert (hist.p50, hist.p95) == (pytest.approx(p50), pytest.approx(p95))
    assert sum(hist.counts) == 41 and hist.runs_left_out == 0
    (row,) = views.top(store, ReportFilter(), "use-case")
    assert (row.runs, row.p50_run_cost_usd, row.p95_run_cost_usd) == (
        41,
        pytest.approx(p50),
        pytest.approx(p95),
    )
    assert row.avg_run_cost_usd == pytest.approx(sum(costs) / 41)
    u1 = sorted(c for i, c in enumerate(costs) if i % 2 == 1)  # 20 runs: p95 at rank 18.05
    top_u1 = next(r for r in views.top(store, ReportFilter(), "user") if r.key["user_id"] == "u1")
    assert top_u1.p95_run_cost_usd == pytest.approx(u1[18] + (u1[19] - u1[18]) * 0.05)


def test_a_windows_top_orders_groups_of_equal_cost_by_key_as_the_report_does(store: Store) -> None:
    """Over a time window the groups are summed and ordered in SQL, ties by key: in code point order (not
    a locale's: ``B`` before ``a``, ``aa`` before ``b``, ``é`` last), no key first, as the report orders
    them; a run crossing the window's start moves its group among them."""
    users = ["b", "aa", "B", "é", "a", None, "a b", "ab"]
    store.write([call(400 + n, run=f"w{n}", at=T0 + HOUR + n, tokens=(100, 10), user_id=u) for n, u in enumerate(users)])
    store.write([call(450, run="x", at=T0 + 5, tokens=(100, 10), user_id="zz"),  # crosses T0 + HOUR
                 call(451, run="x", at=T0 + HOUR + 60, tokens=(100, 10), user_id="zz")])  # fmt: skip
    ledger: Any = _LedgerOnly(store)
    window = ReportFilter(since_ns=T0 + HOUR)
    for limit in (1, 2, 3, 5, None):
        shown = views.top(store, window, "user", limit)
        assert rounded(shown) == rounded(views.top(ledger, window, "user", limit)), limit
    order = [r.key["user_id"] for r in views.top(store, window, "user", None)]
    assert order == [None, "B", "a", "a b", "aa", "ab", "b", "zz", "é"]  # all of one cost: zz's call inside only


def test_a_windows_long_top_list_reads_its_runs_costs_in_one_pass_as_the_ledger_does(store: Store) -> None:
    """More groups shown than one query names (a page of up to 10,000): their runs' complete costs are read
    in one pass over the window; the same rows as the report's, p50 and p95 included."""
    store.write([call(500 + n, run=f"m{n}", at=T0 + HOUR + n, tokens=(100 + n % 7, 10), user_id=f"m{n % 230:03d}")
                 for n in range(460)])  # fmt: skip
    ledger: Any = _LedgerOnly(store)
    window = ReportFilter(since_ns=T0 + HOUR)
    for limit in (201, 230, None):
        shown = views.top(store, window, "user", limit)
        assert len(shown) == (limit or 230)
        assert rounded(shown) == rounded(views.top(ledger, window, "user", limit)), limit
    first = views.top(store, window, "user", None)[0]
    # user m(n) has runs n and n + 230 of 100 + n % 7 and 100 + (n + 6) % 7 input tokens: the dearest ones
    # have n % 7 == 6 (106 and 105 tokens), the first of them by id is m006
    assert (first.key["user_id"], first.runs) == ("m006", 2)
    assert first.cost_usd == pytest.approx(mini_cost(106, 10) + mini_cost(105, 10))
    assert first.p50_run_cost_usd == pytest.approx((mini_cost(106, 10) + mini_cost(105, 10)) / 2)


def test_a_list_of_more_groups_than_a_query_names_is_the_reports_under_every_filter(store: Store) -> None:
    """1,100 experiences (a report of every group, a page of thousands): no read names them one by one,
    which SQLite refuses past 1,000 terms ("Expression tree is too large"); each filter's list is the
    ledger's report, and an experience's cost is its calls' at published prices."""
    many = 1100
    store.write([call(2000 + n, run=f"x{n}", use_case=("a", "b")[n % 2], at=T0 + HOUR + n * 1000,
                      tokens=(100 + n % 13, 10), experience_name=f"e{n % many:04d}", experience_id="1",
                      user_id=("ann", "bob")[n % 3 == 0], tags={"tenant": ("t1", "t2")[n % 5 == 0]})
                 for n in range(2 * many)])  # fmt: skip
    ledger: Any = _LedgerOnly(store)
    for filters in (
        ReportFilter(),
        ReportFilter(use_case="a"),
        ReportFilter(since_ns=T0 + HOUR + 500 * 1000),
        ReportFilter(use_case="b", since_ns=T0 + HOUR + 500 * 1000),
        ReportFilter(user_id="ann"),
        ReportFilter(tags=(("tenant", "t1"),)),
    ):
        for limit in (1050, None):
            shown = views.top(store, filters, "experience", limit)
            assert len(shown) > 300, (filters, limit)
            assert rounded(shown) == rounded(report_rows(ledger, "experience", filters, limit=limit)), filters
    # experience e(n) has runs n and n + 1,100, of 100 + n % 13 and 100 + (n + 8) % 13 input tokens
    every = {r.key["experience_name"]: r for r in build_report(store, "experience")}
    assert len(every) == many
    e7 = every["e0007"]
    assert (e7.runs, e7.calls) == (2, 2)
    assert e7.cost_usd == pytest.approx(mini_cost(107, 10) + mini_cost(102, 10))
    assert e7.p95_run_cost_usd == pytest.approx(mini_cost(102, 10) + 0.95 * (mini_cost(107, 10) - mini_cost(102, 10)))


def test_top_orders_groups_of_equal_cost_by_key_past_the_rows_it_reads_first(store: Store) -> None:
    """``top`` reads the dearest groups in SQL with room for ties; 40 users of exactly the same cost (more
    than that room) are still ordered by user id, as the report orders them."""
    store.write(
        [call(200 + n, run=f"t{n}", at=T0 + n, tokens=(100, 10), user_id=f"u{n:02d}") for n in range(40)]
    )
    store.write([call(300, run="dear", at=T0 + 50, tokens=(5000, 10), user_id="zz")])
    ledger: Any = _LedgerOnly(store)
    for limit in (1, 2, 5, 39):
        shown = views.top(store, ReportFilter(), "user", limit)
        assert rounded(shown) == rounded(views.top(ledger, ReportFilter(), "user", limit)), limit
    assert [r.key["user_id"] for r in views.top(store, ReportFilter(), "user", 3)] == ["zz", "u00", "u01"]
