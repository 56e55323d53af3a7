"""Keyed hashing of user ids, so that raw user ids never leave the process.

A user id is personal data. Once it is in W3C baggage it is copied onto spans
(and from there into every tracing backend and the cost store) and, through the
``baggage`` propagator, into the headers of outbound requests. When the
operator sets ``OTEL_USECASE_USER_ID_HMAC_KEY``, the scope writes
``hmac-sha256:<64 lowercase hex digits>`` (HMAC-SHA256 of the UTF-8 user id
under that key) instead of the raw id. The value is stable for a given key, so
per-user costs still add up, and services that share the key produce the same
value for the same user; without the key nobody can recompute it, unlike a
plain hash of a guessable id (an email address, a ticket number).

Which values skip hashing (the trust rule)
------------------------------------------
A user id the *application passes in* (``track_context(user_id=...)``) is
always hashed, even when it already looks like ``hmac-sha256:<hex>``: it
usually comes from a request, and a caller who sends another user's hash as
its own id must not be billed as that user. The only values passed in that are
not hashed again are :class:`HashedUserId` objects, which only this module
makes: the values it hashed (what ``current_scope().user_id`` returns, so that
re-entering a scope with it keeps the same user) and those
:func:`trust_hashed_user_id` vouches for. Hashed-ness is a property of the
object, not of how the string looks; any string operation (``strip``,
``json`` round trip, another process) gives a plain ``str`` again, which is
hashed again: safe (a different id), never forged.

A user id that arrives in *baggage* (:func:`user_id_from_baggage`) is kept when
it looks hashed: it came from a service the operator chose to trust (the
``usecase_baggage`` propagator refuses ``user.id`` from callers unless
``OTEL_USECASE_INBOUND_KEYS`` allows it, and a trusted caller could equally send
the raw id), and services sharing the key must agree on the value.

A key shorter than :data:`MIN_KEY_BYTES`
----------------------------------------
In the environment it is a bad setting, but neither fallback that other
settings use is safe: no hashing would send raw ids exactly when the operator
asked for them not to be sent, and hashing with a guessable key protects
nothing. So user ids are *dropped* (scopes carry no user, spans and outbound
headers no ``user.id``) and an error is logged naming the variable; the rest of
the telemetry keeps working. In code, :func:`set_user_id_hmac_key` raises.

To find a user's rows in a report, compute the value with :func:`hash_user_id`
(or ``python -c 'import hmac, hashlib; ...'`` with the same key).

The key is read from the environment once per process, on first use, because
the hash is on the path of every scope entry; :func:`set_user_id_hmac_key`
overrides it in code (a key fetched from a secret store) and
:func:`reset_user_id_hmac_key` forgets both so the next use re-reads the
environment (tests).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import threading
from typing import Final

from .. import config
from .._log import logger

__all__ = [
    "ENV_USER_ID_HMAC_KEY",
    "MIN_KEY_BYTES",
    "USER_ID_HASH_PREFIX",
    "HashedUserId",
    "hash_user_id",
    "is_hashed_user_id",
    "reset_user_id_hmac_key",
    "set_user_id_hmac_key",
    "trust_hashed_user_id",
    "user_id_for_telemetry",
    "user_id_from_baggage",
    "user_id_hashing_enabled",
]

ENV_USER_ID_HMAC_KEY: Final = config.USER_ID_HMAC_KEY.env
"""Secret key (its UTF-8 bytes, surrounding whitespace ignored) that turns on user id hashing."""

USER_ID_HASH_PREFIX: Final = "hmac-sha256:"
"""Prefix of a hashed user id; says what the value is, so nobody mistakes it for a raw id."""

MIN_KEY_BYTES: Final = 16
"""Shorter keys are refused: from the environment user ids are then dropped, in code it raises."""

_HASHED_RE: Final = re.compile(re.escape(USER_ID_HASH_PREFIX) + r"[0-9a-f]{64}")
_CACHE_SIZE: Final = 4096


class HashedUserId(str):
    """A user id this library hashed (or was told to trust as hashed): never hashed again.

    A ``str`` everywhere (spans, baggage, the store, ``==``); only its type says
    it needs no hashing, so a plain string of the same look, from a request,
    is hashed like any other id.
    """

    __slots__ = ()


class _State:
    """What the process does with user ids: keep them (no key), hash them (key) or drop them."""

    __slots__ = ("drop", "key", "loaded")

    def __init__(self) -> None:
        self.loaded = False
        self.key: bytes | None = None
        self.drop = False


_lock = threading.Lock()
_state = _State()


def hash_user_id(raw: str, key: str | bytes) -> HashedUserId:
    """``hmac-sha256:<hex>`` of ``raw`` under ``key``: the value telemetry carries for a user.

    Pure and independent of the process setting, so that operators and tests can
    compute the value of a known user (to query the cost report, for example).
    Lone surrogates in ``raw`` are encoded rather than rejected: any ``str`` the
    application passes as a user id must hash, never raise.
    """
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    digest = hmac.new(key_bytes, raw.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return HashedUserId(USER_ID_HASH_PREFIX + digest)


def is_hashed_user_id(value: str) -> bool:
    """True when ``value`` has the exact shape of a hashed user id (it says nothing about who made it)."""
    return _HASHED_RE.fullmatch(value) is not None


def trust_hashed_user_id(value: str) -> HashedUserId:
    """Vouch that ``value`` is a hashed user id made with this process's key, so it is not hashed again.

    For a hashed id the application got from a trusted source other than baggage
    (its own job queue, its own database). Never call it on request data: that is
    exactly the forgery this module prevents. Raises ``ValueError`` if ``value``
    does not have the shape of a hashed id.
    """
    if not isinstance(value, str) or not is_hashed_user_id(value):
        raise ValueError(
            f"{value!r} is not a hashed user id ({USER_ID_HASH_PREFIX}<64 lowercase hex digits>)"
        )
    return value if type(value) is HashedUserId else HashedUserId(value)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_hash(key: bytes, raw: str) -> HashedUserId:
    # The key is part of the cache key, so changing or resetting it never serves a stale hash.
    # Only plain strings come here (HashedUserId values return early), so an entry made for a
    # raw id can never be served for an equal-looking HashedUserId or the other way round.
    return hash_user_id(raw, key)


def _load() -> _State:
    with _lock:
        if not _state.loaded:
            raw = config.USER_ID_HMAC_KEY.read()
            key = raw.encode("utf-8", "surrogatepass") if raw is not None else None
            if key is not None and len(key) < MIN_KEY_BYTES:
                logger.error(
                    "otel_usecase: %s is %d bytes long; at least %d random bytes are accepted. "
                    "User ids are DROPPED from all telemetry until it is fixed: hashing with a "
                    "guessable key would not protect them and sending them raw would ignore the "
                    "setting. Everything else is recorded as usual.",
                    ENV_USER_ID_HMAC_KEY,
                    len(key),
                    MIN_KEY_BYTES,
                )
                _state.key, _state.drop = None, True
            else:
                _state.key, _state.drop = key, False
            _state.loaded = True
        return _state


def user_id_hashing_enabled() -> bool:
    """Whether user ids are hashed in this process (a usable key is set in code or in the environment)."""
    state = _state if _state.loaded else _load()
    return state.key is not None


def user_id_for_telemetry(raw: str) -> str | None:
    """The form of a user id *the application passed in* that may go into baggage, onto spans, out.

    ``raw`` itself when no key is configured; otherwise ``hmac-sha256:<hex>`` (a
    :class:`HashedUserId`), also when ``raw`` merely looks hashed (see the module
    docstring); ``None`` (drop it) when the key in the environment is too short.
    Cached, so the cost on the hot path is one dict lookup per scope entry.
    """
    state = _state if _state.loaded else _load()
    key = state.key
    if key is None:
        return None if state.drop else raw
    if type(raw) is HashedUserId:
        return raw
    return _cached_hash(key, raw)


def user_id_from_baggage(value: str) -> str | None:
    """The form of a user id *read from baggage* (another service, or this one) to use here.

    Like :func:`user_id_for_telemetry`, except that a value that looks hashed is
    kept (as a :class:`HashedUserId`): baggage holds what this process wrote or
    what a caller the operator trusts sent (see the module docstring).
    """
    state = _state if _state.loaded else _load()
    if (state.key is None and not state.drop) or type(value) is HashedUserId:
        return value
    if is_hashed_user_id(value):
        return value if type(value) is HashedUserId else HashedUserId(value)
    if state.key is None:
        return None
    return _cached_hash(state.key, value)


def set_user_id_hmac_key(key: str | bytes | None) -> None:
    """Set the HMAC key in code, overriding ``OTEL_USECASE_USER_ID_HMAC_KEY``; ``None`` turns hashing off.

    For applications that fetch the key from a secret store rather than the
    environment. A key shorter than :data:`MIN_KEY_BYTES` (or empty) is a
    programming error and raises ``ValueError``. Scopes entered before the
    change keep the value they were given.
    """
    if key is not None:
        key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"the user id HMAC key is {len(key)} bytes long; use at least {MIN_KEY_BYTES} random bytes "
                "(pass None to turn hashing off)"
            )
    with _lock:
        _state.key, _state.drop, _state.loaded = key, False, True


def reset_user_id_hmac_key() -> None:
    """Forget the key (set in code or read from the environment); the next use re-reads the environment."""
    with _lock:
        _state.key, _state.drop, _state.loaded = None, False, False
    _cached_hash.cache_clear()
