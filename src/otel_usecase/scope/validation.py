"""The rules for names and ids, in one place: names are code, ids are data.

* **Names** (``use_case_name``, ``experience_name``, ``use_case_step``) are
  written by developers. A bad one is a bug in the code and raises a
  ``ValueError`` quoting the value and the rule (:func:`check_name`).
* **Ids** (``use_case_id``, ``user_id``, ``experience_id``, and
  ``use_case_version``, ``experience_version``) come from requests, sessions and tickets. They never
  raise into the application because of their content: an id that cannot be
  stored as it is (:func:`id_problem`) is replaced by a deterministic,
  storable form (:func:`normalised_id`), so the same input always lands in
  the same run, user or experience, and a :class:`UseCaseWarning` names the
  value and the rule once per distinct value (rate-limited).
  ``OTEL_USECASE_STRICT=true`` turns that repair into a ``ValueError``. A value
  of the wrong type (a float, a list) is a bug in the code, not data, and
  raises ``TypeError`` even so.
* An **experience id** is stored as a GUID (:func:`experience_guid`): a GUID
  is kept (in its canonical lowercase form), any other value (a session id
  such as ``sess_9f8a7b``) is mapped to UUIDv5 in :data:`EXPERIENCE_ID_NAMESPACE`,
  so one session is one experience on every request and in every service.

Values that arrive from another service (baggage) go through
:func:`clean_inbound` / :func:`accept_inbound`, which apply the same rules and
never raise: a bad name is dropped, an id is normalised exactly as a local
scope would normalise it (the receiving service must not split a run), and the
problem is logged (rate-limited) instead of warned, since the code at fault is
in the other service.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from .. import config
from .._log import logger, warn_rate_limited
from . import keys as attr
from .privacy import user_id_from_baggage, user_id_hashing_enabled

__all__ = [
    "EXPERIENCE_ID_NAMESPACE",
    "ID_RULE",
    "MAX_ID_LENGTH",
    "NAME_RULE",
    "UseCaseWarning",
    "accept_inbound",
    "bounded_tags",
    "check_name",
    "clean_inbound",
    "experience_guid",
    "id_problem",
    "inbound_tags",
    "is_name",
    "new_guid",
    "normalised_id",
    "scope_id",
    "scope_tags",
]


class UseCaseWarning(UserWarning):
    """A value given to a scope was repaired instead of rejected (see ``OTEL_USECASE_STRICT``)."""


MAX_NAME_LENGTH: Final = 64
MAX_ID_LENGTH: Final = 256
ID_PREFIX_LENGTH: Final = 64
"""How much of an id that must be normalised stays readable in front of its hash."""
ID_HASH_MARK: Final = "~sha256:"
"""Separates the readable prefix of a normalised id from the hash of the original."""
ID_HASH_HEX: Final = 32
"""Hex digits of SHA-256 kept in a normalised id (128 bits: collisions are out of reach)."""

EXPERIENCE_ID_NAMESPACE: Final = uuid.UUID("5c0e8d6a-3e41-5b1f-9a7d-0e6f1c2b4a90")
"""The UUIDv5 namespace of derived experience ids. A fixed constant, never to change: changing it
would split every session recorded before. An experience id ``v`` that is not a GUID is stored as
``uuid.uuid5(EXPERIENCE_ID_NAMESPACE, v)`` (UTF-8 of ``v``), which any language can recompute."""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CANONICAL_GUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Characters no store, exporter or terminal handles safely: C0 and C1 controls (NUL included;
# PostgreSQL text cannot hold it), DEL, the Unicode line and paragraph separators (they break
# log lines and CSV rows like a newline), and lone surrogates (not encodable as UTF-8, so
# neither SQLite, PostgreSQL nor OTLP can carry them). Format characters (category Cf: bidi
# controls, zero-width joiners) are kept: they are storable, ZWJ/ZWNJ are part of ordinary
# text in several scripts and of emoji, and the report escapes them when it prints.
_UNSTORABLE_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

NAME_RULE: Final = (
    "only letters, digits, '.', '-' and '_', no spaces, 1 to 64 characters (snake_case recommended)"
)
ID_RULE: Final = (
    "a non-empty string of at most 256 characters without control characters (C0, C1, U+2028, U+2029) "
    "or lone surrogates"
)

NAME_KEYS: Final = frozenset({attr.USE_CASE_NAME, attr.EXPERIENCE_NAME, attr.USE_CASE_STEP})
"""Keys whose values follow the name rule; every other key of ours holds an id."""


# --- names ---------------------------------------------------------------------------------


def is_name(value: str) -> bool:
    """True when ``value`` follows the name rule."""
    return _NAME_RE.fullmatch(value) is not None


def check_name(field: str, value: object) -> str:
    """Return ``value`` if it is a valid name, else raise ``ValueError`` naming it (names are code)."""
    if not isinstance(value, str) or not is_name(value):
        raise ValueError(f"{field}={value!r} is not a valid name: use {NAME_RULE}")
    return value


# --- ids -----------------------------------------------------------------------------------


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as an id as it is, or ``None`` when it can (the id rule)."""
    if not value:
        return "it is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"it is {len(value)} characters long, more than {MAX_ID_LENGTH}"
    found = _UNSTORABLE_RE.search(value)
    if found is not None:
        return f"it contains {found.group()!r} at position {found.start()}"
    return None


