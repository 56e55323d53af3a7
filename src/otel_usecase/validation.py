"""The rules for names and ids, in one place.

Application code that passes a bad value gets a ``ValueError`` that quotes the
value and the rule (:func:`check_name`, :func:`check_id`). Values that arrive
from outside the process (baggage) are untrusted and go through
:func:`clean_inbound`, which never raises: it returns ``None`` and says why.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from . import attributes as attr
from ._log import warn_rate_limited
from .privacy import user_id_from_baggage

MAX_NAME_LENGTH: Final = 64
MAX_ID_LENGTH: Final = 256

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

NAME_RULE: Final = (
    "only letters, digits, '.', '-' and '_', no spaces, 1 to 64 characters (snake_case recommended)"
)
ID_RULE: Final = "a non-empty string of at most 256 characters"
GUID_RULE: Final = "a GUID/UUID string such as 'c0ffee00-1234-4abc-8def-000000000001'"

NAME_KEYS: Final = frozenset({attr.USE_CASE_NAME, attr.EXPERIENCE_NAME, attr.USE_CASE_STEP})
"""Keys whose values follow the name rule."""


def is_name(value: str) -> bool:
    """True when ``value`` follows the name rule."""
    return _NAME_RE.fullmatch(value) is not None


def is_guid(value: str) -> bool:
    """True when ``value`` is a GUID in its usual 8-4-4-4-12 hex form."""
    return _GUID_RE.fullmatch(value) is not None


def new_guid() -> str:
    """A fresh random GUID (UUID4) string: the id of a new instance."""
    return str(uuid.uuid4())


def check_name(field: str, value: object) -> str:
    """Return ``value`` if it is a valid name, else raise ``ValueError`` naming it."""
    if not isinstance(value, str) or not is_name(value):
        raise ValueError(f"{field}={value!r} is not a valid name: use {NAME_RULE}")
    return value


def check_id(field: str, value: object) -> str:
    """Return ``value`` as an id string, else raise ``ValueError`` naming it.

    Integers and ``uuid.UUID`` objects are accepted and turned into strings,
    because ticket numbers and UUIDs are what applications usually have at hand.
    """
    if isinstance(value, uuid.UUID) or (isinstance(value, int) and not isinstance(value, bool)):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
        raise ValueError(f"{field}={shown!r} is not a valid id: use {ID_RULE}")
    return value


def clean_inbound(key: str, value: object) -> tuple[str | None, str | None]:
    """Check a value that came from outside (baggage) against the rule for ``key``.

    Returns ``(value, None)`` when it is acceptable and ``(None, reason)`` when it
    must be dropped. Never raises: bad data from another service must not break
    this one.
    """
    if not isinstance(value, str) or not value:
        return None, f"{key} must be a non-empty string"
    if len(value) > MAX_ID_LENGTH:
        return None, f"{key} is {len(value)} characters long, more than {MAX_ID_LENGTH}"
    if key in NAME_KEYS and not is_name(value):
        return None, f"{key}={value!r} breaks the name rule: {NAME_RULE}"
    if key == attr.EXPERIENCE_ID and not is_guid(value):
        return None, f"{key}={value!r} is not {GUID_RULE}"
    return value, None


def accept_inbound(key: str, value: object) -> str | None:
    """An inbound (baggage) value as it may be used here, or ``None`` after a rate-limited warning.

    The one place where values from other services are admitted: checked with
    :func:`clean_inbound`, and a user id hashed when user id hashing is on.
    """
    cleaned, reason = clean_inbound(key, value)
    if cleaned is None:
        warn_rate_limited(f"baggage:{key}", "otel_usecase dropped baggage entry: %s", reason)
        return None
    return user_id_from_baggage(cleaned) if key == attr.USER_ID else cleaned
