"""The scoped dashboard: a principal sees only the use cases shared with it, on every page and route.

Security tests against the real ``otel-usecase ui`` process, over SQLite and real PostgreSQL, with real
principals and tokens (:mod:`otel_usecase.access`). The oracle for "sees none of B's numbers or ids" is a
second dashboard over a store holding only A's calls, outcomes and budgets: for every page and every
``/api/`` route, with every filter (crafted ones too: ``use_case=B``, B's users, tags, experiences, run
and call ids, outcome names, ``by=`` groupings), the consumer of A gets byte for byte what that dashboard
gives, and no value only B has appears. Costs are those of published prices (gpt-4o-mini $0.15/M input,
$0.60/M output).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote_plus, urlencode

import pytest

from otel_usecase.access import Role, RoleAssignment, create_token, revoke_token, share
from otel_usecase.budgets.api import set_budget
from otel_usecase.cost.call import Call
from otel_usecase.store import open_store
from otel_usecase.store.outcome_sql import Outcome
from otel_usecase.ui.server import check_exposure

from .builders import a_call
from .expect import mini_cost
from .pg import PostgresServer
from .servers import ServeProcess, UIProcess, free_port

BIN = Path(sys.executable).parent
HOUR = 3_600_000_000_000
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC
A, B = "alpha", "beta_secret_uc"
ADMIN_TOKEN = "admin-token-for-the-dashboard-0123456789"
SECRETS = (
    "beta_secret_uc",
    "b1-secret-run",
    "b9-secret-run",
    "carol-secret-user",
    "secret-experience",
    "secret-tenant",
    "secret-step",
    "secret_outcome",
    "secret-budget",
    "secret-exp-version",
)
"""Every value only B has (its calls' span ids too: :data:`B_SPANS`)."""

_n = count(1)


def call(use_case: str, run: str, at: int, tokens: tuple[int, int], **fields: object) -> Call:
    n = next(_n)
    return a_call(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        start_ns=at,
        end_ns=at + 1_000_000,
        use_case=use_case,
        run_id=run,
        tokens={"input": tokens[0], "output": tokens[1]},
        cost_usd=mini_cost(*tokens),
        **fields,
    )


CALLS = (
    call(
        A,
        "a1",
        T0,
        (1000, 200),
        user_id="alice-user",
        experience_name="chat",
        experience_version="e2",
        use_case_version="v1",
        step="draft",
        tags={"tenant": "acme"},
    ),
    call(
        A,
        "a1",
        T0 + 5,
        (400, 20),
        user_id="alice-user",
        experience_name="chat",
        use_case_version="v1",
        step="review",
        tags={"tenant": "acme"},
    ),
    call(A, "shared-run", T0 + HOUR, (300, 30), user_id="shared-user", experience_name="chat"),
    call(
        B,
        "b1-secret-run",
        T0 + 30,
        (9000, 900),
        user_id="shared-user",
        experience_name="chat",
        experience_version="secret-exp-version",
        use_case_version="v1",
        step="secret-step",
        tags={"tenant": "secret-tenant"},
        model="gpt-4o-mini",
    ),
    call(
        B,
        "shared-run",
        T0 + HOUR + 7,
        (7000, 700),
        user_id="carol-secret-user",
        experience_name="secret-experience",
        tags={"tenant": "acme"},
    ),
)
A_CALLS = tuple(c for c in CALLS if c.use_case == A)
B_CALL = next(c for c in CALLS if c.run_id == "b1-secret-run")
B_SPANS = tuple(c.span_id for c in CALLS if c.use_case == B)
OUTCOMES = (
    Outcome("1" * 32, "1" * 16, T0 + 2 * HOUR, None, A, "shared-run", "resolved", 1.0),
    Outcome("2" * 32, "2" * 16, T0 + 2 * HOUR, None, B, "shared-run", "resolved", 4.0),
    Outcome("3" * 32, "3" * 16, T0 + 2 * HOUR, None, B, "b9-secret-run", "resolved", 8.0),
    Outcome("4" * 32, "4" * 16, T0 + 2 * HOUR, None, B, "b1-secret-run", "secret_outcome", 2.0),
)


def fill(url: str, calls: Sequence[Call]) -> None:
    """The calls, their use cases' outcomes and a budget per use case, as an exporter and the CLI write them."""
    use_cases = {c.use_case for c in calls}
    store = open_store(url)
    try:
        assert store.write(list(calls)) == []
        assert store.write_outcomes([o for o in OUTCOMES if o.use_case in use_cases]) == []
    finally:
        store.close()
    for use_case in sorted(use_cases):
        name = "secret-budget" if use_case == B else "alpha-budget"
        set_budget(name=name, use_case=use_case, amount_usd=1.0, window="total", store=url)


class Tokens(NamedTuple):
    alice: str  # CONSUMER of A
    bob: str  # OWNER of B
    carol: str  # no role anywhere


@pytest.fixture
def new_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_or_postgres: str) -> Iterator[object]:
    """Another empty store of the same kind as ``sqlite_or_postgres`` (a file, or a database)."""
    if sqlite_or_postgres.startswith("sqlite"):
        yield lambda name: "sqlite:///" + str(tmp_path / f"{name}.db")
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        yield lambda name: server.create_database(f"scope{next(_n)}_{name}")


