"""``otel-usecase forget``: a user's, experience's or run's id replaced by a tombstone in every table, totals
unchanged, on SQLite and real PostgreSQL, also while another connection writes calls.

Costs are checked against published prices (gpt-4o-mini: $0.15/M input, $0.60/M output), never against
the code's own figures; "no trace of the id" is checked by reading every text column of every table.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest

from otel_usecase import forget_experience, forget_run, forget_user
from otel_usecase.audit import audit_log
from otel_usecase.budgets import set_budget
from otel_usecase.budgets.model import Budget
from otel_usecase.cli import main
from otel_usecase.outcomes import Outcome
from otel_usecase.report import views
from otel_usecase.report.queries import render_report
from otel_usecase.retention import prune
from otel_usecase.scope.privacy import hash_user_id, reset_user_id_hmac_key, set_user_id_hmac_key
from otel_usecase.scope.validation import experience_guid
from otel_usecase.store import ReportFilter, Store, open_store
from otel_usecase.store.base import TABLE
from otel_usecase.store.erasure_sql import ID_COLUMNS

from .expect import mini_cost
from .test_rollups import HOUR, T0, assert_rollups_match_ledger, call

TOMBSTONE = re.compile(r"forgotten:[0-9a-f]{32}")


def _tables(store: Store) -> list[str]:
    if store.url.startswith("sqlite"):
        return [r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [r[0] for r in store.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def texts_holding(store: Store, needle: str) -> list[tuple[str, str]]:
    """Every (table, cell text) in the whole store that contains ``needle``."""
    found = []
    for table in _tables(store):
        for row in store.query(f"SELECT * FROM {table}"):
            found += [(table, value) for value in row if isinstance(value, str) and needle in value]
    return found


_FIRST = iter(range(0, 10**9, 1_000))


def user_calls(n: int, user: str, run: str, **fields: Any) -> list[Any]:
    """``n`` calls of ``user`` in run ``run`` (1,000 prompt and 100 completion tokens each), an hour apart
    from ``T0`` on (so a run's calls span several rollup cells), with keys no other call of the test has."""
    base = next(_FIRST)
    return [
        call(
            base + i,
            usage=(1_000, 100),
            user_id=user,
            run_id=run,
            start_ns=T0 + i * HOUR + base,
            end_ns=T0 + i * HOUR + base + 10,
            **fields,
        )
        for i in range(n)
    ]


def rounded(value: Any) -> Any:
    """``value`` with every float to 12 significant digits: the rollups add a moved call's cost out of one
    cell and into another, so a sum may differ from before in its last bits (never more)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def dashboard(store: Store) -> Any:
    """What the dashboard and ``report`` show: the summary, totals per use case, the cost series by use case
    (floats to 12 significant digits)."""
    return rounded(
        (
            views.summary(store, ReportFilter()),
            json.loads(render_report(store, "use-case", "json")),
            views.cost_series(store, ReportFilter(), "hour", "use-case"),
        )
    )


def test_forget_user_replaces_every_copy_of_the_id_and_keeps_the_totals(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.write(  # a kept tag on one run: its copy in the per-run rows per tag value holds her id too
        user_calls(3, "alice@example.com", "run-a1", tags={"tenant": "acme"})
        + user_calls(2, "alice@example.com", "run-a2")
    )
    store.write(user_calls(4, "bob", "run-b"))
    store.write_outcomes([Outcome("f" * 32, "1" * 16, T0, None, "u", "run-a1", "resolved", 1.0)])
    set_budget(Budget("user-cap", "u", 5.0, user_id="alice@example.com"), store=store)  # audited: names her
    before = dashboard(store)
    assert before[0][2] == 9  # calls
    assert before[0][0] == pytest.approx(9 * mini_cost(1_000, 100))  # cost

    assert main(["forget", "--user", "alice@example.com", "--store", store.url, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)

    (tomb,) = out["tombstones"]
    assert TOMBSTONE.fullmatch(tomb) and out["totals_unchanged"] is True
    assert out["rows"][TABLE] == 5
    assert out["before"]["u"]["calls"] == out["after"]["u"]["calls"] == 9
    assert texts_holding(store, "alice") == []  # ledger, rollups, runs, budgets, audit log: no trace
    forget_event, budget_event = audit_log(store)[:2]
    assert (forget_event.action, forget_event.actor, forget_event.target) == ("forget", "admin", tomb)
    assert budget_event.action == "budget.set" and tomb in json.dumps(budget_event.detail)
    assert dashboard(store) == before
    rows = {r["user_id"]: r for r in json.loads(render_report(store, "user", "json"))}
    assert rows[tomb]["calls"] == 5 and rows[tomb]["runs"] == 2
    assert rows[tomb]["cost_usd"] == pytest.approx(5 * mini_cost(1_000, 100))
    assert rows["bob"]["cost_usd"] == pytest.approx(4 * mini_cost(1_000, 100))
    assert_rollups_match_ledger(store)
    # Each run has one user: none is left marked mixed, so the per-run table keeps answering.
    assert store.query("SELECT COUNT(*) FROM usecase_runs WHERE mixed <> 0") == [(0,)]
    # The budget now selects the tombstone: its past spend stays, the id is gone.
    (spec,) = [s for name, s, _ in store.load_budgets() if name == "user-cap"]
    assert json.loads(spec)["user_id"] == tomb

    # Forgetting it again finds nothing: the output says so, nothing changes.
    assert main(["forget", "--user", "alice@example.com", "--store", store.url]) == 0
    assert "no row held this user id" in capsys.readouterr().out
    assert dashboard(store) == before


def test_forget_user_takes_the_raw_id_when_hashing_is_on_and_the_stored_form(store: Store) -> None:
    key = "k" * 32
    set_user_id_hmac_key(key)
    try:
        hashed, other = hash_user_id("alice", key), hash_user_id("bob", key)
        store.write(user_calls(2, hashed, "r1") + user_calls(1, other, "r2"))
        result = forget_user(store, "alice")  # the raw id, hashed as scopes hash it
        assert len(result.tombstones) == 1 and result.rows[TABLE] == 2 and result.unchanged
        assert texts_holding(store, hashed) == []
        assert forget_user(store, str(other)).rows[TABLE] == 1  # the stored form
        assert texts_holding(store, other) == []
    finally:
        reset_user_id_hmac_key()
    assert_rollups_match_ledger(store)


def test_forget_run_and_experience(store: Store) -> None:
    session = "chat-session-42"  # not a GUID: stored as its UUIDv5
    store.write(user_calls(3, "carol", "run-x", experience_id=experience_guid(session)))
    store.write(user_calls(2, "dave", "run-y"))
    store.write_outcomes([Outcome("e" * 32, "2" * 16, T0, None, "u", "run-x", "resolved", 2.0)])
    before = dashboard(store)

    by_run = forget_run(store, "run-x")
    (run_tomb,) = by_run.tombstones
    assert by_run.rows[TABLE] == 3 and by_run.rows["otel_usecase_outcomes"] == 1 and by_run.unchanged
    assert texts_holding(store, "run-x") == []
    assert [o.name for o in store.run_outcomes(run_tomb)] == ["resolved"]
    assert [c.user_id for c in store.run_calls(run_tomb)] == ["carol"] * 3

    by_experience = forget_experience(store, session)
    assert by_experience.rows[TABLE] == 3 and by_experience.unchanged
    assert texts_holding(store, experience_guid(session)) == []
    assert dashboard(store) == before
    assert_rollups_match_ledger(store)
    assert store.query("SELECT COUNT(*) FROM usecase_runs WHERE mixed <> 0") == [(0,)]


def test_forget_after_prune_renames_the_cells_only_the_rollups_still_hold(store: Store) -> None:
    """Calls pruned by retention live on in the rollups only: forget finds the id there too, and a run cut in
    two by the window is one run again under its tombstone."""
    store.write(user_calls(6, "erin", "run-e", tags={"tenant": "acme"}))  # hours 0..5 of T0
    store.write(user_calls(2, "frank", "run-f"))
    before = dashboard(store)
    acme = ReportFilter(tags=(("tenant", "acme"),))
    models_before = rounded(views.top(store, acme, "model"))
    assert [(r.runs, r.calls) for r in models_before] == [(1, 6)]
    prune(store, T0 + 3 * HOUR + HOUR // 2)  # keeps erin's calls of hours 3, 4, 5 (the cutoff is hour 3)
    assert store.query(f"SELECT COUNT(*) FROM {TABLE} WHERE user_id = 'erin'") == [(3,)]

    by_user = forget_user(store, "erin")
    by_run = forget_run(store, "run-e")
    assert by_user.unchanged and by_run.unchanged
    assert texts_holding(store, "erin") == [] and texts_holding(store, "run-e") == []
    assert dashboard(store) == before
    (run_tomb,) = by_run.tombstones
    assert store.query(f"SELECT calls, user_id FROM usecase_runs WHERE run_id = '{run_tomb}'") == [
        (6, by_user.tombstones[0])
    ]
    assert store.query(f"SELECT COUNT(*) FROM usecase_run_rollup WHERE run_id = '{run_tomb}'") == [(6,)]
    assert store.query(f"SELECT calls, user_id FROM usecase_tag_runs WHERE run_id = '{run_tomb}'") == [
        (6, by_user.tombstones[0])
    ]
    assert rounded(views.top(store, acme, "model")) == models_before  # one run of 6 calls still, by its totals


def test_forget_while_another_process_writes_loses_and_doubles_nothing(sqlite_or_postgres: str) -> None:
    """A writer on its own connection keeps writing batches (gina's calls among others) while the forget
    runs: every call is stored once, the rollups equal the ledger, the total is the published-price sum."""
    admin = open_store(sqlite_or_postgres)
    writer = open_store(sqlite_or_postgres)
    written: list[Any] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        n = 0
        try:
            while not stop.is_set() or n < 40:
                batch = [
                    call(10_000 + n * 10 + i, usage=(500 + i, 50), user_id="gina" if i % 2 else f"user-{i}",
                         run_id=f"run-{n % 7}", start_ns=T0 + (n * 10 + i) * HOUR // 7)
                    for i in range(10)
                ]  # fmt: skip
                while True:
                    try:
                        writer.write(batch)
                        break
                    except (
                        Exception
                    ):  # locked for longer than the busy timeout: retried, as the exporter does
                        time.sleep(0.05)
                written.extend(batch)
                n += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while len(written) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        at_forget = len(written)
        result = forget_user(admin, "gina")
        assert result.rows[TABLE] >= at_forget // 2
        while len(written) < at_forget + 100 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(120)
    writer.close()
    assert not errors and not thread.is_alive()
    keys = admin.query(f"SELECT trace_id, span_id FROM {TABLE}")
    assert sorted(keys) == sorted((c.trace_id, c.span_id) for c in written)
    total = views.summary(admin, ReportFilter())
    assert total.calls == len(written)
    assert total.cost_usd == pytest.approx(sum(mini_cost(500 + int(c.span_id, 16) % 10, 50) for c in written))
    stored = dict(admin.query(f"SELECT user_id, COUNT(*) FROM {TABLE} GROUP BY user_id"))
    assert stored[result.tombstones[0]] >= at_forget // 2  # gina's calls written before the forget
    assert_rollups_match_ledger(admin)
    admin.close()


def test_forget_usage_errors_name_the_value(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///" + str(tmp_path / "missing.db")
    assert main(["forget", "--user", "", "--store", url]) == 2
    assert "user id '' is empty" in capsys.readouterr().err
    assert main(["forget", "--run", "r", "--store", url]) == 1  # no store there: never created empty
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(SystemExit) as exc:
        main(["forget", "--user", "a", "--run", "r", "--store", url])
    assert exc.value.code == 2


def test_every_table_with_an_id_column_is_in_the_one_list(store: Store) -> None:
    """A table added later that holds an id (a column named user_id, experience_id or run_id) must be a row
    of ``erasure_sql.ID_COLUMNS``, or forget would leave the id there."""
    listed = {(c.table, c.column) for c in ID_COLUMNS}
    for table in _tables(store):
        if table == "usecase_rollup_pending":  # SQLite's pending rows: folded inside the forget
            continue
        for name in [n for n in ("user_id", "experience_id", "run_id") if _has_column(store, table, n)]:
            assert (table, name) in listed, f"{table}.{name} holds ids: add it to erasure_sql.ID_COLUMNS"


def _has_column(store: Store, table: str, column: str) -> bool:
    try:
        store.query(f"SELECT {column} FROM {table} WHERE 1 = 0")
    except Exception:
        return False
    return True
