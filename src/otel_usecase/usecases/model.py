"""The records of use case and experience type definitions, and the rule for a description.

Names follow the name rule (:func:`otel_usecase.scope.validation.check_name`):
a bad one is code and raises. A description is free text an administrator
writes: bounded and free of control characters other than newlines and tabs,
so that every table and terminal shows it as written (a bad one raises
``ValueError`` naming the rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from ..budgets.model import Budget

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "ExperienceTypeDetail",
    "ExperienceTypeInfo",
    "Facet",
    "Facets",
    "UseCaseDetail",
    "UseCaseInfo",
    "check_description",
]

MAX_DESCRIPTION_LENGTH: Final = 2000
_ALLOWED_CONTROLS: Final = frozenset("\n\t")


def check_description(value: object) -> str | None:
    """``value`` as stored: None or ``""`` -> None (no description), else the text; ``ValueError`` naming
    the rule when it is not text of at most :data:`MAX_DESCRIPTION_LENGTH` characters without control
    characters (newlines and tabs allowed) or lone surrogates."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"description must be text, got {type(value).__name__}")
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise ValueError(
            f"description is {len(value)} characters long: at most {MAX_DESCRIPTION_LENGTH} allowed"
        )
    for at, char in enumerate(value):
        if (ord(char) < 32 or ord(char) == 127) and char not in _ALLOWED_CONTROLS:
            raise ValueError(
                f"description contains the control character {char!r} at position {at}: "
                "only text, newlines and tabs are allowed"
            )
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise ValueError(
                f"description contains a lone surrogate {char!r} at position {at}: not valid text"
            )
    return value or None


class UseCaseInfo(NamedTuple):
    """A use case: its definition, or only its name when it was seen in calls but never defined."""

    name: str
    description: str | None = None
    owner: str | None = None
    """A principal name (part A's principals), or None."""
    created_ns: int | None = None
    """When it was defined (None: never defined)."""
    updated_ns: int | None = None
    defined: bool = False
    """False for a use case only seen in calls (created implicitly: no description, no owner)."""


class ExperienceTypeInfo(NamedTuple):
    """An experience type (the ``experience_name`` of calls): its definition, or only its name when seen."""

    name: str
    description: str | None = None
    created_ns: int | None = None
    updated_ns: int | None = None
    defined: bool = False


class Facet(NamedTuple):
    """One value of a column among a use case's calls (a user, a model ...) and what its calls cost."""

    key: dict[str, Any]
    """The column(s) and value(s): ``{"user_id": "u-1"}``, ``{"provider": "openai", "model": "gpt-4o"}``."""
    runs: int
    calls: int
    cost_usd: float | None
    """None when no call has a cost; a lower bound unless ``cost_complete``."""
    cost_complete: bool


class Facets(NamedTuple):
    """The most expensive values of one column (unpriced last), at most the limit asked for."""

    rows: tuple[Facet, ...]
    more: bool
    """More values exist than ``rows`` shows."""


class UseCaseDetail(NamedTuple):
    """What the store knows of one use case (``usecases show``)."""

    info: UseCaseInfo
    runs: int
    calls: int
    cost_usd: float | None
    cost_complete: bool
    experiences: Facets
    users: Facets
    """Stored user ids (hashed when hashing is on)."""
    models: Facets
    versions: Facets
    budgets: tuple[Budget, ...]
    """The budgets limiting this use case."""
    members: tuple[Any, ...]
    """Part A's ``Member`` records (principal, role, can_share, notify)."""


class ExperienceTypeDetail(NamedTuple):
    """What the store knows of one experience type (``experience-types show``)."""

    info: ExperienceTypeInfo
    runs: int
    calls: int
    cost_usd: float | None
    cost_complete: bool
    use_cases: Facets
    models: Facets
