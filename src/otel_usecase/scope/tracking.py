"""Scopes: which use case, run, experience and user the current work belongs to, and its tags.

A scope is entered with :func:`track_context` (a context manager) or :func:`track`
(a decorator). Its resolved values are written into W3C baggage, so they follow
the work through ``await``, into threads started with ``contextvars.copy_context()``
(or any thread and thread pool once :func:`otel_usecase.propagate_context_to_threads`
ran, which ``opentelemetry-instrument`` does) and, through the standard ``baggage``
propagator, into other services. The span processor reads them back from the
baggage of each LLM span's parent context.

Names are code and ids are data (see :mod:`otel_usecase.scope.validation`): a bad
name raises where the scope is created, an id is normalised and warned about.
One ``track_context(...)`` object may be entered by many threads and tasks at
once and re-entered in one of them: each entry keeps its own detach token in a
``ContextVar`` stack, so entries never see each other's tokens.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from .. import config
from .._log import logger, warn_rate_limited
from ..cost.call import NO_TAGS
from . import keys as attr
from ._baggage import BAGGAGE_KEY, baggage_of
from .privacy import user_id_for_telemetry
from .validation import (
    UseCaseWarning,
    accept_inbound,
    bounded_tags,
    check_name,
    experience_guid,
    inbound_tags,
    log_experience_derivation,
    new_guid,
    normalised_id,
    scope_id,
    scope_tags,
)

__all__ = [
    "Scope",
    "UseCaseWarning",
    "current_scope",
    "set_default_use_case",
    "track",
    "track_context",
]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Scope:
    """The values that apply inside a scope, after inheritance and id generation."""

    use_case_name: str | None = None
    use_case_id: str | None = None
    use_case_version: str | None = None
    use_case_step: str | None = None
    experience_name: str | None = None
    experience_id: str | None = None
    user_id: str | None = None
    experience_id_original: str | None = None
    """The experience id as given, when ``experience_id`` is not that value (a derived GUID)."""
    experience_version: str | None = None
    """The version of the experience (``track_context(experience_version="v2")``); inherited only by scopes
    of the same experience name."""
    tags: Mapping[str, str] = field(default_factory=lambda: NO_TAGS, hash=False)
    """The scope's tags (``track_context(tags={"tenant": "acme"})``), with the enclosing scopes': at most
    :data:`~otel_usecase.scope.keys.MAX_TAGS`. Travel as baggage ``usecase.tag.<key>``."""

    @property
    def remaining_usd(self) -> float | None:
        """What the tightest budget selecting this scope has left in its current window, in USD.

        ``None`` when no budget selects it (or no spend tracker runs); 0 when one
        is exhausted. The answer :func:`otel_usecase.check_budget` gives, read from
        memory (no I/O), without raising.
        """
        remaining = _budget_remaining
        if remaining is None:
            return None
        return remaining(self)[0]

    def attributes(self) -> dict[str, str]:
        """The set values keyed by their baggage / span attribute names (a tag under ``usecase.tag.<key>``)."""
        values = {
            key: value
            for key, value in zip(attr.ALL_KEYS, (getattr(self, f.name) for f in _KEYED_FIELDS))
            if value is not None
        }
        for key, value in self.tags.items():
            values[attr.TAG_PREFIX + key] = value
        return values

    def span_attributes(self) -> dict[str, str]:
        """What the span processor stamps on an LLM span of this scope: :meth:`attributes`, and with tags
        their keys under ``usecase.tags`` (:data:`~otel_usecase.scope.keys.TAG_NAMES`)."""
        values = self.attributes()
        if self.tags:
            values[attr.TAG_NAMES] = ",".join(sorted(self.tags))
        return values

    @classmethod
    def from_attributes(cls, values: Mapping[str, str], tags: Mapping[str, str] = NO_TAGS) -> Scope:
        """Build a scope from a mapping keyed by baggage / span attribute names, and its ``tags``."""
        return cls(**{f.name: values.get(key) for f, key in zip(_KEYED_FIELDS, attr.ALL_KEYS)}, tags=tags)


_KEYED_FIELDS: Final = fields(Scope)[: len(attr.ALL_KEYS)]
"""The fields of :class:`Scope` that are one key each, in the order of :data:`~.keys.ALL_KEYS`."""


SCOPE_KEY: Final = otel_context.create_key("otel_usecase.scope.tracking")
"""Context key of the local scope, stored as ``(scope, baggage dict it wrote, its span attributes)``.

