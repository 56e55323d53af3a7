"""The audit log on both stores (SQLite and a real PostgreSQL), its CLI, and the members' notifications
through a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator

import pytest

from otel_usecase import audit
from otel_usecase.store import Store, open_store

from .webhooks import SECRET, Receiver


def test_record_appends_rows_read_back_newest_first(store: Store) -> None:
    audit.record(
        store,
        actor="admin",
        action="usecase.create",
        use_case="support_bot",
        target="support_bot",
        detail={"description": "Answers tickets", "owner": "alice"},
    )
    audit.record(
        store,
        actor="alice",
        action="share",
        use_case="support_bot",
        target="bob",
        detail={"role": "CONSUMER"},
    )
    audit.record(store, actor="admin", action="token.create", use_case=None, target="carol", detail={})
    events = audit.audit_log(store)
    assert [(e.actor, e.action, e.use_case, e.target) for e in events] == [
        ("admin", "token.create", None, "carol"),
        ("alice", "share", "support_bot", "bob"),
        ("admin", "usecase.create", "support_bot", "support_bot"),
    ]
    assert events[0].id > events[1].id > events[2].id
    assert events[2].detail == {"description": "Answers tickets", "owner": "alice"}
    assert events[0].at_ns >= events[1].at_ns >= events[2].at_ns
    only = audit.audit_log(store, use_case="support_bot", limit=1)
    assert [(e.action, e.target) for e in only] == [("share", "bob")]
    assert audit.audit_log(store, since_ns=events[0].at_ns + 1) == []


def test_concurrent_writers_each_get_their_own_id(store: Store, sqlite_or_postgres: str) -> None:
    """Writers in threads, each with its own store connection: no row lost, ids distinct."""
    errors: list[BaseException] = []

    def write(n: int) -> None:
        own = open_store(sqlite_or_postgres)
        try:
            for i in range(10):
                audit.record(
                    own,
                    actor="admin",
                    action="budget.set",
                    use_case="uc",
                    target=f"b{n}-{i}",
                    detail={"i": i},
                )
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    events = audit.audit_log(store)
    assert len(events) == 40
    assert len({e.id for e in events}) == 40
    assert {e.target for e in events} == {f"b{n}-{i}" for n in range(4) for i in range(10)}


def test_names_are_checked_and_ids_kept(store: Store) -> None:
    with pytest.raises(ValueError, match=r"actor='al ice' is not a valid name"):
        audit.record(store, actor="al ice", action="share", use_case="uc", target="bob", detail={})
    with pytest.raises(ValueError, match=r"use_case='bad/name' is not a valid name"):
        audit.record(store, actor="admin", action="share", use_case="bad/name", target="bob", detail={})
    with pytest.raises(TypeError, match="detail must be a mapping"):
        audit.record(store, actor="admin", action="share", use_case="uc", target="bob", detail=[1])  # type: ignore[arg-type]
    # A target is data: any text is kept (a lone surrogate made storable).
    audit.record(store, actor="admin", action="forget", use_case=None, target="run \ud800 1", detail={"n": 1})
    (event,) = audit.audit_log(store)
    assert event.target == "run \\ud800 1"
    assert json.dumps(event.detail) == '{"n": 1}'


def test_a_store_without_the_table_reads_as_no_events(tmp_path: object) -> None:
    """A reader of a store that predates the audit log (table dropped here) reads none, creates none."""
    import sqlite3
    from pathlib import Path

    path = Path(str(tmp_path)) / "old.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE otel_usecase_audit")
    reader = open_store(f"sqlite:///{path}", create=False)
    try:
        assert audit.audit_log(reader) == []
        tables = {r[0] for r in reader.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "otel_usecase_audit" not in tables
        audit.record(reader, actor="admin", action="prune", use_case=None, target="400d", detail={})
        assert [e.action for e in audit.audit_log(reader)] == ["prune"]
    finally:
        reader.close()


def test_budget_changes_are_recorded_without_their_webhook(store: Store) -> None:
    from otel_usecase.budgets import Budget, delete_budget, set_budget

    hook = "https://hooks.example.com/services/T0/B0/secret-path-token"
    set_budget(Budget(name="bot-daily", use_case="support_bot", amount_usd=5.0, webhook=hook), store=store)
    assert delete_budget("bot-daily", store=store)
    assert not delete_budget("bot-daily", store=store)  # nothing deleted: nothing recorded
    deleted, made = audit.audit_log(store)
    assert (made.actor, made.action, made.use_case, made.target) == (
        "admin",
        "budget.set",
        "support_bot",
        "bot-daily",
    )
    assert made.detail["amount_usd"] == 5.0 and made.detail["webhook"] is True
    assert (deleted.action, deleted.use_case, deleted.target) == ("budget.delete", "support_bot", "bot-daily")
    rows = store.query("SELECT detail FROM otel_usecase_audit")
    assert rows and all(
        "secret-path-token" not in str(r[0]) and "hooks.example.com" not in str(r[0]) for r in rows
    )


def test_the_budgets_cli_is_audited(sqlite_or_postgres: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "otel-usecase"), "budgets", "set", "daily", "--use-case", "summarize", "--amount", "2",
         "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = subprocess.run(
        [str(bin_dir / "otel-usecase"), "audit", "--format", "json", "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert log.returncode == 0, log.stderr
    (event,) = json.loads(log.stdout)
    assert (event["actor"], event["action"], event["use_case"], event["target"]) == (
        "admin",
        "budget.set",
        "summarize",
        "daily",
    )


# --- notifications: members with `notify` get each event on their use case through the alert webhook ----


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 set as OTEL_USECASE_ALERT_WEBHOOK, with the alert secret."""
    with Receiver() as got:
        monkeypatch.setenv("OTEL_USECASE_ALERT_WEBHOOK", got.url)
        monkeypatch.setenv("OTEL_USECASE_ALERT_SECRET", SECRET)
        yield got