@pytest.fixture
def shared(sqlite_or_postgres: str) -> tuple[str, Tokens]:
    """The store of both use cases with its principals: alice consumes A, bob owns B, carol has nothing."""
    url = sqlite_or_postgres
    fill(url, CALLS)
    store = open_store(url)
    try:
        tokens = Tokens(*(create_token(store, name) for name in ("alice", "bob", "carol")))
        share(store, A, [RoleAssignment("alice", Role.CONSUMER)])
        share(store, B, [RoleAssignment("bob", Role.OWNER)])
    finally:
        store.close()
    return url, tokens


def get(url: str, token: str | None = None, *, basic: bool = False) -> tuple[int, str, bytes]:
    """Status, content type and body of one GET (with ``token`` as Bearer, or as Basic's password)."""
    headers = {}
    if token is not None:
        if basic:
            headers["Authorization"] = "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()
        else:
            headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


FILTERS: tuple[dict[str, str], ...] = (
    {},
    {"use_case": B},  # crafted: the other use case by name
    {"use_case": A},
    {"user": "carol-secret-user"},  # a user only B has
    {"user": "shared-user"},  # a user of both
    {"experience": "secret-experience"},
    {"experience": "chat"},
    {"version": "v1"},
    {"tag": "tenant=secret-tenant"},
    {"tag": "tenant=acme"},
    {"since": "2026-01-01", "until": "2026-01-02"},
)

PATHS: tuple[str, ...] = (
    "/",
    "/use-case?use_case=" + A,
    "/use-case?use_case=" + B,
    "/use-case?use_case=" + B + "&order=cost&bins=3",
    "/run?id=a1",
    "/run?id=shared-run",
    "/run?id=b1-secret-run",
    f"/call?run=b1-secret-run&span={B_CALL.span_id}",
    f"/call?run=shared-run&span={B_CALL.span_id}&trace={B_CALL.trace_id}",
    f"/call?run=a1&span={A_CALLS[0].span_id}",
    "/users",
    "/experiences",
    "/experience-versions",
    "/models",
    "/tags?key=tenant",
    "/budgets",
    *(
        f"/outcomes?outcome={name}&by={by}"
        for name in ("resolved", "secret_outcome")
        for by in ("use-case", "version", "experience", "user")
    ),
    "/api/summary",
    "/api/summary?format=csv",
    *(
        f"/api/series?bucket={b}&by={by}"
        for b in ("hour", "day")
        for by in ("use-case", "user", "experience", "model", "step", "version", "cost-source")
    ),
    *(
        f"/api/report?by={by}&format={fmt}"
        for fmt in ("json", "csv")
        for by in (
            "use-case",
            "run",
            "user",
            "experience",
            "model",
            "step",
            "version",
            "experience-version",
            "cost-source",
            "tag:tenant",
        )
    ),
    "/api/report?by=run&limit=1",
    "/api/runs?order=newest",
    "/api/runs?order=cost&format=csv",
    "/api/runs?order=cost&limit=1&offset=1",
    "/api/histogram?bins=3",
    "/api/histogram?format=csv",
    "/api/run?id=shared-run",
    "/api/run?id=b1-secret-run",
    "/api/run?id=b1-secret-run&format=csv",
    "/api/budgets",
    *(
        f"/api/outcomes?outcome={name}&by={by}&format={fmt}"
        for name in ("resolved", "secret_outcome")
        for by in ("use-case", "user")
        for fmt in ("json", "csv")
    ),
)