Keeping them together lets us tell a scope entered in this process (whose rules,
such as the fixed user of a run, are enforced, and whose values are already
valid) from values that arrived from another service as baggage (which are
untrusted and validated before use). The span processor uses the attributes as
they are, so a new scope per request costs no validation on the span path.
"""


def _inbound_scope(bag: Mapping[str, object]) -> Scope | None:
    """Our values from a baggage mapping, by the rules a local scope follows.

    Bad names are dropped and ids normalised (with a rate-limited log), and an
    experience id that is not a GUID is derived exactly as a local scope derives
    it, so that the receiving service never splits a run or a session.
    """
    values: dict[str, str] = {}
    for key in attr.ALL_KEYS:
        raw = bag.get(key)
        if raw is None:
            continue
        value = accept_inbound(key, raw)
        if value is not None:
            values[key] = value
    tags = inbound_tags(bag)
    given = values.get(attr.EXPERIENCE_ID) or values.get(attr.EXPERIENCE_ID_ORIGINAL)
    if given is not None:
        stored = experience_guid(given)
        values[attr.EXPERIENCE_ID] = stored
        if stored != given:
            values.setdefault(attr.EXPERIENCE_ID_ORIGINAL, given)
    return (
        Scope.from_attributes(values, MappingProxyType(tags) if tags else NO_TAGS) if values or tags else None
    )


def _enclosing(ctx: Context) -> tuple[Scope | None, bool]:
    """The scope that applies in ``ctx`` and whether it was entered in this process."""
    bag = ctx.get(BAGGAGE_KEY)
    entry = ctx.get(SCOPE_KEY)
    if isinstance(entry, tuple) and entry[1] is bag:
        return cast(Scope, entry[0]), True
    if not isinstance(bag, dict) or not bag:
        return None, False
    return _inbound_scope(bag), False


# --- budgets: set by otel_usecase.budgets.registry when a spend tracker runs -------------------

_budget_check: Callable[[Scope], None] | None = None
"""Raises ``BudgetExceeded`` for an exhausted ``block`` budget selecting a scope; None: no tracker runs
(then a scope entry costs one global read more than before budgets existed)."""
_budget_remaining: Callable[[Scope], tuple[float | None, Exception | None]] | None = None
"""The remaining USD of the tightest budget selecting a scope, and the exhausted block budget's exception."""


# --- process-wide default use case -------------------------------------------------------

_default_attributes: dict[str, str] | None = None
_default_set_in_code = False


def set_default_use_case(name: str | None, *, use_case_id: str | None = None) -> None:
    """Attribute LLM spans outside any scope to use case ``name`` (``None`` clears it).

    Without ``use_case_id`` each trace of such calls counts as its own run. A
    scope always wins over the default. Overrides ``OTEL_USECASE_DEFAULT_NAME``.
    """
    global _default_attributes, _default_set_in_code
    if name is None:
        _default_attributes = None
    else:
        values = {attr.USE_CASE_NAME: check_name("use_case_name", name)}
        run_id = None if use_case_id is None else scope_id("use_case_id", use_case_id)
        if run_id is not None:
            values[attr.USE_CASE_ID] = run_id
        _default_attributes = values
    _default_set_in_code = True


def load_default_from_env() -> None:
    """Take ``OTEL_USECASE_DEFAULT_NAME`` unless a default was set in code."""
    global _default_attributes
    if _default_set_in_code:
        return
    name = config.DEFAULT_NAME.read()
    if name is None:
        _default_attributes = None
        return
    try:
        _default_attributes = {attr.USE_CASE_NAME: check_name(config.ENV_DEFAULT_NAME, name)}
    except ValueError as exc:
        logger.warning("ignoring the default use case: %s", exc)
        _default_attributes = None


def default_attributes() -> dict[str, str] | None:
    """The attributes of the default use case, or ``None``."""
    return _default_attributes


load_default_from_env()


def current_scope() -> Scope | None:
    """What applies here: the innermost scope, or values from upstream baggage.

    Outside any scope this is the default use case (``set_default_use_case``) if
    one is set, else ``None``.
    """
    scope, _ = _enclosing(otel_context.get_current())
    if scope is None and _default_attributes is not None:
        return Scope.from_attributes(_default_attributes)
    return scope


