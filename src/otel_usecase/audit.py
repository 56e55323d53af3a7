"""Stand-in for part D's audit log (issue 16): the signature only; it records nothing.

Part A (access) calls :func:`record` for every token and membership change; the
coordinator replaces this file with part D's, which writes ``otel_usecase_audit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

__all__ = ["record"]


def record(
    store: Store, *, actor: str, action: str, use_case: str | None, target: str, detail: Mapping[str, object]
) -> None:
    """Record one administrative event (stand-in: does nothing until part D's audit lands)."""
