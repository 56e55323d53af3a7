"""Scopes: names, ids, nesting, users, baggage, and the decorator forms."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid

import pytest
from opentelemetry import baggage, context

from otel_usecase import (
    Scope,
    UseCaseWarning,
    current_scope,
    set_default_use_case,
    track,
    track_context,
)
from otel_usecase.scope import keys as attr
from otel_usecase.scope import validation


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    validation.reset_warnings()  # each test sees its own once-per-value warnings


def is_uuid(value: str | None) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["document_summarization", "a", "A.b-c_9", "x" * 64, "CaseSensitive"])
def test_valid_names_are_accepted(name: str) -> None:
    with track_context(name, experience_name=name) as scope:
        assert scope.use_case_name == name
        assert scope.experience_name == name


@pytest.mark.parametrize(
    "name", ["has space", "", "x" * 65, "slash/name", "tab\tname", "émoji", "semi;colon"]
)
def test_invalid_use_case_name_raises_with_value_and_rule(name: str) -> None:
    with pytest.raises(ValueError) as info:
        track_context(name)
    message = str(info.value)
    assert repr(name) in message
    assert "64 characters" in message and "letters, digits" in message


def test_invalid_experience_name_raises() -> None:
    with pytest.raises(ValueError, match="experience_name='support chat'"):
        track_context("x", experience_name="support chat")


def test_names_are_case_sensitive() -> None:
    with track_context("Chat") as outer, track_context("chat") as inner:
        assert inner.use_case_id != outer.use_case_id


# --- instance ids ------------------------------------------------------------------------


def test_each_entry_is_a_new_instance() -> None:
    manager = track_context("summarize")
    with manager as first:
        pass
    with manager as second:
        pass
    assert is_uuid(first.use_case_id) and is_uuid(second.use_case_id)
    assert first.use_case_id != second.use_case_id


def test_explicit_id_is_used_as_is() -> None:
    with track_context("ticket_triage", use_case_id="JIRA-1234 / web session") as scope:
        assert scope.use_case_id == "JIRA-1234 / web session"


def test_integer_id_is_accepted_as_string() -> None:
    with track_context("ticket_triage", use_case_id=4711) as scope:  # type: ignore[arg-type]
        assert scope.use_case_id == "4711"


@pytest.mark.parametrize("bad", [3.5, ["a"], True])
def test_id_of_the_wrong_type_is_a_code_error_and_raises(bad: object) -> None:
    # Content of an id is data (tests/test_ids.py); its type is the code's choice.
    with pytest.raises(TypeError, match="use_case_id=.*ids are strings"):
        track_context("x", use_case_id=bad)  # type: ignore[arg-type]


def test_id_of_256_characters_is_accepted() -> None:
    with track_context("x", use_case_id="i" * 256, user_id="u" * 256) as scope:
        assert scope.use_case_id == "i" * 256 and scope.user_id == "u" * 256


def test_experience_name_without_id_gets_a_guid() -> None:
    with track_context("x", experience_name="support_chat") as scope:
        assert is_uuid(scope.experience_id)


def test_explicit_guid_experience_id_is_kept() -> None:
    guid = str(uuid.uuid4())
    with track_context("x", experience_name="chat", experience_id=guid) as scope:
        assert scope.experience_id == guid


def test_session_id_as_experience_id_is_one_experience_on_every_request() -> None:
    # More in tests/test_ids.py; here: no warning (normal data), the same GUID each time.
    with track_context("x", experience_name="chat", experience_id="conversation-7") as first:
        assert is_uuid(first.experience_id)
        assert baggage.get_baggage(attr.EXPERIENCE_ID) == first.experience_id
        assert baggage.get_baggage(attr.EXPERIENCE_ID_ORIGINAL) == "conversation-7"
    with track_context("x", experience_name="chat", experience_id="conversation-7") as second:
        assert second.experience_id == first.experience_id


# --- nesting -----------------------------------------------------------------------------


def test_inner_scope_inherits_unset_fields() -> None:
    exp = str(uuid.uuid4())
    with (
        track_context(
            "summarize", use_case_version="v2", experience_name="chat", experience_id=exp, user_id="u-1"
        ) as outer,
        track_context(use_case_step="retrieve") as inner,
    ):
        assert inner == Scope("summarize", outer.use_case_id, "v2", "retrieve", "chat", exp, "u-1")


def test_same_name_without_id_joins_the_outer_run() -> None:
    @track("document_chatbot")
    def helper() -> Scope | None:
        return current_scope()

    with track_context("document_chatbot") as outer:
        assert helper().use_case_id == outer.use_case_id  # type: ignore[union-attr]


def test_different_name_starts_a_new_run_but_keeps_experience_and_user() -> None:
    with track_context("chatbot", experience_name="chat", user_id="u", use_case_step="s") as outer:
        with track_context("retrieval") as inner:
            assert inner.use_case_id != outer.use_case_id
            assert (inner.experience_id, inner.user_id) == (outer.experience_id, outer.user_id)
            assert inner.use_case_step is None  # a step belongs to the enclosing use case


def test_same_name_with_explicit_id_is_a_new_instance() -> None:
    with track_context("triage") as outer, track_context("triage", use_case_id="T-2") as inner:
        assert inner.use_case_id == "T-2" != outer.use_case_id


def test_step_does_not_start_a_new_instance() -> None:
    with track_context("rag") as outer:
        with track_context(use_case_step="retrieve") as a:
            pass
        with track_context("rag", use_case_step="summarize") as b:
            pass
    assert a.use_case_id == b.use_case_id == outer.use_case_id
    assert (a.use_case_step, b.use_case_step) == ("retrieve", "summarize")


def test_experience_same_name_joins_and_new_name_gets_new_guid() -> None:
    with track_context("a", experience_name="chat") as outer:
        with track_context("b", experience_name="chat") as same:
            assert same.experience_id == outer.experience_id
        with track_context("c", experience_name="onboarding") as other:
            assert other.experience_id != outer.experience_id and is_uuid(other.experience_id)


# --- users -------------------------------------------------------------------------------


def test_user_cannot_change_inside_a_run() -> None:
    with track_context("a", user_id="u-1"):
        with pytest.raises(ValueError, match="user_id='u-2' would change the user.*'u-1'"):
            with track_context(use_case_step="x", user_id="u-2"):
                pass
        with track_context(use_case_step="x", user_id="u-1") as same:
            assert same.user_id == "u-1"


def test_user_set_in_inner_scope_when_outer_has_none() -> None:
    with track_context("a") as outer, track_context(user_id="late") as inner:
        assert outer.user_id is None and inner.user_id == "late"


# --- baggage and context restoration -----------------------------------------------------


def test_values_are_written_to_baggage_and_other_entries_kept() -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with track_context("summarize", user_id="u-9", experience_name="chat") as scope:
            entries = baggage.get_all()
            assert entries["tenant"] == "acme"
            assert entries[attr.USE_CASE_NAME] == "summarize"
            assert entries[attr.USE_CASE_ID] == scope.use_case_id
            assert entries[attr.USER_ID] == "u-9"
            assert entries[attr.EXPERIENCE_ID] == scope.experience_id
        assert dict(baggage.get_all()) == {"tenant": "acme"}
    finally:
        context.detach(token)


def test_context_is_restored_on_exception() -> None:
    before = context.get_current()
    with pytest.raises(RuntimeError), track_context("boom"):
        raise RuntimeError("x")
    assert context.get_current() is before
    assert current_scope() is None


def test_current_scope_reads_upstream_baggage() -> None:
    ctx = baggage.set_baggage(attr.USE_CASE_NAME, "upstream_case")
    ctx = baggage.set_baggage(attr.USE_CASE_ID, "run-77", ctx)
    ctx = baggage.set_baggage(attr.USER_ID, "u-5", ctx)
    token = context.attach(ctx)
    try:
        assert current_scope() == Scope(use_case_name="upstream_case", use_case_id="run-77", user_id="u-5")
        with track_context(use_case_step="local") as inner:  # joins the upstream run
            assert (inner.use_case_id, inner.user_id) == ("run-77", "u-5")
    finally:
        context.detach(token)


def test_upstream_user_does_not_break_local_scope() -> None:
    """A user id that came from another service must not make a local scope raise."""
    token = context.attach(baggage.set_baggage(attr.USER_ID, "spoofed"))
    try:
        with track_context("edge", user_id="authenticated") as scope:
            assert scope.user_id == "authenticated"
            assert baggage.get_baggage(attr.USER_ID) == "authenticated"
    finally:
        context.detach(token)


def test_upstream_bad_names_are_dropped_and_ids_normalised_like_local_ones() -> None:
    ctx = baggage.set_baggage(attr.USE_CASE_NAME, "bad name with spaces")
    ctx = baggage.set_baggage(attr.USER_ID, "x" * 300, ctx)
    ctx = baggage.set_baggage(attr.EXPERIENCE_ID, "not-a-guid", ctx)
    ctx = baggage.set_baggage(attr.USE_CASE_ID, "ok-id", ctx)
    token = context.attach(ctx)
    try:
        upstream = current_scope()
    finally:
        context.detach(token)
    with pytest.warns(UseCaseWarning, match="user_id='x"):
        local = track_context(use_case_id="ok-id", user_id="x" * 300, experience_id="not-a-guid")
    with local as expected:
        pass
    assert upstream == expected
    assert upstream is not None and upstream.use_case_name is None
    assert upstream.experience_id_original == "not-a-guid"


def test_default_use_case_outside_scope() -> None:
    set_default_use_case("background_jobs")
    try:
        assert current_scope() == Scope(use_case_name="background_jobs")
        with track_context("explicit") as scope:
            assert current_scope() == scope
    finally:
        set_default_use_case(None)
    assert current_scope() is None


def test_default_use_case_name_is_validated() -> None:
    with pytest.raises(ValueError, match="'bad name'"):
        set_default_use_case("bad name")


# --- decorator forms, async and threads --------------------------------------------------


def test_decorated_function_gets_a_new_run_per_call() -> None:
    @track(use_case_name="document_chatbot", experience_name="support_chat")
    def answer() -> Scope | None:
        return current_scope()

    first, second = answer(), answer()
    assert first is not None and second is not None
    assert first.use_case_id != second.use_case_id
    assert first.experience_id != second.experience_id
    assert answer.__name__ == "answer"
    assert current_scope() is None


def test_bare_decorator() -> None:
    @track
    def f() -> Scope | None:
        return current_scope()

    with track_context("outer") as outer:
        assert f() == outer


async def test_async_function_and_concurrent_tasks() -> None:
    @track(use_case_name="document_chatbot")
    async def answer(user: str) -> Scope | None:
        with track_context(user_id=user):
            await asyncio.sleep(0.01)
            return current_scope()

    scopes = await asyncio.gather(*(answer(f"u{i}") for i in range(20)))
    assert [s.user_id for s in scopes] == [f"u{i}" for i in range(20)]  # type: ignore[union-attr]
    assert len({s.use_case_id for s in scopes}) == 20  # type: ignore[union-attr]
    assert current_scope() is None


def test_generator_function_keeps_scope_per_step_and_leaves_caller_untouched() -> None:
    @track("streaming")
    def produce() -> object:
        for _ in range(3):
            yield current_scope()

    gen = produce()
    seen = []
    for item in gen:
        assert current_scope() is None  # the caller is outside the scope between steps
        seen.append(item)
    assert len({s.use_case_id for s in seen}) == 1 and seen[0].use_case_name == "streaming"


def test_generator_send_throw_and_close() -> None:
    closed = []

    @track("echo")
    def echo() -> object:
        received = None
        try:
            while True:
                try:
                    received = yield (received, current_scope())
                except KeyError:
                    received = "caught"
        finally:
            closed.append(current_scope())

    gen = echo()
    assert next(gen)[0] is None
    assert gen.send("hi")[0] == "hi"
    assert gen.throw(KeyError("k"))[0] == "caught"
    gen.close()
    assert closed and closed[0] is not None and closed[0].use_case_name == "echo"
    assert current_scope() is None


async def test_async_generator_function() -> None:
    @track("async_stream")
    async def produce() -> object:
        for i in range(3):
            await asyncio.sleep(0)
            yield i, current_scope()

    items = []
    async for i, scope in produce():  # type: ignore[attr-defined]
        assert current_scope() is None
        items.append((i, scope))
    assert [i for i, _ in items] == [0, 1, 2]
    assert len({s.use_case_id for _, s in items}) == 1


async def test_async_with_and_await_restore_context() -> None:
    async with track_context("async_cm") as scope:
        await asyncio.sleep(0)
        assert current_scope() == scope
    assert current_scope() is None


def test_thread_given_the_context_sees_the_scope() -> None:
    result: list[Scope | None] = []
    with track_context("threaded", user_id="u-t") as scope:
        ctx = contextvars.copy_context()
        thread = threading.Thread(target=lambda: result.append(ctx.run(current_scope)))
        thread.start()
        thread.join()
    assert result == [scope]


def test_track_context_is_also_a_decorator() -> None:
    @track_context("decorated_cm")
    def f() -> Scope | None:
        return current_scope()

    a, b = f(), f()
    assert a is not None and b is not None and a.use_case_id != b.use_case_id