def with_filters(path: str, filters: dict[str, str]) -> str:
    if not filters:
        return path
    extra = urlencode(list(filters.items()))
    if "use_case=" in path and "use_case" in filters:
        return path  # one use_case per URL (the page's own)
    return path + ("&" if "?" in path else "?") + extra


def test_a_consumer_of_a_sees_exactly_what_a_store_of_a_alone_shows_on_every_page_and_route(
    shared: tuple[str, Tokens], new_url: object, tmp_path: Path
) -> None:
    url, tokens = shared
    alone = new_url("alone")  # type: ignore[operator]
    fill(alone, A_CALLS)
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    with UIProcess(url, "--token-file", str(token_file)) as scoped, UIProcess(alone) as oracle:
        checked = 0
        for filters in FILTERS:
            for path in PATHS:
                target = with_filters(path, filters)
                got = get(scoped.url + target, tokens.alice)
                want = get(oracle.url + target)
                assert got == want, (target, got[0], got[2][:300], want[2][:300])
                shown = got[2].decode("utf-8", "replace")
                asked = unquote_plus(target)  # what the request names itself is echoed, as for any name
                assert [v for v in (*SECRETS, *B_SPANS) if v in shown and v not in asked] == [], target
                checked += 1
        # and the figures are A's, from published prices
        _, _, body = get(scoped.url + "/api/summary", tokens.alice)
        summary = json.loads(body)
        assert (summary["calls"], summary["runs"]) == (3, 2)
        assert summary["cost_usd"] == pytest.approx(
            mini_cost(1000, 200) + mini_cost(400, 20) + mini_cost(300, 30)
        )
        # bob sees B (and not A), the administrator both
        _, _, body = get(scoped.url + "/api/report?by=use-case", tokens.bob)
        assert [r["use_case"] for r in json.loads(body)] == [B]
        _, _, body = get(scoped.url + "/api/report?by=use-case", ADMIN_TOKEN, basic=True)
        assert sorted(r["use_case"] for r in json.loads(body)) == [A, B]
        # carol, with no role, sees what an empty store shows
        _, _, body = get(scoped.url + "/api/summary", tokens.carol)
        assert (json.loads(body)["calls"], json.loads(body)["cost_usd"]) == (0, None)
        _, err = scoped.terminate()
    assert checked == len(FILTERS) * len(PATHS)
    for token in (*tokens, ADMIN_TOKEN):
        assert token not in err


def test_with_principals_every_request_needs_a_valid_token_even_on_loopback(
    shared: tuple[str, Tokens],
) -> None:
    """No administrator token set, but the store has principals: no token, a wrong one, a prefix or a
    same-length forgery is a 401 (loopback or not); a principal's token in Bearer or Basic is admitted."""
    url, tokens = shared
    wrong = tokens.alice[:-1] + ("A" if tokens.alice[-1] != "A" else "B")
    with UIProcess(url) as ui:
        for token in (None, "", wrong, tokens.alice[:-1], tokens.alice[:10], tokens.alice + "x", ADMIN_TOKEN):
            for path in ("/", "/api/summary", "/static/dashboard.css"):
                status, _, body = get(ui.url + path, token)
                assert status == 401, (token, path)
                assert b"alpha" not in body and b"secret" not in body and b"a1" not in body
        assert get(ui.url + "/api/summary", tokens.alice)[0] == 200
        assert get(ui.url + "/api/summary", tokens.alice, basic=True)[0] == 200
        _, err = ui.terminate()
    assert all(t not in err for t in tokens)


