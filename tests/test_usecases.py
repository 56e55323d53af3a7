"""Use case and experience type definitions on both stores: calls made by a real openai client through the
real instrumentation against FakeOpenAI, exported into SQLite or a real PostgreSQL, then defined, listed,
shown and updated through the Python API and the ``otel-usecase`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from otel_usecase import audit, track_context, usecases
from otel_usecase.budgets import Budget, set_budget
from otel_usecase.store import Store, open_store
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost
from .rigs import CostRig

BIN = Path(sys.executable).parent

PROMPT, COMPLETION = 1_000, 100
ONE_CALL = mini_cost(PROMPT, COMPLETION)
"""gpt-4o-mini at $0.15/M input and $0.60/M output: $0.00021 a call."""


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])


@pytest.fixture
def calls(sqlite_or_postgres: str, fake_openai: FakeOpenAI, client: openai.OpenAI) -> Iterator[str]:
    """The store after 5 calls in 4 runs: support_bot (3 runs: users u-1, u-2; versions v1, v2; experience
    chat) and triage (1 run, experience email). Yields the store URL."""
    fake_openai.respond(usage=FakeUsage(prompt_tokens=PROMPT, completion_tokens=COMPLETION))
    rig = CostRig(sqlite_or_postgres)
    try:
        with track_context("support_bot", user_id="u-1", experience_name="chat", use_case_version="v1"):
            ask(client)
            ask(client)
        with track_context("support_bot", user_id="u-2", experience_name="chat", use_case_version="v2"):
            ask(client)
        with track_context("support_bot", user_id="u-1", experience_name="chat", use_case_version="v2"):
            ask(client)
        with track_context("triage", user_id="u-3", experience_name="email"):
            ask(client)
        rig.flush()
    finally:
        rig.close()
    yield sqlite_or_postgres


@pytest.fixture
def store(calls: str) -> Iterator[Store]:
    opened = open_store(calls)
    try:
        yield opened
    finally:
        opened.close()


def test_use_cases_seen_in_calls_are_listed_without_being_declared(store: Store) -> None:
    listed = usecases.list_use_cases(store)
    assert [(u.name, u.defined, u.description) for u in listed] == [
        ("support_bot", False, None),
        ("triage", False, None),
    ]
    assert usecases.get(store, "support_bot") == usecases.UseCaseInfo("support_bot")
    assert usecases.get(store, "never_seen") is None


def test_create_then_list_and_get_show_the_definition(store: Store) -> None:
    made = usecases.create(store, "support_bot", "Answers support tickets", owner="alice")
    assert (made.name, made.description, made.owner, made.defined) == (
        "support_bot",
        "Answers support tickets",
        "alice",
        True,
    )
    usecases.create(store, "forecasting", "Not called yet")  # defined before any call: listed too
    listed = {u.name: u for u in usecases.list_use_cases(store)}
    assert sorted(listed) == ["forecasting", "support_bot", "triage"]
    assert listed["support_bot"] == made
    assert listed["forecasting"].defined and not listed["triage"].defined
    assert usecases.get(store, "support_bot") == made
    with pytest.raises(ValueError, match="use case 'support_bot' is already defined: change it with update"):
        usecases.create(store, "support_bot", "again")


def test_show_gathers_runs_experiences_users_models_versions_and_budgets(store: Store) -> None:
    set_budget(Budget(name="bot-daily", use_case="support_bot", amount_usd=5.0), store=store)
    set_budget(Budget(name="triage-daily", use_case="triage", amount_usd=1.0), store=store)
    detail = usecases.show(store, "support_bot")
    assert not detail.info.defined
    assert (detail.runs, detail.calls) == (3, 4)
    assert detail.cost_usd == pytest.approx(4 * ONE_CALL)
    assert detail.cost_complete
    assert [(f.key, f.runs, f.calls) for f in detail.experiences.rows] == [
        ({"experience_name": "chat"}, 3, 4)
    ]
    users = {f.key["user_id"]: (f.runs, f.calls, f.cost_usd) for f in detail.users.rows}
    assert users == {
        "u-1": (2, 3, pytest.approx(3 * ONE_CALL)),
        "u-2": (1, 1, pytest.approx(ONE_CALL)),
    }
    assert [f.key for f in detail.models.rows] == [{"provider": "openai", "model": "gpt-4o-mini"}]
    versions = [(f.key["use_case_version"], f.calls) for f in detail.versions.rows]
    assert versions == [("v2", 2), ("v1", 2)] or versions == [("v1", 2), ("v2", 2)]
    assert [b.name for b in detail.budgets] == ["bot-daily"]
    assert detail.members == ()  # part A's members(): none shared yet
    # The most expensive first, and `more` says when the limit leaves values out.
    top = usecases.show(store, "support_bot", limit=1)
    assert [f.key["user_id"] for f in top.users.rows] == ["u-1"] and top.users.more
    with pytest.raises(LookupError, match="no use case 'nope'"):
        usecases.show(store, "nope")


def test_update_changes_only_what_is_given_and_records_each_change(store: Store) -> None:
    usecases.create(store, "support_bot", "Answers tickets", owner="alice")
    updated = usecases.update(store, "support_bot", owner="bob")
    assert (updated.description, updated.owner) == ("Answers tickets", "bob")
    assert updated.updated_ns is not None and updated.created_ns is not None
    assert updated.updated_ns >= updated.created_ns
    cleared = usecases.update(store, "support_bot", description="")
    assert (cleared.description, cleared.owner) == (None, "bob")
    same = usecases.update(store, "support_bot", owner="bob")  # no change: nothing recorded
    assert same == cleared
    # A use case only seen in calls gets its first definition from update.
    triage = usecases.update(store, "triage", description="Routes e-mail")
    assert triage.defined and triage.description == "Routes e-mail"
    with pytest.raises(LookupError, match="no use case 'nope' in the store"):
        usecases.update(store, "nope", description="x")
    events = [(e.action, e.target, e.detail) for e in audit.audit_log(store)]
    assert events == [
        ("usecase.update", "triage", {"description": {"from": None, "to": "Routes e-mail"}}),
        ("usecase.update", "support_bot", {"description": {"from": "Answers tickets", "to": None}}),
        ("usecase.update", "support_bot", {"owner": {"from": "alice", "to": "bob"}}),
        ("usecase.create", "support_bot", {"description": "Answers tickets", "owner": "alice"}),
    ]
    assert {e.actor for e in audit.audit_log(store)} == {"admin"}


def test_names_and_descriptions_follow_the_rules(store: Store) -> None:
    with pytest.raises(ValueError, match=r"use_case='support bot' is not a valid name"):
        usecases.create(store, "support bot")
    with pytest.raises(ValueError, match=r"owner='al/ice' is not a valid name"):
        usecases.create(store, "support_bot", owner="al/ice")
    with pytest.raises(ValueError, match=r"control character '\\x1b' at position 4"):
        usecases.create(store, "support_bot", "red \x1b[31m")
    with pytest.raises(ValueError, match="description is 2001 characters long: at most 2000"):
        usecases.create(store, "support_bot", "x" * 2001)
    with pytest.raises(ValueError, match=r"experience_type='a\.b/c' is not a valid name"):
        usecases.create_experience_type(store, "a.b/c")
    assert usecases.list_use_cases(store)[0].defined is False  # nothing was written
    assert audit.audit_log(store) == []


def test_experience_types_are_defined_listed_and_shown(store: Store) -> None:
    assert [(t.name, t.defined) for t in usecases.list_experience_types(store)] == [
        ("chat", False),
        ("email", False),
    ]
    made = usecases.create_experience_type(store, "chat", "A support chat conversation")
    assert made.defined and made.description == "A support chat conversation"
    usecases.update_experience_type(store, "email", description="One e-mail thread")
    listed = {t.name: t for t in usecases.list_experience_types(store)}
    assert listed["chat"] == made and listed["email"].description == "One e-mail thread"
    detail = usecases.show_experience_type(store, "chat")
    assert (detail.runs, detail.calls) == (3, 4)
    assert detail.cost_usd == pytest.approx(4 * ONE_CALL)
    assert [f.key for f in detail.use_cases.rows] == [{"use_case": "support_bot"}]
    actions = [(e.action, e.use_case, e.target) for e in audit.audit_log(store)]
    assert actions == [("experience_type.update", None, "email"), ("experience_type.create", None, "chat")]


def test_use_cases_are_listed_from_the_rollup_after_their_calls_are_pruned(store: Store, calls: str) -> None:
    """The seen use cases come from the hour rollup, which keeps them when per-call rows are deleted."""
    deleter = open_store(calls)
    try:
        deleter.transact("delete the ledger", lambda tx: tx.execute("DELETE FROM usecase_calls"), write=True)
    finally:
        deleter.close()
    assert store.query("SELECT COUNT(*) FROM usecase_calls") == [(0,)]
    assert [u.name for u in usecases.list_use_cases(store)] == ["support_bot", "triage"]


# --- the command line ------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "otel-usecase"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_create_list_show_update_and_audit(calls: str) -> None:
    made = cli("usecases", "create", "support_bot", "--description", "Answers tickets", "--owner", "alice",
               "--store", calls)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "use case 'support_bot' defined" in made.stdout
    again = cli("usecases", "create", "support_bot", "--store", calls)
    assert again.returncode == 2
    assert "use case 'support_bot' is already defined" in again.stderr
    bad = cli("usecases", "create", "bad name", "--store", calls)
    assert bad.returncode == 2 and "'bad name' is not a valid name" in bad.stderr

    listed = cli("usecases", "list", "--format", "json", "--store", calls)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [(r["name"], r["defined"], r["owner"]) for r in records] == [
        ("support_bot", True, "alice"),
        ("triage", False, None),
    ]
    table = cli("usecases", "list", "--store", calls)
    assert "seen in calls" in table.stdout and "Answers tickets" in table.stdout

    shown = cli("usecases", "show", "support_bot", "--format", "json", "--store", calls)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["runs"], record["calls"]) == (3, 4)
    assert record["cost_usd"] == pytest.approx(4 * ONE_CALL)
    assert sorted(r["key"]["user_id"] for r in record["users"]["rows"]) == ["u-1", "u-2"]
    assert record["members"] == [] and record["budgets"] == []
    text = cli("usecases", "show", "support_bot", "--store", calls).stdout
    assert f"runs: 3  calls: 4  cost: ${4 * ONE_CALL:.5f}" in text
    missing = cli("usecases", "show", "nope", "--store", calls)
    assert missing.returncode == 1 and "no use case 'nope'" in missing.stderr

    updated = cli("usecases", "update", "support_bot", "--owner", "bob", "--store", calls)
    assert updated.returncode == 0, updated.stderr
    nothing = cli("usecases", "update", "support_bot", "--store", calls)
    assert nothing.returncode == 2 and "give --description or --owner" in nothing.stderr

    types = cli("experience-types", "create", "chat", "--description", "Support chat", "--store", calls)
    assert types.returncode == 0, types.stderr
    chat = json.loads(cli("experience-types", "show", "chat", "--format", "json", "--store", calls).stdout)
    assert chat["experience_type"]["description"] == "Support chat" and chat["calls"] == 4

    log = cli("audit", "--use-case", "support_bot", "--format", "json", "--store", calls)
    assert log.returncode == 0, log.stderr
    assert [(e["actor"], e["action"]) for e in json.loads(log.stdout)] == [
        ("admin", "usecase.update"),
        ("admin", "usecase.create"),
    ]
    everything = cli("audit", "--limit", "1", "--store", calls)
    assert everything.returncode == 0 and "experience_type.create" in everything.stdout
    assert "usecase.update" not in everything.stdout


def test_cli_readers_never_create_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    for args in (("usecases", "list"), ("experience-types", "list"), ("audit",)):
        done = cli(*args, "--store", url)
        assert done.returncode == 1, (args, done.stderr)
        assert "does not exist" in done.stderr
    assert not (tmp_path / "missing.db").exists()
