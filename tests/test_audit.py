"""The audit log on both stores (SQLite and a real PostgreSQL), its CLI, and the members' notifications
through a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from otel_usecase import audit
from otel_usecase.store import Store, open_store


@pytest.fixture
def store(sqlite_or_postgres: str) -> Iterator[Store]:
    opened = open_store(sqlite_or_postgres)
    try:
        yield opened
    finally:
        opened.close()


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
