"""The Python API of use case and experience type definitions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["members_of"]


def members_of(store: Store, use_case: str) -> list[Any]:
    """The members of ``use_case`` (part A's ``members()``).

    UNTIL PART A (access) IS MERGED: no members (an empty list), so ``show`` lists none and no one is
    notified."""
    return []