def shared(store: Store) -> None:
    """support_bot shared with alice (owner, notified), bob (consumer, notified) and carol (not notified)."""
    from otel_usecase.access import Role, RoleAssignment, create_token, share

    for name in ("alice", "bob", "carol"):
        create_token(store, name)
    share(
        store,
        "support_bot",
        [
            RoleAssignment("alice", Role.OWNER, notify=True),
            RoleAssignment("bob", Role.CONSUMER, notify=True),
            RoleAssignment("carol", Role.EDITOR),
        ],
    )


def test_members_who_asked_are_notified_of_each_event_signed_like_an_alert(
    store: Store, receiver: Receiver
) -> None:
    from otel_usecase import usecases

    shared(store)
    before = len(receiver.deliveries())  # the shares themselves are events on the use case too
    assert before >= 1
    usecases.create(store, "support_bot", "Answers tickets", owner="alice")
    (got,) = receiver.deliveries()[before:]
    assert got.verified  # the receiver's own HMAC check of the raw body, with the shared secret
    body = json.loads(got.body)
    event = audit.audit_log(store, limit=1)[0]
    assert body == {
        "kind": "usecase.event",
        "id": event.id,
        "event": "usecase.create",
        "use_case": "support_bot",
        "actor": "admin",
        "target": "support_bot",
        "detail": {"description": "Answers tickets", "owner": "alice"},
        "time": body["time"],
        "notified": ["alice", "bob"],
    }
    assert body["time"].endswith("+00:00")
    # Events on another use case, or on none, reach no one here.
    audit.record(store, actor="admin", action="token.create", use_case=None, target="dave", detail={})
    usecases.create(store, "triage")
    assert len(receiver.deliveries()) == before + 1


def test_the_cli_notifies_and_a_failing_webhook_only_warns(
    store: Store, sqlite_or_postgres: str, receiver: Receiver
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    shared(store)
    before = len(receiver.deliveries())
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "otel-usecase"), "usecases", "create", "support_bot", "--description", "Tickets",
         "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (got,) = receiver.deliveries()[before:]
    assert got.verified and json.loads(got.body)["event"] == "usecase.create"

    receiver.answers = [500]  # the next POST is refused: the change is made and recorded all the same
    failed = subprocess.run(
        [str(bin_dir / "otel-usecase"), "usecases", "update", "support_bot", "--owner", "alice",
         "--store", sqlite_or_postgres],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert failed.returncode == 0, failed.stderr
    port = receiver.server.server_address[1]
    assert f"to http://127.0.0.1:{port}/… failed: HTTP 500" in failed.stderr
    assert "/hooks/budget" not in failed.stderr  # the URL's path (often its secret) is never shown
    assert audit.audit_log(store, limit=1)[0].action == "usecase.update"


def test_nothing_is_sent_without_a_webhook_and_that_is_said(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_usecase.usecases import notify

    monkeypatch.delenv("OTEL_USECASE_ALERT_WEBHOOK", raising=False)
    shared(store)
    event = audit.append(
        store, actor="admin", action="usecase.update", use_case="support_bot", target="x", detail={}
    )
    with caplog.at_level("WARNING", logger="otel_usecase"):
        outcome = notify.notify_members(store, event)
    assert outcome == notify.Notified(
        ("alice", "bob"), False, "not sent: OTEL_USECASE_ALERT_WEBHOOK is not set"
    )
    assert "2 member(s) of use case 'support_bot' asked to be notified" in caplog.text


def test_a_webhook_that_never_answers_holds_the_change_at_most_twice_the_timeout(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from otel_usecase.usecases import notify

    shared(store)
    receiver.answers = ["hang"]
    event = audit.append(
        store, actor="admin", action="usecase.update", use_case="support_bot", target="x", detail={}
    )
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="otel_usecase"):
        outcome = notify.notify_members(store, event, timeout_s=1.0)
    assert time.monotonic() - started < 30  # cut at 2 x 1 s by the watchdog; generous for a loaded machine
    assert receiver.hanging.is_set()
    assert outcome.members == ("alice", "bob") and not outcome.delivered
    assert re.search(r"to http://127\.0\.0\.1:\d+/… failed: (timed out|no answer within 2 s)", caplog.text)
