"""``ReportFilter.use_cases``: the allowed set every read honours, on SQLite and real PostgreSQL.

The oracle is a second store that holds only the calls (and outcomes) of the allowed use cases, written the
same way: every view of :mod:`otel_usecase.report.views`, ``report_rows`` for every ``--by``, the periods,
the outcome report, ``runs_json`` and ``run_calls`` must give, on the whole store with ``use_cases=S``,
exactly what they give on that store, with every other filter (a crafted ``use_case`` outside the set, the
user, experience, tag and version of another use case's calls, whole-hour and mid-hour windows), through the
rollups, the per-run table and the ledger alike; and no value that only another use case has may appear.
Costs are those published prices give (gpt-4o-mini: $0.15/M input, $0.60/M output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from otel_usecase.cost.call import Call
from otel_usecase.report import views
from otel_usecase.report.outcomes import OUTCOME_GROUPINGS, outcome_report
from otel_usecase.report.periods import PERIODS, period_rows
from otel_usecase.report.queries import GROUPINGS, report_rows, run_calls
from otel_usecase.store import ReportFilter, Store, open_store, rollup_sql
from otel_usecase.store.outcome_sql import Outcome

from .builders import a_call
from .expect import mini_cost
from .pg import PostgresServer
from .test_views import rounded

HOUR = 3_600_000_000_000
DAY = 24 * HOUR
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC

ALPHA, BETA, GAMMA = "alpha", "beta-secret-uc", "gamma"

_n = count(1)


def call(
    use_case: str,
    run: str,
    at: int,
    tokens: tuple[int, int] = (100, 50),
    *,
    priced: bool = True,
    **fields: Any,
) -> Call:
    n = next(_n)
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


def ledger() -> tuple[list[Call], list[Outcome]]:
    """Three use cases sharing a user (alice), an experience name (chat), a tag key and a run id
    (``shared-run``); beta's own values carry ``secret`` so a leak is visible in any output."""
    calls = [
        call(
            ALPHA,
            "a1",
            T0,
            user_id="alice",
            experience_name="chat",
            experience_id="e1",
            use_case_version="v1",
            step="draft",
            tags={"tenant": "acme"},
        ),
        call(
            ALPHA,
            "a1",
            T0 + 7 * 60 * 10**9,
            (1000, 10),
            user_id="alice",
            experience_name="chat",
            experience_id="e1",
            use_case_version="v1",
            step="review",
            tags={"tenant": "acme"},
        ),
        call(ALPHA, "a2", T0 + HOUR + 5, (10, 5), user_id="bob", use_case_version="v2"),
        call(ALPHA, "shared-run", T0 + DAY + 11, (300, 30), user_id="alice", tags={"tenant": "acme"}),
        call(
            BETA,
            "b1-secret-run",
            T0 + 30 * 60 * 10**9,
            (5000, 700),
            user_id="alice",
            experience_name="chat",
            experience_id="e-secret",
            use_case_version="v1",
            step="secret-step",
            tags={"tenant": "secret-tenant"},
        ),
        call(
            BETA,
            "shared-run",
            T0 + DAY + 12,
            (2000, 400),
            user_id="carol-secret-user",
            model="secret-model",
            tags={"tenant": "acme"},
        ),
        call(
            BETA,
            "b2-secret-run",
            T0 + 2 * DAY,
            priced=False,
            user_id="carol-secret-user",
            model="secret-model-2",
        ),
        call(
            GAMMA,
            "g1",
            T0 + 3 * HOUR,
            (700, 70),
            user_id="dave",
            experience_name="search",
            experience_id="e9",
            use_case_version="v2",
            tags={"tenant": "globex"},
        ),
        call(
            GAMMA,
            "g1",
            T0 + 3 * HOUR + 99,
            (70, 7),
            user_id="dave",
            experience_name="search",
            experience_id="e9",
            use_case_version="v2",
            tags={"tenant": "globex"},
        ),
    ]
    outcomes = [
        Outcome(f"{i:032x}", f"{i:016x}", T0 + DAY + 100 + i, None, use_case, run, "resolved", value)
        for i, (use_case, run, value) in enumerate(
            [
                (ALPHA, "shared-run", 1.0),
                (BETA, "shared-run", 5.0),
                (BETA, "b1-secret-run", 7.0),
                (BETA, "no-calls-secret-run", 3.0),  # an outcome of a run with no call: "outside"
                (GAMMA, "g1", 2.0),
            ],
            start=1,
        )
    ]
    return calls, outcomes