def normalised_id(value: str) -> str:
    """The storable form of id ``value``: ``value`` itself when it follows the id rule.

    Otherwise a readable prefix (its first 64 characters, each unstorable one
    replaced by U+FFFD) followed by ``~sha256:`` and 32 hex digits of the
    SHA-256 of the whole original (UTF-8, lone surrogates encoded as such).
    Deterministic, so the same input always gives the same id and distinct
    inputs distinct ids; idempotent, because the result follows the rule. Empty
    values have no storable form and are handled by the callers (no id).
    """
    if id_problem(value) is None:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:ID_HASH_HEX]
    prefix = _UNSTORABLE_RE.sub("\ufffd", value[:ID_PREFIX_LENGTH])
    return f"{prefix}{ID_HASH_MARK}{digest}"


def new_guid() -> str:
    """A fresh random GUID (UUID4) string: the id of a new instance."""
    return str(uuid.uuid4())


def experience_guid(value: str) -> str:
    """The GUID an experience id is stored as: a GUID in canonical form, else UUIDv5 of ``value``.

    ``value`` must follow the id rule (pass it through :func:`normalised_id`
    first). A GUID keeps its identity and only loses braces and upper case;
    anything else is mapped through :data:`EXPERIENCE_ID_NAMESPACE`.
    """
    if _CANONICAL_GUID_RE.fullmatch(value) is not None:
        return value
    inner = value[1:-1] if value[:1] == "{" and value[-1:] == "}" else value  # registry format
    if _GUID_RE.fullmatch(inner) is not None:
        return inner.lower()
    return str(uuid.uuid5(EXPERIENCE_ID_NAMESPACE, value))


_derivation_logged = False


def log_experience_derivation(given: str, stored: str) -> None:
    """Say once per process, at INFO, that experience ids are being derived (normal data, no warning).

    Session ids that are not GUIDs are what most applications have; warning on
    each would only teach users to ignore warnings. The given value stays on the
    span as ``experience.id.original``.
    """
    global _derivation_logged
    if _derivation_logged:
        return
    _derivation_logged = True
    logger.info(
        "otel_usecase: experience_id=%r is not a GUID; stored as %r (UUIDv5 in namespace %s), "
        "the given value is kept as %s. Logged once per process.",
        _shown(given),
        stored,
        EXPERIENCE_ID_NAMESPACE,
        attr.EXPERIENCE_ID_ORIGINAL,
    )


