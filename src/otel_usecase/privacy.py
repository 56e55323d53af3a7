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
import os
import re
import threading
from typing import Final

from ._log import warn_rate_limited

__all__ = [
    "ENV_USER_ID_HMAC_KEY",
    "MIN_KEY_BYTES",
    "USER_ID_HASH_PREFIX",
    "hash_user_id",
    "is_hashed_user_id",
    "reset_user_id_hmac_key",
    "set_user_id_hmac_key",
    "user_id_for_telemetry",
    "user_id_hashing_enabled",
]

ENV_USER_ID_HMAC_KEY: Final = "OTEL_USECASE_USER_ID_HMAC_KEY"
"""Secret key (its UTF-8 bytes, surrounding whitespace ignored) that turns on user id hashing."""

USER_ID_HASH_PREFIX: Final = "hmac-sha256:"
"""Prefix of a hashed user id; says what the value is, so nobody mistakes it for a raw id."""

MIN_KEY_BYTES: Final = 16
"""Shorter keys are still used (hashing is never silently turned off) but warned about."""

_HASHED_RE: Final = re.compile(re.escape(USER_ID_HASH_PREFIX) + r"[0-9a-f]{64}")
_CACHE_SIZE: Final = 4096

_lock = threading.Lock()
_loaded = False
_key: bytes | None = None


def hash_user_id(raw: str, key: str | bytes) -> str:
    """``hmac-sha256:<hex>`` of ``raw`` under ``key``: the value telemetry carries for a user.

    Pure and independent of the process setting, so that operators and tests can
    compute the value of a known user (to query the cost report, for example).
    Lone surrogates in ``raw`` are encoded rather than rejected: any ``str`` the
    application passes as a user id must hash, never raise.
    """
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    digest = hmac.new(key_bytes, raw.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return USER_ID_HASH_PREFIX + digest


def is_hashed_user_id(value: str) -> bool:
    """True when ``value`` already has the exact shape of a hashed user id.

    Used to make hashing idempotent: a hashed id read back from
    :func:`otel_usecase.current_scope` or received from an upstream service that
    uses the same key must not be hashed a second time.
    """
    return _HASHED_RE.fullmatch(value) is not None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_hash(key: bytes, raw: str) -> str:
    # The key is part of the cache key, so changing or resetting it never serves a stale hash.
    return hash_user_id(raw, key)


def _checked_key(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        warn_rate_limited(
            "privacy:short_key",
            "otel_usecase: the user id HMAC key from %s is %d bytes long; use at least %d random bytes "
            "(a short key lets anyone who guesses it recompute user ids). Hashing with it anyway.",
            source,
            len(key),
            MIN_KEY_BYTES,
        )
    return key


def _load() -> bytes | None:
    global _loaded, _key
    with _lock:
        if not _loaded:
            raw = os.environ.get(ENV_USER_ID_HMAC_KEY, "").strip()
            # No "bad value" fallback on purpose: falling back to the default (no hashing) would
            # send raw ids exactly when the operator asked for them not to be sent.
            _key = _checked_key(raw.encode("utf-8"), ENV_USER_ID_HMAC_KEY) if raw else None
            _loaded = True
        return _key


def user_id_hashing_enabled() -> bool:
    """Whether user ids are hashed in this process (a key is set in code or in the environment)."""
    return (_key if _loaded else _load()) is not None


def user_id_for_telemetry(raw: str) -> str:
    """The form of user id ``raw`` that may go into baggage, onto spans and into outbound headers.

    ``raw`` itself when no key is configured; otherwise ``hmac-sha256:<hex>``.
    Already-hashed values are returned unchanged (idempotent). Cached, so the
    cost on the hot path is one dict lookup per scope entry.
    """
    key = _key if _loaded else _load()
    if key is None or is_hashed_user_id(raw):
        return raw
    return _cached_hash(key, raw)


def set_user_id_hmac_key(key: str | bytes | None) -> None:
    """Set the HMAC key in code, overriding ``OTEL_USECASE_USER_ID_HMAC_KEY``; ``None`` turns hashing off.

    For applications that fetch the key from a secret store rather than the
    environment. An empty key is a programming error and raises ``ValueError``.
    Scopes entered before the change keep the value they were given.
    """
    global _loaded, _key
    if key is not None:
        key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if not key:
            raise ValueError("the user id HMAC key must not be empty (pass None to turn hashing off)")
        key = _checked_key(key, "set_user_id_hmac_key()")
    with _lock:
        _key = key
        _loaded = True


def reset_user_id_hmac_key() -> None:
    """Forget the key (set in code or read from the environment); the next use re-reads the environment."""
    global _loaded, _key
    with _lock:
        _key = None
        _loaded = False
    _cached_hash.cache_clear()