SECRETS = ("secret",)
"""Every value only beta has contains this."""

MIXING = call(
    BETA,
    "b1-secret-run",
    T0 + 31 * 60 * 10**9,
    (20, 2),
    user_id="other-secret-user",
    experience_name="chat",
    tags={"tenant": "secret-tenant"},
)
"""A second user in one of beta's runs: the run is then mixed, and the per-run table stops answering."""


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """Makes store URLs of one kind: SQLite files, or fresh databases of one real PostgreSQL server."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")

        def pg(name: str) -> str:
            return server.create_database(f"s{next(_n)}_{re.sub(r'[^a-z0-9_]', '_', name)}")

        return pg
    return lambda name: "sqlite:///" + str(tmp_path / f"{name}.db")


@pytest.fixture
def stores(new_store_url: Callable[[str], str]) -> Iterator[Callable[[str, Sequence[str] | None], Store]]:
    """``stores(name, use_cases)``: a store holding the ledger's calls and outcomes of ``use_cases`` (None: all)."""
    opened: list[Store] = []
    calls, outcomes = ledger()

    def make(name: str, use_cases: Sequence[str] | None) -> Store:
        store = open_store(new_store_url(name))
        opened.append(store)
        keep = [c for c in calls if use_cases is None or c.use_case in use_cases]
        if keep:
            assert store.write(keep) == []
        kept = [o for o in outcomes if use_cases is None or o.use_case in use_cases]
        if kept:
            assert store.write_outcomes(kept) == []
        return store

    yield make
    for store in opened:
        store.close()