def scope_id(field: str, value: object) -> str | None:
    """An id given to a scope in code, as it will be stored; ``None`` for an empty id (no id).

    Integers and ``uuid.UUID`` objects are accepted and turned into strings,
    because ticket numbers and UUIDs are what applications usually have at
    hand; other types are a bug in the code and raise ``TypeError``. A string
    that breaks the id rule is normalised (:func:`normalised_id`) with a
    :class:`UseCaseWarning` once per distinct value, or raises with
    ``OTEL_USECASE_STRICT=true``. When user id hashing is on a user id is
    returned as given: the scope stores its hash, which is always storable, and
    the raw value never appears in a warning.
    """
    if isinstance(value, uuid.UUID) or (isinstance(value, int) and not isinstance(value, bool)):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(
            f"{field}={value!r} is not a valid id: ids are strings (int and uuid.UUID are converted); "
            f"use {ID_RULE}"
        )
    if field == "user_id" and user_id_hashing_enabled():
        return value or None  # the scope stores its hash, which is always storable
    problem = id_problem(value)
    if problem is None:
        return value
    if config.strict():
        raise ValueError(f"{field}={_shown(value)!r} is not a valid id ({problem}): use {ID_RULE}")
    stored = normalised_id(value) if value else None
    if _first_warning(hash((field, value))):
        outcome = "treated as no id" if stored is None else f"stored as {stored!r}"
        warnings.warn(
            f"{field}={_shown(value)!r} breaks the id rule ({problem}; use {ID_RULE}): {outcome} "
            f"(set {config.ENV_STRICT}=true to make this an error)",
            UseCaseWarning,
            stacklevel=_caller_stacklevel(),
        )
    return stored


def _shown(value: str) -> str:
    """``value`` cut for a message: a 1 MB id must not become a 1 MB log line."""
    if len(value) <= 80:
        return value
    return f"{value[:80]}... ({len(value)} characters)"


# Once per distinct value, and at most _WARNINGS_PER_MINUTE a minute in all: a stream of
# distinct bad ids (one per request) must not flood the application's logs.
_WARNINGS_PER_MINUTE: Final = 10
_MAX_REMEMBERED: Final = 4096
_warn_lock = threading.Lock()
_warned: set[int] = set()  # hashes of (field, value): a 1 MB id is not kept in memory
_window: list[float] = [-math.inf, 0.0]  # [start of the current minute, warnings issued in it]


def _first_warning(key: int) -> bool:
    """Whether to warn about ``key`` now: never warned about before, and within the rate limit."""
    now = time.monotonic()
    with _warn_lock:
        if key in _warned:
            return False
        if now - _window[0] >= 60.0:
            _window[0], _window[1] = now, 0.0
        if _window[1] >= _WARNINGS_PER_MINUTE:
            return False
        _window[1] += 1
        if len(_warned) >= _MAX_REMEMBERED:
            _warned.clear()
        _warned.add(key)
        return True


def reset_warnings() -> None:
    """Forget which values were warned about (tests use it to see each warning again)."""
    global _derivation_logged
    with _warn_lock:
        _warned.clear()
        _window[0], _window[1] = -math.inf, 0.0
    _derivation_logged = False


_PACKAGE_DIR: Final = str(Path(__file__).resolve().parent)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve().parent) == _PACKAGE_DIR:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


# --- tags ----------------------------------------------------------------------------------


def scope_tags(tags: object) -> dict[str, str]:
    """The tags given to a scope in code, as they will be stored (at most :data:`~.keys.MAX_TAGS` of them
    are kept once merged with the enclosing scope's, see :func:`bounded_tags`).

    ``tags`` is a mapping (anything else is a bug in the code: ``TypeError``).
    Keys are names (a bad key raises ``ValueError`` naming it and the rule, like
    any name); values are ids (:func:`scope_id`: int and ``uuid.UUID`` converted,
    a value that breaks the id rule normalised with a :class:`UseCaseWarning`, an
    empty value dropped).
    """
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags={tags!r} is not a mapping: use tags={{'tenant': 'acme'}}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        name = check_name("tag key", key)
        stored = scope_id(f"tags[{name!r}]", value)
        if stored is not None:
            checked[name] = stored
    return checked


