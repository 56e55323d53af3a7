"""Trust and privacy over real HTTP: who may set our keys inbound, what leaves outbound, hashed user ids.

Every outbound test makes a real request through the real httpx instrumentation
(which injects with the global propagator) to a server on 127.0.0.1 that
records the headers it received; every inbound test sends a real request to an
"edge service" that extracts with the global propagator, the way HTTP server
instrumentations do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote_plus

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, context, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_usecase import Scope, current_scope, track_context
from otel_usecase.scope import keys as attr
from otel_usecase.scope import privacy
from otel_usecase.scope.propagation import (
    DEFAULT_INBOUND_KEYS,
    DEFAULT_OUTBOUND_KEYS,
    ENTRY_POINT_NAME,
    ENV_INBOUND_KEYS,
    ENV_OUTBOUND_KEYS,
    UseCaseBaggagePropagator,
    parse_keys,
)
from otel_usecase.scope.validation import clean_inbound
from otel_usecase.testing import FakeOpenAI

from .conftest import Traced
from .rigs import CostRig
from .servers import LoopbackHTTPServer

KEY = "test-hmac-key-0123456789abcdef"
ATTACK = "user.id=victim,usecase.id=someone-elses-run,tenant=acme"


def expected_hash(raw: str, key: str = KEY) -> str:
    """The keyed hash computed independently of the package, from the standard library."""
    return (
        "hmac-sha256:"
        + hmac.new(key.encode(), raw.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    )


def parse_baggage_header(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for member in header.split(","):
        name, _, value = member.partition("=")
        out[unquote_plus(name.strip())] = unquote_plus(value.split(";")[0].strip())
    return out


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_key_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without trust/privacy settings and leaves none behind for other modules."""
    for name in (ENV_INBOUND_KEYS, ENV_OUTBOUND_KEYS, privacy.ENV_USER_ID_HMAC_KEY, "OTEL_PROPAGATORS"):
        monkeypatch.delenv(name, raising=False)
    privacy.reset_user_id_hmac_key()
    yield
    privacy.reset_user_id_hmac_key()


@pytest.fixture
def hmac_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(privacy.ENV_USER_ID_HMAC_KEY, KEY)
    privacy.reset_user_id_hmac_key()
    return KEY


@pytest.fixture
def use_propagator() -> Iterator[Callable[[TextMapPropagator], None]]:
    """Install ``tracecontext`` + the given baggage propagator globally; restore the previous one."""
    previous = propagate.get_global_textmap()

    def install(baggage_propagator: TextMapPropagator) -> None:
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), baggage_propagator])
        )

    try:
        yield install
    finally:
        propagate.set_global_textmap(previous)