class _LedgerOnly:
    """The same store with its view queries told there are no rollups: they read the ledger."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def view_sql(self) -> object:
        return self._store.view_sql()._replace(rollups=False)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def readings(store: Any, filters: ReportFilter) -> Iterator[tuple[str, Any]]:
    """(what, result) of every read a report or the dashboard makes, for ``filters``."""
    yield "summary", views.summary(store, filters)
    for bucket in ("hour", "day"):
        for by in rollup_sql.SERIES_KEYS:
            yield f"series {bucket} {by}", views.cost_series(store, filters, bucket, by)  # type: ignore[arg-type]
    for by in (*GROUPINGS, "tag:tenant"):
        for limit in (1, 10):
            yield f"top {by} {limit}", views.top(store, filters, by, limit)
        yield f"report {by}", report_rows(store, by, filters)
    for order in ("newest", "cost"):
        for limit, offset in ((50, 0), (1, 1)):
            yield f"runs {order} {limit} {offset}", views.list_runs(store, filters, order, limit, offset)  # type: ignore[arg-type]
    for bins in (1, 4):
        yield f"histogram {bins}", views.run_histogram(store, filters, bins)
    for period in PERIODS:
        yield f"period {period}", period_rows(store, period, filters, "UTC")
    for by in OUTCOME_GROUPINGS:
        yield f"outcomes {by}", outcome_report(store, filters, "resolved", by)
    text = store.runs_json(filters)
    yield "runs_json", None if text is None else json.loads(text)


FILTERS = [
    ReportFilter(),
    ReportFilter(use_case=ALPHA),
    ReportFilter(use_case=BETA),  # crafted: a use case the reader may not see
    ReportFilter(user_id="alice"),  # a user of several use cases
    ReportFilter(user_id="carol-secret-user"),  # a user only beta has
    ReportFilter(experience_name="chat"),
    ReportFilter(use_case_version="v1"),
    ReportFilter(tags=(("tenant", "acme"),)),
    ReportFilter(tags=(("tenant", "secret-tenant"),)),
    ReportFilter(since_ns=T0 + HOUR),  # whole hours: the rollups answer
    ReportFilter(since_ns=T0 + 5, until_ns=T0 + DAY + 12),  # mid-hour: the ledger answers
    ReportFilter(user_id="alice", since_ns=T0, until_ns=T0 + 2 * DAY),
]

ALLOWED = [(ALPHA,), (ALPHA, GAMMA), (BETA,), (), ("no-such-use-case",), (GAMMA, GAMMA, ALPHA)]


def _leaks(found: Any) -> list[str]:
    shown = json.dumps(found, default=repr)
    return [s for s in SECRETS if s in shown]


def _compare(store: Store, union: Store, allowed: tuple[str, ...]) -> None:
    for filters in FILTERS:
        scoped = filters._replace(use_cases=allowed)
        for reader, oracle in ((store, union), (_LedgerOnly(store), _LedgerOnly(union))):
            expected = dict(readings(oracle, filters))
            got = dict(readings(reader, scoped))
            for what, value in expected.items():
                assert rounded(got[what]) == rounded(value), (what, filters, allowed)
            if BETA not in allowed:
                assert _leaks(got) == [], filters
        for by in GROUPINGS:  # the stores' report SQL without their rollups: the ledger's GROUP BY
            store._rollups = union._rollups = False  # type: ignore[attr-defined]
            try:
                assert rounded(report_rows(store, by, scoped)) == rounded(report_rows(union, by, filters)), by
            finally:
                store._rollups = union._rollups = True  # type: ignore[attr-defined]
    for run_id in ("a1", "a2", "shared-run", "b1-secret-run", "b2-secret-run", "g1", "none"):
        assert run_calls(store, run_id, allowed) == run_calls(union, run_id), run_id


@pytest.mark.parametrize("allowed", ALLOWED, ids=lambda a: "+".join(a) or "nothing")
def test_every_read_gives_for_an_allowed_set_what_its_use_cases_alone_give(
    stores: Callable[[str, Sequence[str] | None], Store], allowed: tuple[str, ...]
) -> None:
    store = stores("all", None)
    union = stores("allowed", allowed)
    _compare(store, union, allowed)
    # One of beta's runs gets a second user: the whole store has a mixed run (the per-run table no longer
    # answers there), the store of the allowed set only when beta is in it.
    store.write([MIXING])
    if BETA in allowed:
        union.write([MIXING])
    _compare(store, union, allowed)


def test_the_allowed_set_is_what_the_figures_add_up_to(
    stores: Callable[[str, Sequence[str] | None], Store],
) -> None:
    """Not only equal to the oracle: the figures are alpha's and gamma's, from published prices."""
    store = stores("all", None)
    scoped = ReportFilter(use_cases=(ALPHA, GAMMA))
    alpha = mini_cost(100, 50) + mini_cost(1000, 10) + mini_cost(10, 5) + mini_cost(300, 30)
    gamma = mini_cost(700, 70) + mini_cost(70, 7)
    s = views.summary(store, scoped)
    assert (s.calls, s.runs, s.unpriced_calls) == (6, 4, 0)
    assert s.cost_usd == pytest.approx(alpha + gamma)
    by_user = {r.key["user_id"]: r for r in report_rows(store, "user", scoped)}
    assert set(by_user) == {"alice", "bob", "dave"}
    assert by_user["alice"].cost_usd == pytest.approx(
        mini_cost(100, 50) + mini_cost(1000, 10) + mini_cost(300, 30)
    )
    (shared,) = [r for r in views.list_runs(store, scoped) if r.run_id == "shared-run"]
    assert (shared.use_case, shared.calls, shared.cost_usd) == (ALPHA, 1, pytest.approx(mini_cost(300, 30)))
    outcomes = outcome_report(store, scoped, "resolved")
    assert {r.key["use_case"]: r.outcomes for r in outcomes.rows} == {ALPHA: 1, GAMMA: 1}
    assert (outcomes.outside_outcomes, outcomes.outside_value) == (0, 0)
    nothing = views.summary(store, ReportFilter(use_cases=()))
    assert (nothing.calls, nothing.runs, nothing.cost_usd) == (0, 0, None)
