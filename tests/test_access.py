"""Principals, tokens and roles (issue 16, part A): security tests on real SQLite and PostgreSQL stores.

The token tests are what an attacker would try: a token's neighbours (same length, one character off, a
prefix, an extension, its stored hash) are refused; a revoked token is refused on the very next request,
even by a store object opened before the revocation in another process; the token is printed once by the
real console script and appears in no listing, log line or table cell. The role tests are who may share
what: a consumer or an editor without ``can_share`` cannot share; a non-owner grants up to its own role
(an editor never OWNER); a refused bulk share changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from otel_usecase import access, audit
from otel_usecase.access import (
    Member,
    Principal,
    Role,
    RoleAssignment,
    authenticate,
    create_token,
    list_principals,
    members,
    revoke_token,
    role_of,
    share,
    visible_use_cases,
)
from otel_usecase.scope.validation import NAME_RULE
from otel_usecase.store import SCHEMA_VERSION, Store, open_store
from otel_usecase.store.access_sql import MEMBERS_TABLE, PRINCIPALS_TABLE
from otel_usecase.store.base import META_TABLE, Transaction

from .builders import a_call

CLI = str(Path(sys.executable).parent / "otel-usecase")


def otel_usecase(*args: str) -> subprocess.CompletedProcess[str]:
    """The real console script in a process of its own (the administrator)."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def rows_of(store: Store, table: str) -> list[tuple[Any, ...]]:
    return store.transact("test read", lambda tx: tx.execute(f"SELECT * FROM {table}"), write=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- tokens ---------------------------------------------------------------------------------------


def test_a_token_is_printed_once_on_stdout_and_only_its_sha256_is_stored(sqlite_or_postgres: str) -> None:
    created = otel_usecase("tokens", "create", "--name", "alice", "--store", sqlite_or_postgres)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n"  # nothing else on stdout: it can go straight into a file
    assert token.startswith("ouc_") and len(token) >= 40
    assert token not in created.stderr and "shown once" in created.stderr
    second = otel_usecase("tokens", "create", "--name", "bob", "--store", sqlite_or_postgres).stdout.strip()
    assert second != token

    store = open_store(sqlite_or_postgres)
    try:
        stored = {row[0]: row for row in rows_of(store, PRINCIPALS_TABLE)}
        assert stored["alice"][1] == sha256_hex(token) and stored["bob"][1] == sha256_hex(second)
        every_cell = [str(cell) for row in stored.values() for cell in row]
        assert not any(token in cell or second in cell for cell in every_cell)
        assert authenticate(store, token) == Principal("alice")
        assert authenticate(store, second) == Principal("bob")
    finally:
        store.close()

    for listing in (
        otel_usecase("tokens", "list", "--store", sqlite_or_postgres),
        otel_usecase("tokens", "list", "--format", "json", "--store", sqlite_or_postgres),
    ):
        assert listing.returncode == 0, listing.stderr
        shown = listing.stdout + listing.stderr
        assert "alice" in shown and "bob" in shown
        for secret in (token, second, sha256_hex(token), sha256_hex(second), sha256_hex(token)[:16]):
            assert secret not in shown
    records = json.loads(
        otel_usecase("tokens", "list", "--format", "json", "--store", sqlite_or_postgres).stdout
    )
    assert [(r["name"], r["active"], r["revoked"]) for r in records] == [
        ("alice", True, None),
        ("bob", True, None),
    ]
    assert set(records[0]) == {"name", "active", "created", "revoked"}


def test_a_wrong_token_of_the_same_length_a_prefix_an_extension_or_the_stored_hash_is_refused(
    store: Store,
) -> None:
    token = create_token(store, "alice")
    create_token(store, "bob")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    refused: list[Any] = [
        flipped,  # same length, last character wrong
        "X" + token[1:],  # same length, first character wrong
        token[:-1],  # a prefix
        token[: len(token) // 2],
        "ouc_",
        token + "x",  # an extension
        token + "\x00",
        " " + token,
        token.upper(),
        sha256_hex(token),  # what the table holds is not a credential
        "",
        "x" * 10_000,
        None,
        b"" + token.encode(),
        42,
    ]
    for wrong in refused:
        assert authenticate(store, wrong) is None, repr(wrong)[:60]
    assert authenticate(store, token) == Principal("alice")


def test_every_active_principals_hash_is_compared_with_hmac_compare_digest_without_an_early_exit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the token matches the first principal, the last or none, the same comparisons run."""
    tokens = {name: create_token(store, name) for name in ("p1", "p2", "p3", "p4")}
    revoke_token(store, "p4")
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for presented, expected in (
        (tokens["p1"], Principal("p1")),
        (tokens["p3"], Principal("p3")),
        (tokens["p1"][:-1] + "?", None),
        (tokens["p4"], None),  # revoked
    ):
        compared.clear()
        assert authenticate(store, presented) == expected
        assert sorted(a for a, _ in compared) == sorted(sha256_hex(tokens[p]) for p in ("p1", "p2", "p3"))
        assert {b for _, b in compared} == {sha256_hex(presented)}


def test_a_revoked_token_is_refused_on_the_next_request_by_a_store_opened_before(
    sqlite_or_postgres: str,
) -> None:
    open_store(sqlite_or_postgres).close()  # an exporter created the store
    dashboard = open_store(sqlite_or_postgres, create=False)  # as a long-running dashboard holds it
    try:
        token = otel_usecase(
            "tokens", "create", "--name", "alice", "--store", sqlite_or_postgres
        ).stdout.strip()
        shared = otel_usecase(
            "usecases",
            "share",
            "support",
            "--principal",
            "alice",
            "--role",
            "CONSUMER",
            "--store",
            sqlite_or_postgres,
        )
        assert shared.returncode == 0, shared.stderr
        assert authenticate(dashboard, token) == Principal("alice")
        revoked = otel_usecase("tokens", "revoke", "--name", "alice", "--store", sqlite_or_postgres)
        assert revoked.returncode == 0, revoked.stderr
        assert authenticate(dashboard, token) is None  # at once: no cache
        again = otel_usecase("tokens", "revoke", "--name", "alice", "--store", sqlite_or_postgres)
        assert again.returncode == 1 and "no active token" in again.stderr
        [info] = list_principals(dashboard)
        assert info.name == "alice" and not info.active and info.revoked_ns is not None
        # The principal keeps its roles; a new token works, the old one stays refused.
        assert visible_use_cases(dashboard, "alice") == frozenset({"support"})
        fresh = otel_usecase("tokens", "create", "--name", "alice", "--store", sqlite_or_postgres)
        assert "previous token no longer works" in fresh.stderr
        assert authenticate(dashboard, fresh.stdout.strip()) == Principal("alice")
        assert authenticate(dashboard, token) is None
        # Issuing a new token to an active principal replaces its token at once too.
        newest = create_token(dashboard, "alice")
        assert authenticate(dashboard, fresh.stdout.strip()) is None
        assert authenticate(dashboard, newest) == Principal("alice")
    finally:
        dashboard.close()


def test_tokens_never_appear_in_logs(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = create_token(store, "alice")
    authenticate(store, token)
    authenticate(store, token[:-1])
    share(store, "support", [RoleAssignment("alice", Role.OWNER)])
    revoke_token(store, "alice")
    authenticate(store, token)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert token not in logged and token[4:20] not in logged and sha256_hex(token) not in logged


def test_principal_names_follow_the_name_rule_and_admin_is_reserved(
    store: Store, sqlite_or_postgres: str
) -> None:
    for bad in ("al ice", "", "a" * 65, "alice/../x", "ali\u202ece"):
        with pytest.raises(ValueError, match="principal=.* is not a valid name") as raised:
            create_token(store, bad)
        assert NAME_RULE in str(raised.value)
    for reserved in ("admin", "Admin", "ADMIN"):
        with pytest.raises(ValueError, match=f"principal='{reserved}' is reserved"):
            create_token(store, reserved)
    assert list_principals(store) == []
    done = otel_usecase("tokens", "create", "--name", "al ice", "--store", sqlite_or_postgres)
    assert (
        done.returncode == 2 and "principal='al ice' is not a valid name" in done.stderr and not done.stdout
    )


# --- roles ----------------------------------------------------------------------------------------


@pytest.fixture
def people(store: Store) -> dict[str, str]:
    """Principals with tokens: the owner, an editor, a consumer and two more."""
    return {name: create_token(store, name) for name in ("olivia", "eddie", "connie", "sam", "tess")}


def roles_of(store: Store, use_case: str) -> dict[str, tuple[Role, bool, bool]]:
    return {m.principal: (m.role, m.can_share, m.notify) for m in members(store, use_case)}


def test_share_gives_roles_members_lists_them_and_a_principal_sees_only_its_use_cases(
    store: Store, people: dict[str, str]
) -> None:
    after = share(
        store,
        "support",
        [
            RoleAssignment("olivia", Role.OWNER),
            RoleAssignment("eddie", Role.EDITOR, can_share=True),
            RoleAssignment("connie", Role.CONSUMER, notify=True),
        ],
    )
    assert [(m.use_case, m.principal, m.role, m.can_share, m.notify) for m in after] == [
        ("support", "connie", Role.CONSUMER, False, True),
        ("support", "eddie", Role.EDITOR, True, False),
        ("support", "olivia", Role.OWNER, False, False),
    ]
    assert after == members(store, "support") and all(isinstance(m, Member) for m in after)
    share(store, "billing", [RoleAssignment("olivia", "consumer")])  # type: ignore[arg-type]  # a name works
    assert visible_use_cases(store, "olivia") == frozenset({"support", "billing"})
    assert visible_use_cases(store, "connie") == frozenset({"support"})
    assert visible_use_cases(store, "sam") == frozenset()
    assert role_of(store, "eddie", "support") is Role.EDITOR
    assert role_of(store, "eddie", "billing") is Role.NO_ROLE
    assert role_of(store, "nobody", "support") is Role.NO_ROLE
    # NO_ROLE removes; a principal authenticated by its token sees what it was given.
    share(store, "support", [RoleAssignment("connie", Role.NO_ROLE)])
    assert "connie" not in roles_of(store, "support")
    assert visible_use_cases(store, "connie") == frozenset()
    principal = authenticate(store, people["olivia"])
    assert principal is not None and visible_use_cases(store, principal.name) == {"support", "billing"}
    assert members(store, "nothing_here") == []
    # Reads take use case names seen in calls (data: `serve` stores any text) and never raise on them.
    assert members(store, "sup port; DROP TABLE x") == [] and role_of(store, "olivia", "a b") is Role.NO_ROLE
    assert visible_use_cases(store, "not a name") == frozenset()
    # The bulk form also takes mappings (a roles list read from JSON).
    share(store, "billing", [{"principal": "sam", "role": "EDITOR", "notify": True}])  # type: ignore[list-item]
    assert roles_of(store, "billing")["sam"] == (Role.EDITOR, False, True)


def test_a_consumer_or_an_editor_without_can_share_cannot_share(store: Store, people: dict[str, str]) -> None:
    share(store, "support", [RoleAssignment("eddie", Role.EDITOR), RoleAssignment("connie", Role.CONSUMER)])
    before = roles_of(store, "support")
    for actor in ("connie", "eddie", "sam"):
        with pytest.raises(
            PermissionError, match=f"principal '{actor}' may not share use case 'support': only an OWNER"
        ):
            share(store, "support", [RoleAssignment("tess", Role.CONSUMER)], actor=actor)
    assert roles_of(store, "support") == before


def test_an_editor_with_can_share_grants_up_to_editor_never_owner_and_cannot_change_an_owner(
    store: Store, people: dict[str, str]
) -> None:
    share(
        store, "support", [RoleAssignment("olivia", Role.OWNER), RoleAssignment("eddie", Role.EDITOR, True)]
    )
    share(
        store,
        "support",
        [RoleAssignment("sam", Role.EDITOR), RoleAssignment("tess", Role.CONSUMER)],
        actor="eddie",
    )
    assert roles_of(store, "support")["sam"] == (Role.EDITOR, False, False)
    with pytest.raises(PermissionError, match="may not grant OWNER on use case 'support'"):
        share(store, "support", [RoleAssignment("connie", Role.OWNER)], actor="eddie")
    with pytest.raises(PermissionError, match="may not grant OWNER"):
        share(store, "support", [RoleAssignment("eddie", Role.OWNER)], actor="eddie")  # nor to itself
    for demotion in (Role.CONSUMER, Role.NO_ROLE):
        with pytest.raises(PermissionError, match=r"may not change the role of 'olivia'.*\(OWNER\) is above"):
            share(store, "support", [RoleAssignment("olivia", demotion)], actor="eddie")
    assert roles_of(store, "support")["olivia"] == (Role.OWNER, False, False)
    assert "connie" not in roles_of(store, "support")
    # Can share on this use case only.
    with pytest.raises(PermissionError, match="may not share use case 'billing'"):
        share(store, "billing", [RoleAssignment("tess", Role.CONSUMER)], actor="eddie")


def test_a_consumer_with_can_share_grants_consumer_only(store: Store, people: dict[str, str]) -> None:
    share(
        store,
        "support",
        [RoleAssignment("connie", Role.CONSUMER, can_share=True), RoleAssignment("eddie", Role.EDITOR)],
    )
    share(store, "support", [RoleAssignment("tess", Role.CONSUMER)], actor="connie")
    with pytest.raises(PermissionError, match="may not grant EDITOR"):
        share(store, "support", [RoleAssignment("sam", Role.EDITOR)], actor="connie")
    with pytest.raises(PermissionError, match="may not change the role of 'eddie'"):
        share(store, "support", [RoleAssignment("eddie", Role.NO_ROLE)], actor="connie")
    assert set(roles_of(store, "support")) == {"connie", "eddie", "tess"}


def test_an_owner_grants_owner_but_cannot_leave_the_use_case_without_one(
    store: Store, people: dict[str, str]
) -> None:
    share(store, "support", [RoleAssignment("olivia", Role.OWNER)])
    share(
        store,
        "support",
        [RoleAssignment("sam", Role.OWNER), RoleAssignment("tess", Role.EDITOR)],
        actor="olivia",
    )
    share(store, "support", [RoleAssignment("sam", Role.NO_ROLE)], actor="olivia")
    with pytest.raises(PermissionError, match="may not leave use case 'support' without an OWNER"):
        share(store, "support", [RoleAssignment("olivia", Role.EDITOR)], actor="olivia")
    assert roles_of(store, "support")["olivia"][0] is Role.OWNER
    share(store, "support", [RoleAssignment("olivia", Role.NO_ROLE)])  # the administrator may
    assert set(roles_of(store, "support")) == {"tess"}


def test_a_bulk_share_with_one_refused_assignment_changes_nothing(
    store: Store, people: dict[str, str]
) -> None:
    share(store, "support", [RoleAssignment("eddie", Role.EDITOR, can_share=True)])
    before = roles_of(store, "support")
    with pytest.raises(PermissionError):
        share(
            store,
            "support",
            [
                RoleAssignment("connie", Role.CONSUMER),
                RoleAssignment("sam", Role.EDITOR),
                RoleAssignment("tess", Role.OWNER),
            ],
            actor="eddie",
        )
    with pytest.raises(ValueError, match="no principal 'ghost'"):
        share(
            store,
            "support",
            [RoleAssignment("connie", Role.CONSUMER), RoleAssignment("ghost", Role.CONSUMER)],
        )
    assert roles_of(store, "support") == before


def _remove_each_other(url: str, use_case: str) -> list[str]:
    """olivia removes oscar while oscar removes olivia, each through a store (connection) of its own."""
    stores = [open_store(url, create=False) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[str] = []

    def remove(store: Store, actor: str, other: str) -> None:
        barrier.wait(timeout=60)
        try:
            share(store, use_case, [RoleAssignment(other, Role.NO_ROLE)], actor=actor)
            results.append(f"{actor} removed")
        except PermissionError:
            results.append(f"{actor} refused")

    threads = [
        threading.Thread(target=remove, args=(stores[0], "olivia", "oscar")),
        threading.Thread(target=remove, args=(stores[1], "oscar", "olivia")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.close()
    return results


def test_two_owners_removing_each_other_at_once_leave_one_owner(sqlite_or_postgres: str) -> None:
    """The permission and last-owner checks run in the share's own transaction: concurrent shares on two
    connections are serialised, so both cannot pass their checks on the same old state."""
    admin = open_store(sqlite_or_postgres)
    try:
        for name in ("olivia", "oscar"):
            create_token(admin, name)
        for round_ in range(5):
            use_case = f"uc{round_}"
            share(
                admin, use_case, [RoleAssignment("olivia", Role.OWNER), RoleAssignment("oscar", Role.OWNER)]
            )
            results = _remove_each_other(sqlite_or_postgres, use_case)
            owners = [m.principal for m in members(admin, use_case) if m.role is Role.OWNER]
            assert len(owners) == 1, (results, owners)
            assert sorted(r.split()[1] for r in results) == ["refused", "removed"], results
    finally:
        admin.close()


def test_share_refuses_bad_names_roles_flags_duplicates_and_unknown_principals(
    store: Store, people: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"use_case='sup port' is not a valid name"):
        share(store, "sup port", [RoleAssignment("connie", Role.CONSUMER)])
    with pytest.raises(ValueError, match=r"principal='con nie' is not a valid name"):
        share(store, "support", [RoleAssignment("con nie", Role.CONSUMER)])
    with pytest.raises(
        ValueError, match=r"role='BOSS' is not a role: use one of OWNER, EDITOR, CONSUMER, NO_ROLE"
    ):
        share(store, "support", [RoleAssignment("connie", "BOSS")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"can_share='yes' for principal 'connie' is not True or False"):
        share(store, "support", [RoleAssignment("connie", Role.CONSUMER, "yes")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"principal 'connie' is given more than one role"):
        share(
            store, "support", [RoleAssignment("connie", Role.CONSUMER), RoleAssignment("connie", Role.EDITOR)]
        )
    with pytest.raises(ValueError, match=r"no principal 'ghost' in the store: create it first"):
        share(store, "support", [RoleAssignment("ghost", Role.CONSUMER)])
    with pytest.raises(ValueError, match=r"principal='admin' is reserved"):
        share(store, "support", [RoleAssignment("admin", Role.OWNER)])
    share(store, "support", [RoleAssignment("ghost", Role.NO_ROLE)])  # removing no one is no error
    assert members(store, "support") == []


def test_every_token_change_share_and_revoke_is_audited_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(audit, "record", lambda store, **event: recorded.append(event))
    create_token(store, "olivia")
    create_token(store, "connie")
    share(store, "support", [RoleAssignment("olivia", Role.OWNER)])
    share(store, "support", [RoleAssignment("connie", Role.CONSUMER, notify=True)], actor="olivia")
    share(
        store, "support", [RoleAssignment("connie", Role.CONSUMER, notify=True)], actor="olivia"
    )  # no change
    share(store, "support", [RoleAssignment("connie", Role.NO_ROLE)], actor="olivia")
    share(store, "support", [RoleAssignment("connie", Role.NO_ROLE)])  # no change
    revoke_token(store, "connie")
    revoke_token(store, "connie")  # nothing to revoke
    assert [(e["actor"], e["action"], e["use_case"], e["target"]) for e in recorded] == [
        ("admin", "token.create", None, "olivia"),
        ("admin", "token.create", None, "connie"),
        ("admin", "share", "support", "olivia"),
        ("olivia", "share", "support", "connie"),
        ("olivia", "revoke", "support", "connie"),
        ("admin", "token.revoke", None, "connie"),
    ]
    assert recorded[3]["detail"] == {
        "role": "CONSUMER",
        "can_share": False,
        "notify": True,
        "previous_role": "NO_ROLE",
    }
    assert recorded[4]["detail"]["previous_role"] == "CONSUMER" and recorded[4]["detail"]["role"] == "NO_ROLE"
    assert all("ouc_" not in json.dumps(e["detail"]) for e in recorded)


def test_the_cli_writes_token_changes_shares_and_revokes_to_the_audit_log_without_a_token(
    sqlite_or_postgres: str,
) -> None:
    url = sqlite_or_postgres
    token = otel_usecase("tokens", "create", "--name", "alice", "--store", url).stdout.strip()
    for role in ("EDITOR", "NO_ROLE"):
        done = otel_usecase(
            "usecases", "share", "support", "--principal", "alice", "--role", role, "--store", url
        )
        assert done.returncode == 0, done.stderr
    assert otel_usecase("tokens", "revoke", "--name", "alice", "--store", url).returncode == 0
    store = open_store(url, create=False)
    try:
        events = list(reversed(audit.audit_log(store)))  # oldest first
    finally:
        store.close()
    assert [(e.actor, e.action, e.use_case, e.target) for e in events] == [
        ("admin", "token.create", None, "alice"),
        ("admin", "share", "support", "alice"),
        ("admin", "revoke", "support", "alice"),
        ("admin", "token.revoke", None, "alice"),
    ]
    assert events[1].detail == {
        "role": "EDITOR",
        "can_share": False,
        "notify": False,
        "previous_role": "NO_ROLE",
    }
    assert not any(token in str(e) or sha256_hex(token) in str(e) for e in events)


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_share_one_principal_and_a_bulk_roles_file(sqlite_or_postgres: str, tmp_path: Path) -> None:
    url = sqlite_or_postgres
    for name in ("olivia", "eddie", "connie"):
        assert otel_usecase("tokens", "create", "--name", name, "--store", url).returncode == 0
    one = otel_usecase(
        "usecases", "share", "support", "--principal", "olivia", "--role", "owner", "--store", url
    )
    assert one.returncode == 0, one.stderr
    assert "olivia" in one.stdout and "OWNER" in one.stdout
    roles = tmp_path / "roles.json"
    roles.write_text(
        json.dumps(
            [
                {"principal": "eddie", "role": "EDITOR", "can_share": True},
                {"principal": "connie", "role": "CONSUMER", "notify": True},
                {"principal": "olivia", "role": "NO_ROLE"},
            ]
        )
    )
    bulk = otel_usecase("usecases", "share", "support", "--from-file", str(roles), "--store", url)
    assert bulk.returncode == 0, bulk.stderr
    store = open_store(url, create=False)
    try:
        assert roles_of(store, "support") == {
            "eddie": (Role.EDITOR, True, False),
            "connie": (Role.CONSUMER, False, True),
        }
    finally:
        store.close()
    for content, message in (
        ("{", "cannot be read as JSON"),
        ('{"principal": "eddie"}', "must hold a JSON list"),
        ('[{"principal": "eddie", "role": "BOSS"}]', "item 0: role='BOSS' is not a role"),
        ('[{"principal": "eddie", "role": "EDITOR", "admin": true}]', "item 0 has unknown key 'admin'"),
        ('[{"principal": "eddie", "role": "EDITOR"}, {"role": "EDITOR"}]', "item 1 has no 'principal'"),
        (
            '[{"principal": "eddie", "role": "EDITOR", "notify": "yes"}]',
            "item 0: notify must be true or false",
        ),
        ('[{"principal": "ghost", "role": "EDITOR"}]', "no principal 'ghost'"),
    ):
        roles.write_text(content)
        bad = otel_usecase("usecases", "share", "support", "--from-file", str(roles), "--store", url)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    missing_role = otel_usecase("usecases", "share", "support", "--principal", "eddie", "--store", url)
    assert missing_role.returncode == 2 and "--principal needs --role" in missing_role.stderr
    bad_role = otel_usecase(
        "usecases", "share", "support", "--principal", "eddie", "--role", "x", "--store", url
    )
    assert bad_role.returncode == 2 and "role='x' is not a role" in bad_role.stderr
    # share is a use case command only (roles are per use case, not per experience type)
    wrong_group = otel_usecase(
        "experience-types", "share", "chat", "--principal", "eddie", "--role", "EDITOR"
    )
    assert wrong_group.returncode == 2 and "invalid choice: 'share'" in wrong_group.stderr


def test_read_and_share_commands_never_create_a_store(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "nowhere.db")
    for args in (
        ("tokens", "list"),
        ("tokens", "revoke", "--name", "alice"),
        ("usecases", "share", "support", "--principal", "alice", "--role", "CONSUMER"),
    ):
        done = otel_usecase(*args, "--store", url)
        assert done.returncode == 1 and "does not exist" in done.stderr, (args, done.stderr)
    assert not (tmp_path / "nowhere.db").exists()


# --- stores written before the access tables ------------------------------------------------------


def _back_to_schema_6(store: Store) -> None:
    def downgrade(tx: Transaction) -> None:
        tx.execute(f"DROP TABLE {MEMBERS_TABLE}")
        tx.execute(f"DROP TABLE {PRINCIPALS_TABLE}")
        tx.execute(f"UPDATE {META_TABLE} SET value = '6' WHERE key = 'schema_version'")

    store.transact("downgrade", downgrade, write=True)


def test_a_store_of_schema_6_reads_as_no_principals_and_is_upgraded_by_a_writer(
    sqlite_or_postgres: str,
) -> None:
    assert SCHEMA_VERSION == 13
    writer = open_store(sqlite_or_postgres)
    writer.write([a_call(span_id="0" * 15 + "1", use_case="support", start_ns=10**18)])
    _back_to_schema_6(writer)
    writer.close()

    reader = open_store(sqlite_or_postgres, create=False)  # a reader never changes the schema
    try:
        assert list_principals(reader) == [] and authenticate(reader, "ouc_x") is None
        assert visible_use_cases(reader, "alice") == frozenset() and members(reader, "support") == []
        assert role_of(reader, "alice", "support") is Role.NO_ROLE and not revoke_token(reader, "alice")
        assert not reader.transact("t", lambda tx: tx.has_table(PRINCIPALS_TABLE), write=False)
    finally:
        reader.close()

    upgraded = open_store(sqlite_or_postgres)
    try:
        version = upgraded.transact(
            "t",
            lambda tx: tx.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'"),
            write=False,
        )
        assert version == [(str(SCHEMA_VERSION),)]
        token = create_token(upgraded, "alice")
        share(upgraded, "support", [RoleAssignment("alice", Role.CONSUMER)])
        assert authenticate(upgraded, token) == Principal("alice")
        assert visible_use_cases(upgraded, "alice") == frozenset({"support"})
        # The calls written before the upgrade and after it are all in the ledger and its rollups.
        upgraded.write([a_call(span_id="0" * 15 + "2", use_case="support", start_ns=10**18 + 1)])
        fold = getattr(upgraded, "fold", None)
        if fold is not None:
            fold()  # SQLite folds its rollups on a schedule; now, for the check
        assert upgraded.query("SELECT COUNT(*) FROM usecase_calls") == [(2,)]
        assert [tuple(map(int, r)) for r in upgraded.query("SELECT SUM(calls) FROM usecase_hour_rollup")] == [
            (2,)
        ]
        totals = "SELECT SUM(calls) FROM usecase_group_totals WHERE report_by = 'model'"
        assert [tuple(map(int, r)) for r in upgraded.query(totals)] == [(2,)]
    finally:
        upgraded.close()


def test_a_first_write_creates_the_access_tables_in_a_store_opened_for_reading(
    sqlite_or_postgres: str,
) -> None:
    writer = open_store(sqlite_or_postgres)
    _back_to_schema_6(writer)
    writer.close()
    reader = open_store(sqlite_or_postgres, create=False)
    try:
        token = create_token(reader, "alice")
        assert authenticate(reader, token) == Principal("alice")
        share(reader, "support", [RoleAssignment("alice", Role.EDITOR)])
        assert role_of(reader, "alice", "support") is Role.EDITOR
    finally:
        reader.close()


def test_the_public_names_are_exported() -> None:
    assert set(access.__all__) >= {
        "create_token",
        "list_principals",
        "revoke_token",
        "authenticate",
        "Role",
        "RoleAssignment",
        "share",
        "members",
        "visible_use_cases",
        "role_of",
    }
    assert [r.value for r in Role] == ["OWNER", "EDITOR", "CONSUMER", "NO_ROLE"]
    assert Role.OWNER.allows(Role.EDITOR) and not Role.EDITOR.allows(Role.OWNER)