@pytest.fixture
def llm_over_httpx(fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """An OpenAI client on an ``httpx.Client``, so the httpx instrumentation injects into LLM requests.

    (Recent ``openai`` releases default to ``httpx2``, which the httpx instrumentation does not patch;
    passing an ``httpx.Client`` is what apps with HTTP instrumentation do.)
    """
    with httpx.Client() as http_client:
        yield openai.OpenAI(
            base_url=fake_openai.base_url,
            api_key="test-key",
            max_retries=0,
            http_client=http_client,  # type: ignore[arg-type]  # typed for httpx2, accepts httpx at run time
        )


class _Server(LoopbackHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread, answering every GET/POST with ``{}``."""

    def __init__(self, on_request: Callable[[dict[str, str]], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                # http.server decodes header bytes as ISO-8859-1, like every WSGI server
                on_request({k.lower(): v for k, v in self.headers.items()})
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _handle
            do_POST = _handle

        super().__init__(Handler)


class Recorder:
    """A third-party host: records the headers of every request it receives."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self._server = _Server(self.headers.append)
        self.url = self._server.url

    def baggage(self, index: int = -1) -> dict[str, str]:
        header = self.headers[index].get("baggage")
        return parse_baggage_header(header) if header else {}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    try:
        yield rec
    finally:
        rec._server.close()


@dataclass
class Seen:
    """What the edge service saw while handling one request."""

    scope: Scope | None
    baggage: dict[str, object]
    extra: Any = None


@dataclass
class Edge:
    """An edge service: extracts the request's context with the global propagator, as instrumentations do."""

    work: Callable[[], Any] | None = None
    seen: list[Seen] = field(default_factory=list)

    def handle(self, headers: dict[str, str]) -> None:
        token = context.attach(propagate.extract(headers))
        try:
            extra = self.work() if self.work is not None else None
            self.seen.append(Seen(current_scope(), dict(baggage.get_all()), extra))
        finally:
            context.detach(token)


@pytest.fixture
def edge() -> Iterator[tuple[Edge, str]]:
    service = Edge()
    server = _Server(service.handle)
    try:
        yield service, server.url
    finally:
        server.close()


def send_baggage(url: str, header: str) -> None:
    """A client that sets its own baggage header (uninstrumented: the header is exactly this)."""
    response = httpx.post(url, headers={"baggage": header}, json={})
    assert response.status_code == 200


# --- outbound ------------------------------------------------------------------------------


def test_standard_baggage_propagator_sends_user_id_to_every_host(
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
    fake_openai: FakeOpenAI,
    llm_over_httpx: openai.OpenAI,
) -> None:
    """The problem: with ``OTEL_PROPAGATORS=tracecontext,baggage`` the user id goes to the LLM provider too."""
    use_propagator(W3CBaggagePropagator())
    with track_context("support_chat", user_id="u-42"):
        httpx.get(recorder.url)
        llm_over_httpx.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    assert recorder.baggage()[attr.USER_ID] == "u-42"
    (llm_request,) = fake_openai.requests
    assert parse_baggage_header(llm_request.headers["baggage"])[attr.USER_ID] == "u-42"


def test_usecase_baggage_keeps_user_id_out_of_outbound_requests(
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
    fake_openai: FakeOpenAI,
    llm_over_httpx: openai.OpenAI,
) -> None:
    use_propagator(UseCaseBaggagePropagator())
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with track_context(
            "support_chat",
            use_case_step="answer",
            experience_name="help_center",
            user_id="u-42",
        ) as scope:
            httpx.get(recorder.url)
            llm_over_httpx.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        context.detach(token)

    sent = recorder.baggage()
    assert attr.USER_ID not in sent
    assert sent == {
        "tenant": "acme",
        attr.USE_CASE_NAME: "support_chat",
        attr.USE_CASE_ID: scope.use_case_id,
        attr.USE_CASE_STEP: "answer",
        attr.EXPERIENCE_NAME: "help_center",
        attr.EXPERIENCE_ID: scope.experience_id,
    }
    assert "traceparent" in recorder.headers[-1]
    (llm_request,) = fake_openai.requests
    assert "u-42" not in llm_request.headers["baggage"]
    # in process nothing is lost: the LLM span is still attributed to the user
    (llm_span,) = traced.llm_spans()
    assert (llm_span.attributes or {})[attr.USER_ID] == "u-42"


def test_outbound_none_sends_only_foreign_entries(
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
) -> None:
    use_propagator(UseCaseBaggagePropagator(send_outbound="none"))
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with track_context("support_chat", user_id="u-42"):
            httpx.get(recorder.url)
    finally:
        context.detach(token)
    assert recorder.baggage() == {"tenant": "acme"}


def test_outbound_keys_from_env_and_argument_wins(
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_OUTBOUND_KEYS, "all")
    use_propagator(UseCaseBaggagePropagator())
    with track_context("support_chat", user_id="u-42"):
        httpx.get(recorder.url)
    assert recorder.baggage()[attr.USER_ID] == "u-42"

    use_propagator(UseCaseBaggagePropagator(send_outbound="usecase.name, usecase.id"))
    with track_context("support_chat", user_id="u-42") as scope:
        httpx.get(recorder.url)
    assert recorder.baggage() == {attr.USE_CASE_NAME: "support_chat", attr.USE_CASE_ID: scope.use_case_id}


def test_hmac_user_id_in_outbound_header_and_on_llm_span(
    hmac_key: str,
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
    fake_openai: FakeOpenAI,
    llm_over_httpx: openai.OpenAI,
) -> None:
    """With the key set the raw user id leaves neither in headers nor on spans."""
    use_propagator(UseCaseBaggagePropagator(send_outbound="all"))
    hashed = expected_hash("u-42")
    with track_context("support_chat", user_id="u-42") as scope:
        assert scope.user_id == hashed
        assert current_scope() == scope
        httpx.get(recorder.url)
        llm_over_httpx.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    assert recorder.baggage()[attr.USER_ID] == hashed
    (llm_request,) = fake_openai.requests
    assert parse_baggage_header(llm_request.headers["baggage"])[attr.USER_ID] == hashed
    (llm_span,) = traced.llm_spans()
    assert (llm_span.attributes or {})[attr.USER_ID] == hashed
    for span in traced.spans():
        assert "u-42" not in json.dumps(dict(span.attributes or {}))
    for headers in (*recorder.headers, llm_request.headers):
        assert "u-42" not in json.dumps(headers)


def test_hmac_keeps_the_user_of_a_run_fixed(hmac_key: str) -> None:
    """The inner-scope user check compares hashed with hashed, and its message shows no raw id."""
    with track_context("support_chat", user_id="u-42") as outer:
        with track_context(user_id="u-42") as same:
            assert same.user_id == outer.user_id == expected_hash("u-42")
        with track_context(user_id=outer.user_id) as again:  # a hashed id is not hashed twice
            assert again.user_id == outer.user_id
        with pytest.raises(ValueError, match="user of a run is fixed") as info, track_context(user_id="u-43"):
            pass
    assert "u-42" not in str(info.value) and "u-43" not in str(info.value)


def test_hmac_outbound_hashes_a_raw_user_id_put_into_baggage_directly(
    hmac_key: str,
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
) -> None:
    use_propagator(UseCaseBaggagePropagator(send_outbound="all"))
    token = context.attach(baggage.set_baggage(attr.USER_ID, "u-42"))
    try:
        httpx.get(recorder.url)
    finally:
        context.detach(token)
    assert recorder.baggage() == {attr.USER_ID: expected_hash("u-42")}


# --- privacy module ------------------------------------------------------------------------


def test_user_id_for_telemetry_is_identity_without_a_key() -> None:
    assert not privacy.user_id_hashing_enabled()
    assert privacy.user_id_for_telemetry("u-42") == "u-42"


def test_user_id_for_telemetry_with_env_key_reset_and_code_override(
    hmac_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert privacy.user_id_hashing_enabled()
    hashed = privacy.user_id_for_telemetry("user@example.com")
    assert hashed == expected_hash("user@example.com") == privacy.hash_user_id("user@example.com", KEY)
    assert privacy.is_hashed_user_id(hashed)
    assert privacy.user_id_for_telemetry(hashed) == hashed  # idempotent
    assert privacy.user_id_for_telemetry("\udcff").startswith("hmac-sha256:")  # never raises

    # the key is read once per process: changing the env alone does nothing until a reset
    monkeypatch.setenv(privacy.ENV_USER_ID_HMAC_KEY, "another-key-0123456789")
    assert privacy.user_id_for_telemetry("u-1") == expected_hash("u-1")
    privacy.reset_user_id_hmac_key()
    assert privacy.user_id_for_telemetry("u-1") == expected_hash("u-1", "another-key-0123456789")

    privacy.set_user_id_hmac_key(b"key-from-a-vault-0123")
    assert privacy.user_id_for_telemetry("u-1") == expected_hash("u-1", "key-from-a-vault-0123")
    privacy.set_user_id_hmac_key(None)
    assert privacy.user_id_for_telemetry("u-1") == "u-1"
    with pytest.raises(ValueError):
        privacy.set_user_id_hmac_key("")


# --- forged hashes -------------------------------------------------------------------------


def test_a_forged_hash_sent_as_a_user_id_never_bills_the_victim(
    hmac_key: str, rig: CostRig, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    """An app takes the user id from a request header; the attacker sends the victim's hash as its id."""

    def handle(headers: dict[str, str]) -> None:
        with track_context("support_chat", user_id=headers["x-user"]):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    server = _Server(handle)
    try:
        victim_hash = expected_hash("alice")  # known to the attacker, e.g. from a shared report
        for user in ("alice", victim_hash, victim_hash):
            assert httpx.get(server.url, headers={"x-user": user}).status_code == 200
    finally:
        server.close()
    by_user = {row["user_id"]: row for row in rig.report("user")}
    forged_as = expected_hash(victim_hash)  # the attacker's value is hashed like any other id
    assert set(by_user) == {victim_hash, forged_as}
    assert (by_user[victim_hash]["calls"], by_user[forged_as]["calls"]) == (1, 2)


def test_only_values_this_library_hashed_skip_hashing(hmac_key: str) -> None:
    with track_context("support_chat", user_id="alice") as scope:
        pass
    hashed = scope.user_id
    assert hashed == expected_hash("alice") and isinstance(hashed, privacy.HashedUserId)
    with track_context("support_chat", user_id=hashed) as again:  # the library's own value: kept
        assert again.user_id == hashed
    as_text = json.loads(json.dumps(hashed))  # the same text from outside (a request, another process)
    assert privacy.user_id_for_telemetry(as_text) == expected_hash(hashed) != hashed
    with track_context("support_chat", user_id=as_text) as forged:
        assert forged.user_id == expected_hash(hashed)
    # an application that stores hashed ids itself (a job queue) may vouch for them, explicitly
    assert privacy.user_id_for_telemetry(privacy.trust_hashed_user_id(as_text)) == hashed
    with pytest.raises(ValueError, match="not a hashed user id"):
        privacy.trust_hashed_user_id("alice")
    assert privacy.user_id_for_telemetry(privacy.hash_user_id("bob", KEY)) == expected_hash("bob")


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=80))
def test_no_raw_id_ever_yields_another_ids_hash(raw: str) -> None:
    """Hashing is injective over what the app passes: a forged value lands on a hash of itself."""
    privacy.set_user_id_hmac_key(KEY)
    try:
        victim = privacy.user_id_for_telemetry("victim")
        assert privacy.user_id_for_telemetry(raw) == expected_hash(raw)
        assert raw == "victim" or privacy.user_id_for_telemetry(raw) != victim
        assert privacy.user_id_for_telemetry(str(victim)) != victim
    finally:
        privacy.reset_user_id_hmac_key()


def test_short_env_key_drops_user_ids_everywhere_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    traced: Traced,
    instrumented_httpx: None,
    use_propagator: Callable[[TextMapPropagator], None],
    recorder: Recorder,
    client: openai.OpenAI,
) -> None:
    """A guessable key protects nothing and no key would send raw ids: neither; user ids are dropped."""
    monkeypatch.setenv(privacy.ENV_USER_ID_HMAC_KEY, "  short  ")
    privacy.reset_user_id_hmac_key()
    use_propagator(UseCaseBaggagePropagator(send_outbound="all"))
    with (
        caplog.at_level(logging.WARNING, logger="otel_usecase"),
        track_context("support_chat", user_id="u-1") as scope,
    ):
        assert scope.user_id is None and scope.use_case_name == "support_chat"
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        httpx.get(recorder.url)
        token = context.attach(baggage.set_baggage(attr.USER_ID, "u-2"))  # put in baggage by hand
        try:
            httpx.get(recorder.url)
        finally:
            context.detach(token)
    (error,) = [r for r in caplog.records if privacy.ENV_USER_ID_HMAC_KEY in r.getMessage()]
    assert error.levelno == logging.ERROR
    assert "5 bytes long" in error.getMessage() and "DROPPED" in error.getMessage()
    (llm_span,) = traced.llm_spans()
    assert (llm_span.attributes or {})[attr.USE_CASE_NAME] == "support_chat"  # the rest is recorded
    assert attr.USER_ID not in (llm_span.attributes or {})
    assert [attr.USER_ID in r for r in (recorder.baggage(0), recorder.baggage(1))] == [False, False]
    assert not privacy.user_id_hashing_enabled()
    # from trusted baggage, a raw id is dropped and a hashed one (hashed upstream) kept
    accept_all = UseCaseBaggagePropagator(accept_inbound="all")
    assert baggage.get_all(accept_all.extract({"baggage": "user.id=victim"}, Context())) == {}
    hashed = expected_hash("victim")
    assert dict(baggage.get_all(accept_all.extract({"baggage": f"user.id={hashed}"}, Context()))) == {
        attr.USER_ID: hashed
    }


@pytest.mark.parametrize("key", ["short", b"", "x" * (privacy.MIN_KEY_BYTES - 1)])
def test_short_key_in_code_raises(key: str | bytes) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        privacy.set_user_id_hmac_key(key)


def test_blank_key_means_no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(privacy.ENV_USER_ID_HMAC_KEY, "   ")
    privacy.reset_user_id_hmac_key()
    assert not privacy.user_id_hashing_enabled()


# --- inbound -------------------------------------------------------------------------------


def test_edge_drops_our_keys_from_client_baggage_but_keeps_the_rest(
    use_propagator: Callable[[TextMapPropagator], None], edge: tuple[Edge, str]
) -> None:
    service, url = edge
    use_propagator(UseCaseBaggagePropagator())
    send_baggage(url, ATTACK)
    (seen,) = service.seen
    assert seen.scope is None
    assert seen.baggage == {"tenant": "acme"}


def test_edge_accepts_our_keys_when_allowed(
    use_propagator: Callable[[TextMapPropagator], None],
    edge: tuple[Edge, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, url = edge
    use_propagator(UseCaseBaggagePropagator(accept_inbound="all"))
    send_baggage(url, ATTACK)
    assert service.seen[-1].scope == Scope(use_case_id="someone-elses-run", user_id="victim")
    assert service.seen[-1].baggage["tenant"] == "acme"

    use_propagator(UseCaseBaggagePropagator(accept_inbound=[attr.USE_CASE_ID]))
    send_baggage(url, ATTACK)
    assert service.seen[-1].scope == Scope(use_case_id="someone-elses-run")

    monkeypatch.setenv(ENV_INBOUND_KEYS, "user.id")
    use_propagator(UseCaseBaggagePropagator())
    send_baggage(url, ATTACK)
    assert service.seen[-1].scope == Scope(user_id="victim")

    use_propagator(UseCaseBaggagePropagator(accept_inbound="none"))  # the argument wins over the env
    send_baggage(url, ATTACK)
    assert service.seen[-1].scope is None


def test_edge_llm_calls_cannot_be_billed_to_someone_else(
    traced: Traced,
    use_propagator: Callable[[TextMapPropagator], None],
    edge: tuple[Edge, str],
    client: openai.OpenAI,
) -> None:
    """The attack end to end: a client names a victim's run and user; the edge's own scope must not join it."""
    service, url = edge
    forged = "usecase.name=support_chat,usecase.id=someone-elses-run,user.id=victim"

    def answer() -> Scope:
        with track_context("support_chat") as scope:  # the edge does not know the (anonymous) user
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        return scope

    service.work = answer

    use_propagator(W3CBaggagePropagator())  # the standard propagator: the attack works
    send_baggage(url, forged)
    use_propagator(UseCaseBaggagePropagator())
    send_baggage(url, forged)

    attacked, protected = (s.attributes or {} for s in traced.llm_spans())
    assert attacked[attr.USE_CASE_ID] == "someone-elses-run"
    assert attacked[attr.USER_ID] == "victim"
    assert protected[attr.USE_CASE_ID] == service.seen[1].extra.use_case_id != "someone-elses-run"
    assert attr.USER_ID not in protected


def test_accepted_inbound_user_id_is_hashed_when_hashing_is_on(
    hmac_key: str, use_propagator: Callable[[TextMapPropagator], None], edge: tuple[Edge, str]
) -> None:
    service, url = edge
    use_propagator(UseCaseBaggagePropagator(accept_inbound="all"))
    send_baggage(url, ATTACK)
    assert service.seen[-1].scope == Scope(use_case_id="someone-elses-run", user_id=expected_hash("victim"))
    send_baggage(url, f"user.id={expected_hash('victim')}")  # an upstream with the same key: unchanged
    assert service.seen[-1].scope == Scope(user_id=expected_hash("victim"))


def test_hmac_hashes_a_raw_upstream_user_id_even_with_the_standard_propagator(
    hmac_key: str,
    traced: Traced,
    use_propagator: Callable[[TextMapPropagator], None],
    edge: tuple[Edge, str],
    client: openai.OpenAI,
) -> None:
    """An internal service on plain ``baggage`` whose upstream sends raw ids still stamps only the hash."""
    service, url = edge
    service.work = lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    use_propagator(W3CBaggagePropagator())
    send_baggage(url, "usecase.name=support_chat,user.id=u-42")
    assert service.seen[-1].scope == Scope(use_case_name="support_chat", user_id=expected_hash("u-42"))
    (llm_span,) = traced.llm_spans()
    assert (llm_span.attributes or {})[attr.USER_ID] == expected_hash("u-42")


@pytest.mark.parametrize(
    "header",
    [
        "user%2Eid=victim,tenant=acme",  # percent-encoded name decodes to our key
        "user.id%3D=victim,tenant=acme",
        " user.id = victim ,tenant=acme",  # optional whitespace
        "user.id=a,user.id=b,tenant=acme",  # repeated
        "user.id=victim;prop=1,tenant=acme",  # with properties
        (
            "usecase.id=someone-elses-run,usecase.name=x,usecase.version=1,usecase.step=s,"
            "experience.name=e,experience.id=c0ffee00-1234-4abc-8def-000000000001,tenant=acme"
        ),
    ],
)
def test_no_spelling_of_a_refused_key_gets_through(header: str) -> None:
    ctx = UseCaseBaggagePropagator().extract({"baggage": header}, Context())
    got = dict(baggage.get_all(ctx))
    assert got.get("tenant") == "acme"
    assert not set(got) & set(attr.ALL_KEYS), got


def test_extract_never_removes_or_overrides_what_the_process_already_has() -> None:
    propagator = UseCaseBaggagePropagator()
    with track_context("local_use_case", user_id="local-user") as local:
        ctx = propagator.extract({"baggage": "user.id=victim,usecase.id=forged"})
        assert ctx is context.get_current()  # nothing accepted: the context is returned as it was
        ctx = propagator.extract({"baggage": ATTACK})
        token = context.attach(ctx)
        try:
            got = dict(baggage.get_all())
            assert got[attr.USER_ID] == "local-user"
            assert got[attr.USE_CASE_ID] == local.use_case_id
            assert got["tenant"] == "acme"
        finally:
            context.detach(token)


def test_accepted_invalid_names_are_dropped_and_ids_normalised_not_raised() -> None:
    propagator = UseCaseBaggagePropagator(accept_inbound="all")
    header = "usecase.name=has%20space,experience.id=not-a-guid,usecase.id=" + "x" * 300 + ",tenant=acme"
    got = dict(baggage.get_all(propagator.extract({"baggage": header}, Context())))
    # ids are normalised as a local scope normalises them (tests/test_ids.py); the experience id
    # is derived where the scope is read, from whichever propagator brought it
    long_id = "x" * 64 + "~sha256:" + hashlib.sha256(b"x" * 300).hexdigest()[:32]
    assert got == {"tenant": "acme", "experience.id": "not-a-guid", "usecase.id": long_id}


def test_refused_keys_are_warned_about_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    propagator = UseCaseBaggagePropagator()
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        for _ in range(5):
            propagator.extract({"baggage": ATTACK}, Context())
    refused = [r for r in caplog.records if "refused inbound baggage keys" in r.getMessage()]
    assert len(refused) == 1
    assert "usecase.id, user.id" in refused[0].getMessage()


# --- malformed inbound baggage: never raises -----------------------------------------------


MALFORMED: list[tuple[str, Mapping[str, object]]] = [
    ("bad percent-encoding", {"baggage": "user.id=%zz%,tenant=ac%E0%A4%Ame,x=%"}),
    ("value over the 4096 pair limit", {"baggage": "tenant=acme,big=" + "v" * 5000}),
    ("header over 8192 bytes", {"baggage": ",".join(f"k{i}={'v' * 100}" for i in range(100))}),
    ("too many entries", {"baggage": "tenant=acme," + ",".join(f"k{i}=v" for i in range(300))}),
    ("invalid names", {"baggage": "bad name=1,=v,novalue,(x)=1,tenant=acme,user.id"}),
    ("only separators", {"baggage": ",,,;;;==="}),
    ("latin-1 decoded non-UTF-8 bytes", {"baggage": b"tenant=acme,user.id=\xff\xfe".decode("latin-1")}),
    ("surrogate-escaped non-UTF-8 bytes", {"baggage": b"tenant=\xff\xfe".decode("utf-8", "surrogateescape")}),
    ("raw bytes", {"baggage": b"tenant=acme,\xff=\xfe"}),
    ("not a string", {"baggage": 12345}),
    ("a list of headers", {"baggage": ["tenant=acme", "user.id=victim"]}),
    ("an empty list", {"baggage": []}),
    ("None", {"baggage": None}),
    ("NUL and control characters", {"baggage": "tenant=acme\x00,user.id=\r\nvictim"}),
]


@pytest.mark.parametrize("accept", ["none", "all"])
@pytest.mark.parametrize("carrier", [c for _, c in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_inbound_baggage_never_raises(carrier: Mapping[str, object], accept: str) -> None:
    propagator = UseCaseBaggagePropagator(accept_inbound=accept)
    start = baggage.set_baggage("kept", "yes", Context())
    ctx = propagator.extract(carrier, start)
    got = dict(baggage.get_all(ctx))
    assert got["kept"] == "yes"
    if accept == "none":
        assert not set(got) & set(attr.ALL_KEYS)
    else:
        # whatever got through is valid by our rules for inbound values
        for key in set(got) & set(attr.ALL_KEYS):
            assert clean_inbound(key, got[key]) == (got[key], None)


def test_too_many_entries_keeps_the_first_ones() -> None:
    carrier = {"baggage": "tenant=acme," + ",".join(f"k{i}=v" for i in range(300))}
    got = dict(baggage.get_all(UseCaseBaggagePropagator().extract(carrier, Context())))
    assert got["tenant"] == "acme" and len(got) == 180


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
        st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.lists(
            st.tuples(
                st.sampled_from([*attr.ALL_KEYS, "tenant", "user%2Eid", "", " "]),
                st.text(max_size=40),
            ),
            max_size=10,
        ).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    ),
    accept=st.sampled_from(["none", "all", "user.id"]),
)
def test_fuzzed_inbound_baggage_never_raises(header: str, accept: str) -> None:
    propagator = UseCaseBaggagePropagator(accept_inbound=accept)
    got = dict(baggage.get_all(propagator.extract({"baggage": header}, Context())))
    assert set(got) & set(attr.ALL_KEYS) <= propagator.accept_inbound


def test_non_utf8_bytes_over_a_real_socket(
    use_propagator: Callable[[TextMapPropagator], None], edge: tuple[Edge, str]
) -> None:
    service, url = edge
    use_propagator(UseCaseBaggagePropagator())
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    request = (
        b"GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n"
        b"baggage: tenant=acme,user.id=\xff\xfe\x80victim,usecase.id=run\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
    (seen,) = service.seen
    assert seen.scope is None and seen.baggage == {"tenant": "acme"}


# --- hostile headers: bounded work, bounded logs --------------------------------------------

MEGABYTE_HEADER = "tenant=acme,big=" + "v" * 1_000_000
INVALID_180 = ",".join(f"bad key {i}=1" for i in range(180)) + ",tenant=acme"


def _sdk_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("opentelemetry.baggage")]


def _our_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otel_usecase"]


def test_the_standard_propagator_logs_a_hostile_header_whole(caplog: pytest.LogCaptureFixture) -> None:
    """Why ours screens headers: the SDK's propagator logs a 1 MB header, and one line per bad member."""
    with caplog.at_level(logging.WARNING):
        W3CBaggagePropagator().extract({"baggage": MEGABYTE_HEADER}, Context())
        W3CBaggagePropagator().extract({"baggage": INVALID_180}, Context())
    assert max(len(r.getMessage()) for r in _sdk_records(caplog)) > 1_000_000
    assert len(_sdk_records(caplog)) == 1 + 180 + 1  # the header; each bad member; "tenant" is the 181st


def test_a_megabyte_header_is_ignored_with_one_short_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    propagator = UseCaseBaggagePropagator()
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            ctx = propagator.extract({"baggage": MEGABYTE_HEADER}, Context())
            assert dict(baggage.get_all(ctx)) == {}  # over 8192 bytes: ignored whole, like the SDK does
    assert _sdk_records(caplog) == []
    (line,) = _our_records(caplog)
    assert "over the W3C limit of 8192" in line.getMessage() and len(line.getMessage()) < 300


def test_180_invalid_members_give_one_line_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    propagator = UseCaseBaggagePropagator()
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            ctx = propagator.extract({"baggage": INVALID_180 + ",noequals,caf\u00e9=1"}, Context())
            assert dict(baggage.get_all(ctx)) == {"tenant": "acme"}
    assert _sdk_records(caplog) == []
    messages = sorted(r.getMessage() for r in _our_records(caplog))
    assert len(messages) == 3, messages  # invalid grammar, not key=value, non-ASCII: once each
    (invalid,) = [m for m in messages if "grammar" in m]
    assert invalid.startswith("otel_usecase ignored 180 inbound baggage item(s)") and "'bad key 0'" in invalid
    assert all(len(m) < 300 for m in messages)


def test_only_the_first_180_members_are_kept_and_a_long_key_is_shown_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    long_key = "k" * 4000
    header = ",".join(f"m{i}=v" for i in range(200)) + f",{long_key}=v"
    with caplog.at_level(logging.WARNING):
        got = dict(baggage.get_all(UseCaseBaggagePropagator().extract({"baggage": header}, Context())))
    assert list(got) == [f"m{i}" for i in range(180)]
    (line,) = _our_records(caplog)
    assert "ignored 21 inbound baggage item(s): members beyond the first 180" in line.getMessage()
    assert _sdk_records(caplog) == []


def test_hostile_headers_over_a_real_http_server(
    use_propagator: Callable[[TextMapPropagator], None],
    edge: tuple[Edge, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 60 kB header (http.server takes lines up to 64 kB) and 180 bad members, 10 requests each."""
    service, url = edge
    use_propagator(UseCaseBaggagePropagator())
    with caplog.at_level(logging.WARNING):
        for _ in range(10):
            send_baggage(url, "tenant=acme,big=" + "v" * 60_000)
            send_baggage(url, INVALID_180)
    assert [seen.baggage for seen in service.seen] == [{}, {"tenant": "acme"}] * 10
    assert _sdk_records(caplog) == []
    assert len(_our_records(caplog)) == 2


def test_sdk_baggage_member_check_is_still_there() -> None:
    """The one SDK-private read of the propagator (``_baggage.is_valid_member``); fails loudly if it moves."""
    from opentelemetry import baggage as sdk_baggage

    from otel_usecase.scope import _baggage, propagation

    assert _baggage.is_valid_member is getattr(sdk_baggage, "_is_valid_pair", None)
    assert _baggage.is_valid_member("tenant", "acme;prop=1")
    assert not _baggage.is_valid_member("bad key", "1")
    sdk = W3CBaggagePropagator
    assert (propagation.MAX_HEADER_BYTES, propagation.MAX_MEMBERS, propagation.MAX_MEMBER_BYTES) == (
        sdk._MAX_HEADER_LENGTH,
        sdk._MAX_PAIRS,
        sdk._MAX_PAIR_LENGTH,
    )


# --- settings ------------------------------------------------------------------------------


def test_defaults() -> None:
    propagator = UseCaseBaggagePropagator()
    assert propagator.accept_inbound == DEFAULT_INBOUND_KEYS == frozenset()
    assert (
        propagator.send_outbound
        == DEFAULT_OUTBOUND_KEYS
        == frozenset((*attr.ALL_KEYS, attr.TAG_KEYS)) - {attr.USER_ID}
    )
    assert propagator.fields == {"baggage"}


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("all", {*attr.ALL_KEYS, attr.TAG_KEYS}),
        (" ALL ", {*attr.ALL_KEYS, attr.TAG_KEYS}),
        ("None", set()),
        ("usecase.id, User.Id ,", {attr.USE_CASE_ID, attr.USER_ID}),
        ([attr.EXPERIENCE_ID], {attr.EXPERIENCE_ID}),
        ((), set()),
    ],
)
def test_parse_keys(spec: Any, keys: set[str]) -> None:
    assert parse_keys(spec) == keys


@pytest.mark.parametrize("spec", ["", " , ", "tenant", "usecase.id,userid", ["all"]])
def test_bad_argument_raises(spec: Any) -> None:
    with pytest.raises(ValueError):
        UseCaseBaggagePropagator(accept_inbound=spec)
    with pytest.raises(ValueError):
        UseCaseBaggagePropagator(send_outbound=spec)


def test_bad_env_values_warn_and_fall_back_to_the_defaults(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_INBOUND_KEYS, "usecase.id,tenant")
    monkeypatch.setenv(ENV_OUTBOUND_KEYS, "everything")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        propagator = UseCaseBaggagePropagator()
    assert propagator.accept_inbound == DEFAULT_INBOUND_KEYS
    assert propagator.send_outbound == DEFAULT_OUTBOUND_KEYS
    assert ENV_INBOUND_KEYS in caplog.text and "'tenant'" in caplog.text
    assert ENV_OUTBOUND_KEYS in caplog.text and "'everything'" in caplog.text


def test_warns_when_listed_next_to_the_standard_baggage_propagator(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage,usecase_baggage")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        UseCaseBaggagePropagator()
    assert "instead of baggage" in caplog.text


def test_inject_never_raises() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    carrier: dict[str, str] = {}
    ctx = baggage.set_baggage("odd", Broken(), Context())
    UseCaseBaggagePropagator().inject(carrier, ctx)
    assert carrier == {}


# --- the entry point -----------------------------------------------------------------------


def _entry_point_registered() -> bool:
    return any(ep.name == ENTRY_POINT_NAME for ep in entry_points(group="opentelemetry_propagator"))


_ENTRY_POINT_SCRIPT = """
import json
from opentelemetry import baggage, propagate
from opentelemetry.context import Context
from otel_usecase import track_context
textmap = propagate.get_global_textmap()
names = [type(p).__name__ for p in textmap._propagators]
ctx = propagate.extract({"baggage": "user.id=victim,usecase.id=run,tenant=acme"}, Context())
extracted = dict(baggage.get_all(ctx))
with track_context("support_chat", user_id="u-42"):
    headers = {}
    propagate.inject(headers)
print(json.dumps({"names": names, "extracted": extracted, "injected": headers.get("baggage", "")}))
"""


@pytest.mark.skipif(
    not _entry_point_registered(),
    reason="the opentelemetry_propagator entry point usecase_baggage is not registered yet: add "
    '`usecase_baggage = "otel_usecase.scope.propagation:UseCaseBaggagePropagator"` under '
    "[project.entry-points.opentelemetry_propagator] in pyproject.toml and reinstall (pip install -e .)",
)
@pytest.mark.parametrize(
    ("inbound", "accepted"),
    [(None, {"tenant": "acme"}), ("all", {"tenant": "acme", "user.id": "victim", "usecase.id": "run"})],
)
def test_otel_propagators_env_loads_usecase_baggage(inbound: str | None, accepted: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_PROPAGATORS"] = f"tracecontext,{ENTRY_POINT_NAME}"
    if inbound is not None:
        env[ENV_INBOUND_KEYS] = inbound
    result = subprocess.run(
        [sys.executable, "-c", _ENTRY_POINT_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["names"] == ["TraceContextTextMapPropagator", "UseCaseBaggagePropagator"]
    assert out["extracted"] == accepted
    injected = parse_baggage_header(out["injected"])
    assert injected[attr.USE_CASE_NAME] == "support_chat" and attr.USER_ID not in injected