# --- resolution ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    """The keywords a scope was opened with, checked but not yet resolved."""

    use_case_name: str | None
    use_case_id: str | None
    use_case_version: str | None
    use_case_step: str | None
    experience_name: str | None
    experience_id: str | None
    user_id: str | None
    experience_id_original: str | None
    experience_version: str | None
    tags: Mapping[str, str]

    @classmethod
    def checked(
        cls,
        use_case_name: str | None,
        use_case_id: object,
        use_case_version: object,
        use_case_step: str | None,
        experience_name: str | None,
        experience_id: object,
        user_id: object,
        tags: object = None,
        experience_version: object = None,
    ) -> _Request:
        """Names checked (they raise), ids normalised (they never raise on content); tag keys are names,
        tag values ids."""
        given_experience = None if experience_id is None else scope_id("experience_id", experience_id)
        stored_experience = None if given_experience is None else experience_guid(given_experience)
        if given_experience is not None and stored_experience != given_experience:
            log_experience_derivation(given_experience, cast(str, stored_experience))
        return cls(
            use_case_name=None if use_case_name is None else check_name("use_case_name", use_case_name),
            use_case_id=None if use_case_id is None else scope_id("use_case_id", use_case_id),
            use_case_version=(
                None if use_case_version is None else scope_id("use_case_version", use_case_version)
            ),
            use_case_step=None if use_case_step is None else check_name("use_case_step", use_case_step),
            experience_name=(
                None if experience_name is None else check_name("experience_name", experience_name)
            ),
            experience_id=stored_experience,
            user_id=None if user_id is None else scope_id("user_id", user_id),
            experience_id_original=given_experience if given_experience != stored_experience else None,
            experience_version=(
                None if experience_version is None else scope_id("experience_version", experience_version)
            ),
            tags=NO_TAGS if tags is None else (MappingProxyType(scope_tags(tags)) or NO_TAGS),
        )


def stored_user_id(given: str) -> str | None:
    """The stored form of a user id given to a scope (or a budget, or a report filter): hashed when hashing
    is on, else storable as it is, so the same raw id selects the same rows everywhere.

    ``None`` when user ids are dropped (an HMAC key in the environment that is too short).
    """
    hashed = user_id_for_telemetry(given)
    if hashed is None:
        return None
    # Not hashed: normalise (a no-op for a valid id), in case hashing was turned off between
    # the scope's creation, where the id was checked, and this entry.
    return hashed if hashed != given else normalised_id(given)


def _resolve(req: _Request, outer: Scope | None, outer_is_local: bool) -> Scope:
    """Apply the nesting rules: inherit what is not set, join or start instances."""
    outer = outer or Scope()

    name = req.use_case_name if req.use_case_name is not None else outer.use_case_name
    same_use_case = req.use_case_name is None or req.use_case_name == outer.use_case_name
    use_case_id = req.use_case_id
    if use_case_id is None and same_use_case:
        use_case_id = outer.use_case_id  # join the enclosing run
    if use_case_id is None and name is not None:
        use_case_id = new_guid()  # a new run
    # Version and step describe the enclosing use case; a different use case starts without them.
    version = req.use_case_version or (outer.use_case_version if same_use_case else None)
    step = req.use_case_step or (outer.use_case_step if same_use_case else None)

    exp_name = req.experience_name if req.experience_name is not None else outer.experience_name
    exp_id, exp_original = req.experience_id, req.experience_id_original
    same_experience = req.experience_name is None or req.experience_name == outer.experience_name
    if exp_id is None and same_experience:
        exp_id, exp_original = outer.experience_id, outer.experience_id_original
    # The version belongs to the experience: another experience starts without it.
    exp_version = req.experience_version or (outer.experience_version if same_experience else None)
    if exp_id is None and exp_name is not None:
        exp_id = new_guid()

    # Hashed when OTEL_USECASE_USER_ID_HMAC_KEY is set, before the comparison below and before it
    # reaches the Scope and the baggage, so the raw id never leaves the process (idempotent).
    user_id = None if req.user_id is None else stored_user_id(req.user_id)
    if user_id is not None and outer.user_id is not None and user_id != outer.user_id:
        if outer_is_local:
            raise ValueError(
                f"user_id={user_id!r} would change the user of the enclosing scope "
                f"(user_id={outer.user_id!r}): the user of a run is fixed"
            )
        logger.debug("local user_id %r replaces user_id %r from upstream baggage", user_id, outer.user_id)
    if user_id is None:
        user_id = outer.user_id

    tags = bounded_tags(outer.tags, req.tags)
    return Scope(name, use_case_id, version, step, exp_name, exp_id, user_id, exp_original, exp_version, tags)


