"""Ids are data, names are code: ids from requests never raise, and one id is one run, user or experience.

Expected stored forms are computed here from the documented rule, not read back
from the code: an id that cannot be stored as it is becomes its first 64
characters (unstorable ones replaced by U+FFFD) + ``~sha256:`` + the first 32
hex digits of SHA-256 of the original's UTF-8 (lone surrogates encoded as
such); an experience id that is not a GUID becomes ``uuid5(namespace, value)``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import baggage, context
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from otel_usecase import (
    UseCaseWarning,
    current_scope,
    set_default_use_case,
    track_context,
)
from otel_usecase.scope import keys as attr
from otel_usecase.scope import privacy, validation
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .conftest import Traced
from .expect import mini_cost
from .pg import PostgresServer
from .rigs import CostRig
from .servers import LoopbackHTTPServer

NAMESPACE = uuid.UUID("5c0e8d6a-3e41-5b1f-9a7d-0e6f1c2b4a90")  # as documented in the README
MSG = [{"role": "user", "content": "hello"}]


def stored_form(value: str) -> str:
    """The documented normalised form of an id that breaks the rule."""
    bad = {*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)}
    prefix = "".join("\ufffd" if ord(c) in bad else c for c in value[:64])
    return prefix + "~sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    validation.reset_warnings()
    privacy.reset_user_id_hmac_key()
    yield
    privacy.reset_user_id_hmac_key()


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]


# --- over-long and unstorable ids -----------------------------------------------------------


def test_two_scopes_with_the_same_long_id_are_one_run_and_warn_once(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    long_id = "ticket-" + "7" * 293  # 300 characters, e.g. from a request header
    with pytest.warns(UseCaseWarning) as record:
        for _ in range(2):  # two requests with the same id
            with track_context("triage", use_case_id=long_id, user_id=long_id) as scope:
                ask(client)
    # pytest.warns records the warnings of every thread; only those about this test's id are its own.
    messages = sorted(str(w.message) for w in record if "ticket-777" in str(w.message))
    assert len(messages) == 2, (
        messages
    )  # one per distinct (field, value): use_case_id and user_id, not per request
    assert messages[0].startswith("use_case_id='ticket-777") and "(300 characters)" in messages[0]
    assert "at most 256 characters" in messages[0] and repr(stored_form(long_id)) in messages[0]
    assert messages[1].startswith("user_id='ticket-777")
    assert scope.use_case_id == scope.user_id == stored_form(long_id)
    (run,) = rig.report("run")
    assert run["run_id"] == stored_form(long_id) and run["calls"] == 2
    assert run["cost_usd"] == pytest.approx(2 * mini_cost(1_000, 100))
    (user,) = rig.report("user")
    assert user["user_id"] == stored_form(long_id) and user["runs"] == 1


@pytest.mark.parametrize(
    "raw",
    [
        "user\x00nul",  # PostgreSQL text cannot hold NUL
        "\x1b[31mred\x1b[0m",  # C0: a terminal escape
        "line\nbreak",
        "c1\x85next-line",  # C1
        "para\u2029sep",  # Zp
        "lone-\ud800-surrogate",  # not encodable as UTF-8: no store or exporter can carry it
    ],
)
def test_unstorable_characters_are_normalised_and_the_call_is_stored(
    raw: str, rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=200, completion_tokens=20))
    with pytest.warns(UseCaseWarning, match="user_id=.* breaks the id rule .*contains"):
        manager = track_context("chat", user_id=raw)
    with manager as scope:
        ask(client)
    assert scope.user_id == stored_form(raw)
    (user,) = rig.report("user")
    assert user["user_id"] == stored_form(raw) and user["calls"] == 1
    assert user["cost_usd"] == pytest.approx(mini_cost(200, 20))


def test_normalised_ids_are_stored_by_postgresql(fake_openai: FakeOpenAI, client: openai.OpenAI) -> None:
    """PostgreSQL text cannot hold NUL, and no UTF-8 store can hold a lone surrogate."""
    fake_openai.respond(usage=FakeUsage(prompt_tokens=200, completion_tokens=20))
    raws = ["nul\x00in-the-middle", "lone-\udc80-surrogate", "p" * 300]
    with PostgresServer() as server:
        rig = CostRig(server.create_database("normalised_ids"))
        try:
            with pytest.warns(UseCaseWarning):
                managers = [track_context("chat", use_case_id=raw, user_id=raw) for raw in raws]
            for manager in managers:
                with manager:
                    ask(client)
            runs = {row["run_id"]: row["calls"] for row in rig.report("run")}
        finally:
            rig.close()
    assert runs == {stored_form(raw): 1 for raw in raws}


def test_format_characters_are_kept_as_they_are() -> None:
    # Decision (README "Ids and names"): Cf characters are storable and part of ordinary text
    # (ZWJ in emoji, ZWNJ in Persian); the report escapes them when it prints. No warning.
    for raw in ("rtl\u202eevil", "family\U0001f468\u200d\U0001f469", "zero\u200bwidth"):
        with track_context("chat", user_id=raw) as scope:
            assert scope.user_id == raw


def test_empty_id_is_no_id_with_a_warning() -> None:
    with pytest.warns(UseCaseWarning, match="use_case_id='' breaks the id rule.*empty.*treated as no id"):
        shared = track_context("chat", use_case_id="", user_id="u-1")
    with shared as first:
        pass
    with shared as second:
        pass
    assert first.use_case_id and second.use_case_id and first.use_case_id != second.use_case_id


def test_strict_mode_keeps_the_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_USECASE_STRICT", "true")
    with pytest.raises(ValueError, match=r"user_id='u{80}\.\.\. \(300 characters\)' is not a valid id"):
        track_context("chat", user_id="u" * 300)
    with pytest.raises(ValueError, match=r"use_case_id='a\\x00b' is not a valid id .*'\\x00' at position 1"):
        track_context("chat", use_case_id="a\x00b")
    with track_context("chat", experience_id="sess_9f8a7b") as scope:  # derivation is not a repair
        assert scope.experience_id == str(uuid.uuid5(NAMESPACE, "sess_9f8a7b"))


def test_warnings_are_rate_limited_for_a_stream_of_distinct_bad_ids() -> None:
    with pytest.warns(UseCaseWarning) as record:
        for i in range(50):
            track_context("chat", use_case_id=f"{i}-" + "x" * 300)
    assert len(record) == 10  # at most ten a minute, whatever the traffic


def test_names_are_code_and_still_raise() -> None:
    for field in ("use_case_name", "experience_name", "use_case_step"):
        with pytest.raises(ValueError, match=f"{field}='has space' is not a valid name.*64 characters"):
            track_context(**{field: "has space"})  # type: ignore[arg-type]


def test_the_user_of_a_run_is_still_fixed_with_normalised_ids() -> None:
    long_user = "u" * 300
    with pytest.warns(UseCaseWarning):
        outer_scope = track_context("chat", user_id=long_user)
        same_user = track_context(use_case_step="retrieve", user_id=long_user)
    with outer_scope, same_user as inner:  # the same long id is the same user: no error
        assert inner.user_id == stored_form(long_user)
        with pytest.raises(ValueError, match="would change the user of the enclosing scope"):
            with track_context(use_case_step="answer", user_id="someone-else"):
                pass


def test_default_use_case_id_is_normalised_too() -> None:
    with pytest.warns(UseCaseWarning, match="use_case_id="):
        set_default_use_case("nightly", use_case_id="n" * 257)
    scope = current_scope()
    assert scope is not None and scope.use_case_id == stored_form("n" * 257)


def test_with_user_id_hashing_a_long_user_id_is_hashed_as_given_without_a_warning() -> None:
    key = "k" * 32
    privacy.set_user_id_hmac_key(key)
    raw = "person@example.com" + "x" * 300
    with track_context("chat", user_id=raw) as scope:  # no warning: the raw id is never stored
        expected = "hmac-sha256:" + hmac.new(key.encode(), raw.encode(), hashlib.sha256).hexdigest()
        assert scope.user_id == expected


# --- experience ids -------------------------------------------------------------------------


def test_a_session_id_is_one_experience_across_requests(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=300, completion_tokens=30))
    with caplog.at_level(logging.INFO, logger="otel_usecase"):
        for _ in range(3):  # three requests of one chat session; no UseCaseWarning (pytest makes it an error)
            with track_context("chat_turn", experience_name="support_chat", experience_id="sess_9f8a7b"):
                ask(client)
    expected = str(uuid.uuid5(NAMESPACE, "sess_9f8a7b"))
    (row,) = rig.report("experience")
    assert (row["experience_id"], row["calls"], row["runs"]) == (expected, 3, 3)
    assert row["cost_usd"] == pytest.approx(3 * mini_cost(300, 30))
    spans = [s for s in rig.captured.get_finished_spans() if (s.attributes or {}).get(attr.EXPERIENCE_ID)]
    assert spans and all(s.attributes[attr.EXPERIENCE_ID_ORIGINAL] == "sess_9f8a7b" for s in spans)  # type: ignore[index]
    logged = [r.getMessage() for r in caplog.records if "not a GUID" in r.getMessage()]
    assert len(logged) == 1 and "'sess_9f8a7b'" in logged[0] and expected in logged[0]  # once per process


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("c0ffee00-1234-4abc-8def-000000000001", "c0ffee00-1234-4abc-8def-000000000001"),
        ("C0FFEE00-1234-4ABC-8DEF-000000000001", "c0ffee00-1234-4abc-8def-000000000001"),
        ("{c0ffee00-1234-4abc-8def-000000000001}", "c0ffee00-1234-4abc-8def-000000000001"),
        (uuid.UUID("c0ffee00-1234-4abc-8def-000000000001"), "c0ffee00-1234-4abc-8def-000000000001"),
        ("sess_9f8a7b", str(uuid.uuid5(NAMESPACE, "sess_9f8a7b"))),
        (
            "{c0ffee00-1234-4abc-8def-000000000001",
            str(uuid.uuid5(NAMESPACE, "{c0ffee00-1234-4abc-8def-000000000001")),
        ),
        ("c0ffee00123442bc8def000000000001", str(uuid.uuid5(NAMESPACE, "c0ffee00123442bc8def000000000001"))),
        (4711, str(uuid.uuid5(NAMESPACE, "4711"))),
    ],
)
def test_experience_id_derivation(given: object, stored: str) -> None:
    with track_context("x", experience_id=given) as scope:  # type: ignore[arg-type]
        assert scope.experience_id == stored
        original = None if str(given) == stored else str(given)
        assert scope.experience_id_original == original
        assert baggage.get_baggage(attr.EXPERIENCE_ID) == stored
        assert baggage.get_baggage(attr.EXPERIENCE_ID_ORIGINAL) == original
        with track_context("inner_use_case") as inner:  # inherited together
            assert (inner.experience_id, inner.experience_id_original) == (stored, original)


def test_over_long_session_id_is_normalised_then_derived() -> None:
    raw = "s" * 400
    with pytest.warns(UseCaseWarning, match="experience_id='s"):
        manager = track_context("x", experience_id=raw)
    with manager as scope:
        assert scope.experience_id_original == stored_form(raw)
        assert scope.experience_id == str(uuid.uuid5(NAMESPACE, stored_form(raw)))


# --- inbound baggage follows the same rules ---------------------------------------------------


def test_inbound_values_land_where_the_same_local_values_land(traced: Traced, client: openai.OpenAI) -> None:
    long_user = "u" * 300
    with pytest.warns(UseCaseWarning):
        local = track_context("chat", use_case_id="r-1", user_id=long_user, experience_id="sess_1")
    with local:
        ask(client)
    header = f"usecase.name=chat,usecase.id=r-1,user.id={long_user},experience.id=sess_1"
    token = context.attach(W3CBaggagePropagator().extract({"baggage": header}))
    try:
        ask(client)
    finally:
        context.detach(token)
    first, second = traced.llm_spans()
    keys = (*attr.ALL_KEYS,)
    assert [first.attributes.get(k) for k in keys] == [second.attributes.get(k) for k in keys]  # type: ignore[union-attr]
    assert second.attributes[attr.USER_ID] == stored_form(long_user)  # type: ignore[index]
    assert second.attributes[attr.EXPERIENCE_ID] == str(uuid.uuid5(NAMESPACE, "sess_1"))  # type: ignore[index]
    assert second.attributes[attr.EXPERIENCE_ID_ORIGINAL] == "sess_1"  # type: ignore[index]


# --- the way the app used it: ids from request headers ----------------------------------------


class App(LoopbackHTTPServer):
    """A web app that takes its ids from request headers, as in issue 12 (there: HTTP 500)."""

    def __init__(self, llm: openai.OpenAI) -> None:
        outer = self
        self.statuses: list[int] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    with track_context(
                        "chat_answer",
                        user_id=self.headers["x-user-id"],
                        experience_name="support_chat",
                        experience_id=self.headers["x-session-id"],
                    ):
                        llm.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
                    status, body = 200, b"ok"
                except Exception as exc:
                    status, body = 500, repr(exc).encode()
                outer.statuses.append(status)
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


def test_ids_from_request_headers_never_fail_the_request(
    rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=100, completion_tokens=10))
    user = "u-" + "9" * 298  # a 300-character user id header
    with App(client) as app, pytest.warns(UseCaseWarning, match="user_id='u-999"):
        for _ in range(2):
            got = httpx.get(app.url, headers={"x-user-id": user, "x-session-id": "sess_9f8a7b"}, timeout=30)
            assert got.status_code == 200, got.text
    assert app.statuses == [200, 200]
    (row,) = rig.report("user")
    assert (row["user_id"], row["calls"], row["runs"]) == (stored_form(user), 2, 2)
    (exp,) = rig.report("experience")
    assert exp["experience_id"] == str(uuid.uuid5(NAMESPACE, "sess_9f8a7b")) and exp["calls"] == 2