def test_a_revoked_token_or_a_removed_role_takes_effect_on_the_next_request(
    shared: tuple[str, Tokens],
) -> None:
    url, tokens = shared
    with UIProcess(url) as ui:
        status, _, body = get(ui.url + "/api/summary", tokens.alice)
        assert status == 200 and json.loads(body)["calls"] == 3
        store = open_store(url)
        try:
            share(store, A, [RoleAssignment("alice", Role.NO_ROLE)])
            status, _, body = get(ui.url + "/api/summary", tokens.alice)
            assert status == 200 and json.loads(body)["calls"] == 0  # still a principal, sees nothing
            share(store, A, [RoleAssignment("alice", Role.CONSUMER)])
            assert json.loads(get(ui.url + "/api/summary", tokens.alice)[2])["calls"] == 3
            assert revoke_token(store, "alice")
        finally:
            store.close()
        for path in ("/", "/api/summary", "/run?id=a1"):
            assert get(ui.url + path, tokens.alice)[0] == 401
        assert get(ui.url + "/api/summary", tokens.bob)[0] == 200  # the others keep working
        _, err = ui.terminate()
    assert all(t not in err for t in tokens)


def test_a_non_loopback_address_is_allowed_with_principals_and_refused_without(
    sqlite_or_postgres: str, new_url: object
) -> None:
    """The check ``ui`` and ``serve --ui`` make before binding (nothing is bound here)."""
    url = sqlite_or_postgres
    fill(url, A_CALLS)
    with pytest.raises(ValueError, match="0.0.0.0 is not a loopback address"):
        check_exposure("0.0.0.0", None, "--listen", url)
    store = open_store(url)
    try:
        create_token(store, "alice")
    finally:
        store.close()
    check_exposure("0.0.0.0", None, "--listen", url)  # principals: their tokens guard it
    missing = new_url("missing")  # type: ignore[operator]
    with pytest.raises(ValueError, match="0.0.0.0 is not a loopback address"):
        check_exposure("0.0.0.0", None, "--listen", missing)
    port = free_port()
    done = subprocess.run(
        [str(BIN / "otel-usecase"), "ui", "--store", missing, "--listen", f"0.0.0.0:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "tokens create" in done.stderr


def test_serve_ui_scopes_its_dashboard_the_same_way(sqlite_or_postgres: str) -> None:
    """``serve --ui``: the receiver's dashboard at ``/ui`` reads the same principals and scopes alike."""
    url = sqlite_or_postgres
    fill(url, CALLS)
    store = open_store(url)
    try:
        alice = create_token(store, "alice")
        share(store, A, [RoleAssignment("alice", Role.CONSUMER)])
    finally:
        store.close()
    with ServeProcess(url, "--ui") as serve:
        base = f"http://127.0.0.1:{serve.http_port}/ui"
        assert get(base + "/api/summary")[0] == 401
        status, _, body = get(base + "/api/report?by=use-case&use_case=" + B, alice)
        assert (status, json.loads(body)) == (200, [])
        status, _, body = get(base + "/api/summary", alice)
        assert json.loads(body)["cost_usd"] == pytest.approx(
            mini_cost(1000, 200) + mini_cost(400, 20) + mini_cost(300, 30)
        )
        status, _, body = get(base + "/run?id=b1-secret-run", alice)
        assert status == 404 and b"No run" in body
        code, err = serve.terminate()
    assert code == 0 and alice not in err