def _scope_context(req: _Request, parent: Context | None = None) -> tuple[Scope, Context]:
    """Resolve ``req`` in ``parent`` (default: current) and build the context to attach."""
    ctx = parent if parent is not None else otel_context.get_current()
    outer, outer_is_local = _enclosing(ctx)
    scope = _resolve(req, outer, outer_is_local)
    values = scope.attributes()
    stamped = scope.span_attributes() if scope.tags else values
    if outer_is_local and outer is not None and not outer.tags:
        # A local scope without tags wrote a baggage dict without tag entries: no prefix test per entry.
        bag = {k: v for k, v in baggage_of(ctx).items() if k not in attr.ALL_KEYS}
    else:  # upstream tags (accepted ones are in scope.tags, refused ones must not travel on) or ours
        bag = {
            k: v
            for k, v in baggage_of(ctx).items()
            if k not in attr.ALL_KEYS and not k.startswith(attr.TAG_PREFIX)
        }
    bag.update(values)
    ctx = otel_context.set_value(BAGGAGE_KEY, bag, ctx)
    ctx = otel_context.set_value(SCOPE_KEY, (scope, bag, stamped), ctx)
    return scope, ctx


# --- context manager and decorator -------------------------------------------------------


_ENTERED: Final[ContextVar[tuple[tuple[object, object], ...]]] = ContextVar(
    "otel_usecase.entered_scopes", default=()
)
"""The ``(manager, detach token)`` of each scope entered and not yet exited, innermost last.

A ``ContextVar``, so each thread and each asyncio task has its own stack: one
manager entered concurrently by five threads, or re-entered in one of them,
detaches exactly the token its own entry attached, in the context that made it.
"""


class _ScopeManager:
    """Enters a new scope on each ``with``; reusable and re-entrant across threads and tasks.

    Also usable as a decorator. Holds no per-entry state itself: each entry's
    token lives in :data:`_ENTERED`, like ``contextlib.ContextDecorator`` users expect.
    """

    __slots__ = ("_req",)

    def __init__(self, req: _Request) -> None:
        self._req = req

    def __enter__(self) -> Scope:
        scope, ctx = _scope_context(self._req)
        check = _budget_check
        if check is not None:
            check(scope)  # an exhausted block budget raises BudgetExceeded here, before anything is attached
        token = otel_context.attach(ctx)
        _ENTERED.set((*_ENTERED.get(), (self, token)))
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entered = _ENTERED.get()
        for i in range(len(entered) - 1, -1, -1):
            if entered[i][0] is self:
                _ENTERED.set(entered[:i] + entered[i + 1 :])
                otel_context.detach(entered[i][1])  # type: ignore[arg-type]
                return
        warn_rate_limited(
            "scope:exit",
            "otel_usecase: a scope was exited in a thread or task that did not enter it; "
            "left the context as it is",
        )

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: _F) -> _F:
        return _decorate(func, self._req)