def bounded_tags(outer: Mapping[str, str], inner: Mapping[str, str]) -> Mapping[str, str]:
    """The tags of a scope: the enclosing scope's, with ``inner``'s added or overriding, at most
    :data:`~.keys.MAX_TAGS` keys.

    A key of ``inner`` that would be one too many is dropped with a
    :class:`UseCaseWarning` naming it (once per distinct set of dropped keys,
    rate-limited): tags are stored, sent as baggage and stamped on every LLM span
    of the scope, so their number stays small whatever the code does.
    """
    if not inner:
        return outer
    merged = dict(outer)
    dropped: list[str] = []
    for key, value in inner.items():
        if key in merged or len(merged) < attr.MAX_TAGS:
            merged[key] = value
        else:
            dropped.append(key)
    if dropped and _first_warning(hash(("tags", tuple(dropped)))):
        warnings.warn(
            f"tags {', '.join(map(repr, dropped))} dropped: a scope holds at most {attr.MAX_TAGS} tags "
            f"(with those of its enclosing scopes: {', '.join(map(repr, merged))})",
            UseCaseWarning,
            stacklevel=_caller_stacklevel(),
        )
    return MappingProxyType(merged)  # a scope is frozen: so are its tags


def inbound_tags(bag: Mapping[str, object]) -> dict[str, str]:
    """The tags of a baggage mapping from another service, by the rules a local scope follows.

    Never raises: an entry whose key is not a name is dropped, a value is
    normalised as an id (:func:`accept_inbound`), and past :data:`~.keys.MAX_TAGS`
    the rest are dropped; each problem is logged, rate-limited.
    """
    tags: dict[str, str] = {}
    extra: list[str] = []
    for full_key, raw in bag.items():
        if not full_key.startswith(attr.TAG_PREFIX):
            continue
        key = full_key[len(attr.TAG_PREFIX) :]
        if not is_name(key):
            warn_rate_limited(
                "baggage:tag-key",
                "otel_usecase dropped baggage entry %r: a tag key must follow the name rule (%s)",
                _shown(full_key),
                NAME_RULE,
            )
            continue
        value = accept_inbound(full_key, raw)
        if value is None:
            continue
        if len(tags) < attr.MAX_TAGS:
            tags[key] = value
        else:
            extra.append(key)
    if extra:
        warn_rate_limited(
            "baggage:tags",
            "otel_usecase dropped baggage tags %s: at most %d tags are kept",
            ", ".join(extra),
            attr.MAX_TAGS,
        )
    return tags


# --- inbound values (baggage from another service) ----------------------------------------


def clean_inbound(key: str, value: object) -> tuple[str | None, str | None]:
    """Check a value that came from outside (baggage) against the rule for ``key``.

    Returns ``(value, None)`` when it is acceptable as it is, ``(repaired,
    reason)`` for an id that was normalised, and ``(None, reason)`` when it must
    be dropped (a bad name, an empty or non-string value). Never raises: bad
    data from another service must not break this one. Whatever it returns is
    itself acceptable (``clean_inbound(k, v)[0]`` gives ``(v, None)`` again).
    """
    if not isinstance(value, str) or not value:
        return None, f"{key} must be a non-empty string"
    if key in NAME_KEYS:
        if not is_name(value):
            return None, f"{key}={_shown(value)!r} breaks the name rule: {NAME_RULE}"
        return value, None
    problem = id_problem(value)
    if problem is None:
        return value, None
    stored = normalised_id(value)
    return stored, f"{key}={_shown(value)!r} breaks the id rule ({problem}): stored as {stored!r}"


def accept_inbound(key: str, value: object) -> str | None:
    """An inbound (baggage) value as it may be used here, or ``None`` when it is dropped.

    The one place where values from other services are admitted: checked with
    :func:`clean_inbound` (a repair or a drop is logged, rate-limited per key);
    a user id is hashed as given when user id hashing is on, as in a local scope.
    """
    if key == attr.USER_ID and isinstance(value, str) and value and user_id_hashing_enabled():
        # Hashed as given, like a local scope's (always storable); a value that is already
        # hashed came from this process or a caller the operator trusts: not hashed again.
        return user_id_from_baggage(value)
    cleaned, reason = clean_inbound(key, value)
    if reason is not None:
        warn_rate_limited(
            f"baggage:{key}",
            "otel_usecase %s baggage entry: %s",
            "dropped" if cleaned is None else "normalised",
            reason,
        )
    if cleaned is None:
        return None
    return user_id_from_baggage(cleaned) if key == attr.USER_ID else cleaned