def track_context(
    use_case_name: str | None = None,
    *,
    use_case_id: str | None = None,
    use_case_version: str | None = None,
    use_case_step: str | None = None,
    experience_name: str | None = None,
    experience_id: str | None = None,
    experience_version: str | None = None,
    user_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> _ScopeManager:
    """Open a scope: ``with track_context("summarize", user_id=uid) as scope: ...``.

    Yields the resolved :class:`Scope`. Fields not given are inherited from the
    enclosing scope (or upstream baggage). Without ``use_case_id`` a new run id is
    generated on each entry, unless the enclosing scope has the same use case
    name, in which case its run is joined. Invalid names raise ``ValueError``;
    ids never raise on their content (they are normalised with a
    :class:`UseCaseWarning`, see :mod:`otel_usecase.scope.validation`). The object can
    be kept and entered by many threads and tasks at once.

    ``experience_version`` is the version of the experience (``"v2"``), an id like
    ``use_case_version``; like it, it is inherited only by inner scopes of the same
    experience name (a scope that names another experience starts without one).

    ``tags`` are a few custom properties of the work (``{"tenant": "acme", "team":
    "search"}``): keys are names (a bad one raises), values ids; the enclosing
    scope's tags are inherited (the same key is overridden), at most
    :data:`~otel_usecase.scope.keys.MAX_TAGS` in all (more are dropped with a warning).
    """
    return _ScopeManager(
        _Request.checked(
            use_case_name,
            use_case_id,
            use_case_version,
            use_case_step,
            experience_name,
            experience_id,
            user_id,
            tags,
            experience_version,
        )
    )


@overload
def track(use_case_name: _F, /) -> _F: ...
@overload
def track(
    use_case_name: str | None = None,
    *,
    use_case_id: str | None = None,
    use_case_version: str | None = None,
    use_case_step: str | None = None,
    experience_name: str | None = None,
    experience_id: str | None = None,
    experience_version: str | None = None,
    user_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Callable[[_F], _F]: ...
def track(
    use_case_name: Any = None,
    *,
    use_case_id: str | None = None,
    use_case_version: str | None = None,
    use_case_step: str | None = None,
    experience_name: str | None = None,
    experience_id: str | None = None,
    experience_version: str | None = None,
    user_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Decorate a function so that every call runs in a new scope.

    Works for plain, ``async``, generator and async-generator functions. Each
    call resolves its own scope (a fresh run id unless it joins an enclosing run
    of the same use case). Generators run every step inside the scope and leave
    the caller's context untouched between steps. ``@track`` without arguments
    is the same as ``@track()``.
    """
    if callable(use_case_name):
        return _decorate(use_case_name, _Request.checked(None, None, None, None, None, None, None))
    req = _Request.checked(
        use_case_name,
        use_case_id,
        use_case_version,
        use_case_step,
        experience_name,
        experience_id,
        user_id,
        tags,
        experience_version,
    )
    return functools.partial(_decorate, req=req)


def _checked(req: _Request) -> Context:
    """The context of a new scope for ``req``, after the budget check (which may raise ``BudgetExceeded``)."""
    scope, ctx = _scope_context(req)
    check = _budget_check
    if check is not None:
        check(scope)
    return ctx


def _decorate(func: _F, req: _Request) -> _F:
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            return _scoped_async_generator(func(*args, **kwargs), _checked(req))

        return cast(_F, agen_wrapper)

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            return _scoped_generator(func(*args, **kwargs), _checked(req))

        return cast(_F, gen_wrapper)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            token = otel_context.attach(_checked(req))
            try:
                return await func(*args, **kwargs)
            finally:
                otel_context.detach(token)

        return cast(_F, async_wrapper)

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(_checked(req))
        try:
            return func(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return cast(_F, sync_wrapper)


def _scoped_generator(gen: Generator[Any, Any, Any], ctx: Context) -> Generator[Any, Any, Any]:
    """Run each step of ``gen`` inside ``ctx``; the caller's context is restored between steps."""
    send: Any = None
    thrown: BaseException | None = None
    while True:
        token = otel_context.attach(ctx)
        try:
            item = gen.send(send) if thrown is None else gen.throw(thrown)
        except StopIteration as stop:
            return stop.value
        finally:
            otel_context.detach(token)
            thrown = None
        try:
            send = yield item
        except GeneratorExit:
            token = otel_context.attach(ctx)
            try:
                gen.close()
            finally:
                otel_context.detach(token)
            raise
        except BaseException as exc:  # re-raised inside the wrapped generator
            thrown = exc


async def _scoped_async_generator(agen: AsyncGenerator[Any, Any], ctx: Context) -> AsyncGenerator[Any, Any]:
    """The async twin of :func:`_scoped_generator`."""
    send: Any = None
    thrown: BaseException | None = None
    while True:
        token = otel_context.attach(ctx)
        try:
            item = await (agen.asend(send) if thrown is None else agen.athrow(thrown))
        except StopAsyncIteration:
            return
        finally:
            otel_context.detach(token)
            thrown = None
        try:
            send = yield item
        except GeneratorExit:
            token = otel_context.attach(ctx)
            try:
                await agen.aclose()
            finally:
                otel_context.detach(token)
            raise
        except BaseException as exc:
            thrown = exc
